"""What the catalog records of a source and its label file, and what the manifest keeps of it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchpack.dataset.readers import Level
from patchpack.schema import dump_fields, param

SHARD_PATH = re.compile(r"^(train|val|test)/shard-[0-9]{5,}\.h5$")
ROI_PATH = re.compile(r"^roi/[0-9a-f]{16}\.png$")
HEX64: dict[str, Any] = {"kind": "str", "pattern": re.compile(r"^[0-9a-f]{64}$")}
COUNT: dict[str, Any] = {
    "minimum": 0,
    "maximum": 2**31 - 1,
    "expected": "an integer from 0 to 2147483647",
}
_SCALE: dict[str, Any] = {
    "kind": "float",
    "positive": True,
    "maximum": 1e9,
    "expected": "a positive number",
}


@dataclass(frozen=True)
class SourceRecord:
    """What the manifest keeps of a source: its id, class, size and file hash (never a local path).

    ``labels`` and ``labels_sha256`` are written only for sources that have a label file, so
    manifests of folder-labelled datasets keep their bytes.
    """

    id: str = param(doc="relative POSIX path, NFC", kind="str")
    class_name: str = param(doc="its class folder", kind="str", empty=True, key="class")
    width: int = param(doc="level-0 width as displayed", **COUNT)
    height: int = param(doc="level-0 height as displayed", **COUNT)
    sha256: str = param(doc="sha256 of the file's bytes", **HEX64)
    backend: str = param("pillow", "the reader chosen for the file", kind="str")
    level: int = param(0, "the level patches are cut from", minimum=0, maximum=64,
                       expected="an integer from 0 to 64")  # fmt: skip
    downsample: float = param(1.0, "level-0 pixels per pixel of that level", **_SCALE)
    mpp: float | None = param(
        None, "microns per pixel at level 0, when the file says", null=True, **_SCALE
    )
    roi: str | None = param(
        None, "the ROI mask's path in the dataset", kind="str", null=True, pattern=ROI_PATH
    )
    roi_sha256: str | None = param(None, "sha256 of the ROI mask", null=True, **HEX64)
    roi_downsample: float | None = param(None, "level-0 pixels per mask pixel", null=True, **_SCALE)
    labels: str | None = param(
        None, "the label file's relative path", kind="str", omit_none=True, null=True
    )
    labels_sha256: str | None = param(
        None, "sha256 of the label file", omit_none=True, null=True, **HEX64
    )

    def to_dict(self) -> dict[str, object]:
        """The manifest's entry."""
        return dump_fields(self)


@dataclass(frozen=True)
class LabelFile:
    """A source's label file (see :mod:`patchpack.dataset.labels`), as the catalog found it.

    Attributes
    ----------
    kind : str, ``mask`` (a raster) or ``annotations`` (GeoJSON)
    path : Path, where the file is now (not recorded in the manifest)
    relative : str, its path relative to ``labels.dir``, POSIX form (recorded in the manifest)
    sha256 : str, of the file's bytes
    downsample : float, level-0 pixels per raster pixel (1.0 for annotations)
    """

    kind: str
    path: Path
    relative: str
    sha256: str
    downsample: float = 1.0


@dataclass(frozen=True)
class SourceImage:
    """One image of the catalog.

    Attributes
    ----------
    id : str, the path relative to the source folder, POSIX form, Unicode NFC
    label : int, index of ``class_name`` in the sorted class names
    class_name : str, the name of the subfolder, Unicode NFC
    path : Path, where the file is now, as spelled on disk (not recorded in the manifest)
    width, height : int, level-0 pixels as displayed (after the EXIF orientation)
    sha256 : str, of the file's bytes
    backend : str, the reader that decodes it (see :mod:`patchpack.dataset.readers`)
    levels : tuple of Level, the pyramid, level 0 first
    mpp : float or None, microns per pixel at level 0, when the file says
    level : int, the level patches are cut from (``source.level`` or the one closest to ``source.mpp``)
    labels : LabelFile or None, its label file, when labels or the ROI come from label files
    url : str or None, where it was fetched from when ``source.dir`` is a URL (see
        :mod:`patchpack.dataset.fetch`); ``path`` is then its cached copy
    """

    id: str
    label: int
    class_name: str
    path: Path
    width: int
    height: int
    sha256: str
    backend: str = "pillow"
    levels: tuple[Level, ...] = ()
    mpp: float | None = None
    level: int = 0
    labels: LabelFile | None = None
    url: str | None = None

    @property
    def size(self) -> Level:
        """The sampled level: patches are drawn on its pixel grid."""
        return self.levels[self.level] if self.levels else Level(self.height, self.width, 1.0)

    def record(self) -> SourceRecord:
        """What the manifest keeps of this source: everything but the local path."""
        return SourceRecord(
            self.id,
            self.class_name,
            self.width,
            self.height,
            self.sha256,
            backend=self.backend,
            level=self.level,
            downsample=self.size.downsample,
            mpp=self.mpp,
            labels=None if self.labels is None else self.labels.relative,
            labels_sha256=None if self.labels is None else self.labels.sha256,
        )
