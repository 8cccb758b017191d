"""Each image's label file: found beside its image's relative path, hashed, checked, and opened.

:func:`attach_labels` finds and hashes every source's label file when the catalog is made (and parses
it, so a bad file fails before anything is written); :func:`open_labels` opens one as a
:class:`~patchpack.dataset.labels.rule.Labeller`, once per thread, after checking its bytes against
the hash the catalog recorded.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from patchpack.dataset.labels.raster import RasterLabels, _raster_downsample, read_raster
from patchpack.dataset.labels.rule import Labeller
from patchpack.dataset.sources import LabelFile, SourceImage, check_file, source_sha256
from patchpack.errors import ConfigError, SourceError
from patchpack.params import LabelParams

MASK_SUFFIXES = (".png", ".tif", ".tiff")
ANNOTATION_SUFFIXES = (".geojson", ".json")


def attach_labels(
    sources: Sequence[SourceImage],
    labels: LabelParams,
    *,
    roi: str,
    max_megapixels: float,
    source_dir: Path | None = None,
) -> list[SourceImage]:
    """Find, hash and check each source's label file when labels or the ROI come from them.

    Every file is parsed here, before anything is written, so a bad one fails the run early.

    Raises
    ------
    SourceError
        When an image has no label file (or two), or a label file is unreadable, of the wrong size,
        or names a class (or holds a value) outside ``labels.classes``.
    """
    if not (labels.per_patch or "mask" in roi.split("+")):
        return list(sources)
    if labels.dir is None:
        what = f"labels.from: {labels.origin}" if labels.per_patch else f"extract.roi: {roi}"
        raise ConfigError(
            f"this dataset's {what} reads label files, but no labels folder is given; set "
            f"labels.dir in the params file or pass --labels DIR"
        )
    root = Path(labels.dir)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise SourceError(
            f"{root}: labels folder {what}; set labels.dir in params.yaml or pass --labels DIR"
        )
    if source_dir is not None:
        images = source_dir.resolve()
        if root.resolve() == images or images in root.resolve().parents:
            raise SourceError(
                f"labels.dir {root} is inside source.dir {source_dir}, so its label files would be "
                f"read as images; keep the label files in a folder of their own"
            )
    kind = "annotations" if labels.origin == "annotations" else "mask"
    found = []
    for source in sources:
        path = _label_path(root, source, kind)
        relative = path.relative_to(root).as_posix()
        file = LabelFile(kind, path, relative, source_sha256(path))
        if kind == "mask":
            file = replace(file, downsample=_raster_downsample(file, source, max_megapixels))
        attached = replace(source, labels=file)
        open_labels(attached, labels, max_megapixels)  # parsed here, so a bad file fails early
        found.append(attached)
    return found


def _label_path(root: Path, source: SourceImage, kind: str) -> Path:
    """The one label file of ``source`` under ``root``; none, or two, is an error."""
    suffixes = ANNOTATION_SUFFIXES if kind == "annotations" else MASK_SUFFIXES
    # only the image's own suffix is replaced: case.01.svs -> case.01.geojson
    stem = source.id[: len(source.id) - len(Path(source.id).suffix)]
    candidates = [root / f"{stem}{suffix}" for suffix in suffixes]
    candidates += [root / f"{source.id}{suffix}" for suffix in suffixes]
    present = sorted({path for path in candidates if path.is_file()})
    what = "annotation file" if kind == "annotations" else "label raster"
    if not present:
        raise SourceError(
            f"{source.path}: no {what} for this image: expected {root / stem}"
            f"{suffixes[0]} (or {', '.join(suffixes[1:])}); add it or remove the image"
        )
    if len(present) > 1:
        raise SourceError(
            f"{present[0]} and {present[1]} are both {what}s of {source.id}; keep one of them"
        )
    return present[0]


_OPENED_MAX = 16  # labellers kept per thread


class _Opened(threading.local):
    """Per thread: shapely's prepared geometries build their indexes lazily, which is not
    thread-safe, and a Dask worker runs tasks in several threads."""

    def __init__(self) -> None:
        self.labellers: dict[tuple[Any, ...], Labeller] = {}


_OPENED = _Opened()


def open_labels(source: SourceImage, labels: LabelParams, max_megapixels: float) -> Labeller:
    """The labeller of ``source``'s label file, parsed once per thread.

    The file is checked against the sha256 the catalog recorded before it is parsed, so a stale copy
    on a cluster node fails loudly.
    """
    file = source.labels
    if file is None:
        raise ValueError(f"{source.id} has no label file")
    key = (file, labels.classes, labels.rule, labels.min_fraction, source.width, source.height)
    opened = _OPENED.labellers
    found = opened.get(key)
    if found is not None:
        return found
    check_file(file.path, file.sha256, "label file")
    classes = labels.classes if labels.per_patch else ()
    labeller: Labeller
    if file.kind == "annotations":
        from patchpack.dataset.labels.geojson import AnnotationLabels  # loads shapely

        labeller = AnnotationLabels.read(file.path, classes, labels, (source.height, source.width))
    else:
        values = read_raster(file.path, max_megapixels, binary=not classes)
        labeller = RasterLabels(file.path, values, file.downsample, classes, labels)
    if len(opened) >= _OPENED_MAX:
        opened.pop(next(iter(opened)))
    opened[key] = labeller
    return labeller
