"""Source images: discovery, labels, the built-in demo, decoding and the one mode-conversion rule.

:mod:`~patchpack.dataset.sources.catalog` discovers and checks the images of a source folder,
:mod:`~patchpack.dataset.sources.records` holds what it records of each,
:mod:`~patchpack.dataset.sources.decode` decodes them (the conversion rule is documented there),
:mod:`~patchpack.dataset.sources.hashing` hashes them once per process, and
:mod:`~patchpack.dataset.sources.demo` exports the built-in demo.
"""

from patchpack.dataset.sources.catalog import (
    IMAGE_SUFFIXES,
    MPP_TOLERANCE,
    catalog,
    choose_level,
)
from patchpack.dataset.sources.decode import (
    FORMATS,
    OpenMessages,
    load_pixels,
    open_guarded,
    reader_for,
)
from patchpack.dataset.sources.demo import (
    DEMO_CLASSES,
    DEMO_IMAGES,
    DEMO_SLIDE,
    check_demo_labels_folder,
    demo_folder,
    export_demo,
    export_demo_labels,
    export_demo_slide,
)
from patchpack.dataset.sources.hashing import check_file, remember_sha256, source_sha256
from patchpack.dataset.sources.records import (
    COUNT,
    HEX64,
    ROI_PATH,
    SHARD_PATH,
    LabelFile,
    SourceImage,
    SourceRecord,
)

__all__ = [
    "COUNT",
    "DEMO_CLASSES",
    "DEMO_IMAGES",
    "DEMO_SLIDE",
    "FORMATS",
    "HEX64",
    "IMAGE_SUFFIXES",
    "MPP_TOLERANCE",
    "ROI_PATH",
    "SHARD_PATH",
    "LabelFile",
    "OpenMessages",
    "SourceImage",
    "SourceRecord",
    "catalog",
    "check_demo_labels_folder",
    "check_file",
    "choose_level",
    "demo_folder",
    "export_demo",
    "export_demo_labels",
    "export_demo_slide",
    "load_pixels",
    "open_guarded",
    "reader_for",
    "remember_sha256",
    "source_sha256",
]
