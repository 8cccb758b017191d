"""Labels from label files: a raster per image (``labels.from: mask``) or a GeoJSON file per image
(``labels.from: annotations``, as QuPath exports them).

Label files sit in ``labels.dir`` at the relative path of their image, with the suffix replaced
(``slides/a.svs`` -> ``<labels.dir>/slides/a.png`` or ``.tif``, or ``a.geojson``). Each is hashed
and recorded in the manifest beside its image, so a partner can tell the labels changed.

Class numbers
-------------
``labels.classes`` names the classes in order: class number (raster value) ``i`` in 1..K is
``classes[i - 1]``, and 0 is unlabelled. A patch's stored label is ``i - 1``, its index in the
manifest's ``class_names``; a mask target stores the raw class numbers (0 = unlabelled).

Rasters
-------
A palette or single-channel integer PNG or TIFF whose size is that of its image at level 0, at any
of its pyramid levels, or an integer fraction of level 0 (the same on both sides): each raster pixel
then spans that many level-0 pixels. A patch pixel takes the value of the raster pixel under its
centre (nearest neighbour), which is how mask targets are cut.

Annotations
-----------
A GeoJSON FeatureCollection in level-0 pixel coordinates; each feature is a Polygon or MultiPolygon
whose class is ``properties.classification.name``. Only annotations are label regions: QuPath writes
``properties.objectType`` on every object, and its detections and cells (``"detection"``,
``"cell"``, any value other than ``"annotation"``) are skipped, with their number logged at INFO; a
feature without ``objectType`` (GeoJSON from another tool) is a region. Invalid geometry is
repaired with shapely's ``make_valid`` (and reported). Where regions of different classes overlap,
the class listed later in ``labels.classes`` wins, as when painting them in that order, so every
point has at most one class.
A point on a region's edge belongs to the region right of and below it, as a raster pixel does
(points are nudged by ``EDGE_NUDGE`` before the test; on a sloping edge, to the side the nudge
points to), so annotations and a raster that draws them on its pixel grid give the same labels. The regions are indexed with shapely's STRtree.

The label of a patch
--------------------
``centre``: the class under the patch's centre pixel (row and column ``patch_size // 2``), which is
the centre pixel of its mask target. ``majority``: the class covering the largest share of the
patch, accepted when that share is at least ``labels.min_fraction``; the share is of the patch's
pixels for a raster, and of its area for annotations. A candidate that is unlabelled, or whose two
largest shares are equal, has no label and is redrawn from the same seeded stream.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from patchpack.dataset.readers import Level
from patchpack.dataset.sources import LabelFile, SourceImage, check_file, source_sha256
from patchpack.dataset.tissue import RoiMask
from patchpack.errors import ConfigError, SourceError
from patchpack.params import LabelParams

logger = logging.getLogger(__name__)

MASK_SUFFIXES = (".png", ".tif", ".tiff")
ANNOTATION_SUFFIXES = (".geojson", ".json")
COVERAGE_SIDE = 1024  # longer side of the mask that ``extract.roi: mask`` samples in
MAX_ANNOTATION_BYTES = 1 << 30
# Points are moved this far right and down (pixels) before a containment test: far below a pixel,
# far above float64 rounding at gigapixel coordinates. The two differ by an irrational-looking
# ratio, so no edge between integer vertices runs along the nudge and keeps a point on itself.
EDGE_NUDGE = (1e-6, 1.618034e-6)  # (x, y)


class Labeller(Protocol):
    """What sampling needs of a source's labels; coordinates are corners at the sampled level."""

    def labels(self, ys: np.ndarray, xs: np.ndarray, size: int, downsample: float) -> np.ndarray:
        """The label (class index, or -1 for none) of each candidate patch; int32 of shape (n,)."""
        ...

    def target(self, y: int, x: int, size: int, downsample: float) -> np.ndarray:
        """The class numbers under each pixel of one patch (0: none); uint8 of shape (size, size)."""
        ...

    def coverage(self) -> RoiMask:
        """Where any class is set, as a mask of at most about ``COVERAGE_SIDE`` pixels a side."""
        ...


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
        labeller = AnnotationLabels.read(file.path, classes, labels, (source.height, source.width))
    else:
        values = read_raster(file.path, max_megapixels, binary=not classes)
        labeller = RasterLabels(file.path, values, file.downsample, classes, labels)
    if len(opened) >= _OPENED_MAX:
        opened.pop(next(iter(opened)))
    opened[key] = labeller
    return labeller


# ---------------------------------------------------------------------------------------------
# Rasters


def read_raster(path: Path, max_megapixels: float, *, binary: bool = False) -> np.ndarray:
    """A label raster's class numbers, uint8 of shape (height, width); with ``binary`` (an ROI
    mask), 1 wherever it is non-zero, whatever its bit depth.

    Raises
    ------
    SourceError
        When the file is not a readable lossless PNG or TIFF of one channel, is larger than
        ``max_megapixels``, or holds values above 255 (without ``binary``).
    """
    if path.suffix.lower() in (".tif", ".tiff"):
        values = _read_tiff_raster(path, max_megapixels)
    else:
        values = _read_png_raster(path, max_megapixels)
    if values.dtype.kind not in "uib":
        raise SourceError(
            f"{path}: label raster holds {values.dtype} values; save integer class numbers"
        )
    if binary:
        inside: np.ndarray = (values != 0).astype(np.uint8)
        return inside
    if values.size and (int(values.min()) < 0 or int(values.max()) > 255):
        raise SourceError(
            f"{path}: label raster holds values from {values.min()} to {values.max()}; class "
            f"numbers run from 0 (unlabelled) to at most 255"
        )
    return values.astype(np.uint8, copy=False)


_PILLOW_MODES = ("P", "L", "1", "I", "I;16", "I;16B", "I;16L")


def _too_large(path: Path, height: int, width: int, max_megapixels: float) -> SourceError | None:
    if height * width <= max_megapixels * 1e6:
        return None
    return SourceError(
        f"{path}: label raster is {width}x{height}, above source.max_megapixels="
        f"{max_megapixels:g}; save it at a pyramid level (1/16 of level 0 is typical) or raise "
        f"source.max_megapixels"
    )


def _read_png_raster(path: Path, max_megapixels: float) -> np.ndarray:
    from PIL import Image

    with _opened_png(path) as image:
        error = _too_large(path, image.height, image.width, max_megapixels)
        if error is not None:
            raise error
        if image.mode not in _PILLOW_MODES:
            raise SourceError(
                f"{path}: label raster is a {image.mode} image; save class numbers as a "
                f"palette or single-channel image (0 = unlabelled, 1..K = labels.classes)"
            )
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise SourceError(
                f"{path}: truncated or corrupt label raster ({exc}); re-export it"
            ) from exc
        values = np.asarray(image.convert("L") if image.mode == "1" else image)
        if isinstance(image, Image.Image) and values.ndim != 2:
            raise SourceError(f"{path}: label raster is not a single-channel image; re-export it")
        return values


@contextlib.contextmanager
def _opened_png(path: Path) -> Iterator[Any]:
    """A PNG label raster, opened lazily; its size is checked against ``source.max_megapixels``
    by the caller instead of Pillow's decompression-bomb limit."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise SourceError(
            f"{path}: label raster claims too many pixels for one decode ({exc}); save it at a "
            f"pyramid level (1/16 of level 0 is typical) or as a TIFF"
        ) from exc
    except UnidentifiedImageError:
        raise SourceError(
            f"{path}: not a readable label raster (PNG or TIFF); re-export it"
        ) from None
    except OSError as exc:
        raise SourceError(f"{path}: unreadable label raster ({exc}); re-export it") from exc
    with image:
        if image.format != "PNG":
            raise SourceError(
                f"{path}: label raster is {image.format}, not PNG; save class numbers losslessly "
                f"(PNG or TIFF), since lossy compression changes them"
            )
        yield image


def _tiff_page(tif: Any, path: Path) -> Any:
    page = tif.pages.first
    if int(page.samplesperpixel) != 1:
        raise SourceError(
            f"{path}: label raster has {page.samplesperpixel} samples per pixel; save one channel "
            f"of class numbers"
        )
    return page


def _read_tiff_raster(path: Path, max_megapixels: float) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = _tiff_page(tif, path)
            error = _too_large(path, int(page.imagelength), int(page.imagewidth), max_megapixels)
            if error is not None:
                raise error
            values: np.ndarray = page.asarray()
    except (OSError, ValueError, IndexError, KeyError, tifffile.TiffFileError) as exc:
        raise SourceError(f"{path}: not a readable label raster ({exc}); re-export it") from exc
    return values.reshape(values.shape[-2:]) if values.ndim > 2 else values


def _raster_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` of a label raster from its header."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                page = _tiff_page(tif, path)
                return int(page.imagelength), int(page.imagewidth)
        except (OSError, ValueError, IndexError, KeyError, tifffile.TiffFileError) as exc:
            raise SourceError(f"{path}: not a readable label raster ({exc}); re-export it") from exc
    with _opened_png(path) as image:
        return int(image.height), int(image.width)


def _raster_downsample(file: LabelFile, source: SourceImage, max_megapixels: float) -> float:
    """Level-0 pixels per raster pixel: a pyramid level's size, or an integer fraction of level 0."""
    height, width = _raster_size(file.path)
    levels = source.levels or (Level(source.height, source.width, 1.0),)
    for level in levels:
        if (level.height, level.width) == (height, width):
            return level.downsample
    if height and width and source.width % width == 0 and source.height % height == 0:
        ratio = source.width // width
        if source.height // height == ratio:
            return float(ratio)
    sizes = ", ".join(f"{level.width}x{level.height}" for level in levels)
    raise SourceError(
        f"{file.path}: label raster is {width}x{height}, but its image {source.id} is {sizes} "
        f"(by level), not an integer ratio of it; save the raster at the size of a level"
    )


class RasterLabels:
    """Labels read from a raster of class numbers (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        values: np.ndarray,
        downsample: float,
        classes: Sequence[str],
        labels: LabelParams,
    ) -> None:
        self.path = path
        self.values = values
        self.downsample = downsample
        self.rule = labels.rule
        self.min_fraction = labels.min_fraction
        self.classes = len(classes)
        if classes and values.size and int(values.max()) > len(classes):
            row, col = np.unravel_index(int(np.argmax(values > len(classes))), values.shape)
            raise SourceError(
                f"{path}: value {int(values[row, col])} at row {row}, column {col} is not a class: "
                f"labels.classes has {len(classes)} (values 1 to {len(classes)}, 0 = unlabelled); "
                f"add the class or fix the raster"
            )

    def _indices(self, start: np.ndarray, size: int, downsample: float, limit: int) -> np.ndarray:
        """Raster indices under pixel centres ``start + 0..size-1``; shape (n, size)."""
        centres = (start[:, None] + np.arange(size)[None, :] + 0.5) * downsample
        indices: np.ndarray = np.clip(np.floor(centres / self.downsample), 0, limit - 1)
        return indices.astype(np.int64)

    def target(self, y: int, x: int, size: int, downsample: float) -> np.ndarray:
        rows = self._indices(np.array([y]), size, downsample, self.values.shape[0])[0]
        cols = self._indices(np.array([x]), size, downsample, self.values.shape[1])[0]
        patch: np.ndarray = self.values[rows[:, None], cols[None, :]]
        return patch

    def labels(self, ys: np.ndarray, xs: np.ndarray, size: int, downsample: float) -> np.ndarray:
        ys, xs = np.asarray(ys, np.int64), np.asarray(xs, np.int64)
        if self.rule == "centre":
            rows = self._indices(ys + size // 2, 1, downsample, self.values.shape[0])[:, 0]
            cols = self._indices(xs + size // 2, 1, downsample, self.values.shape[1])[:, 0]
            result: np.ndarray = self.values[rows, cols].astype(np.int32) - 1
            return result
        shares = np.zeros((len(ys), self.classes + 1))
        for i, (y, x) in enumerate(zip(ys.tolist(), xs.tolist(), strict=True)):
            counts = np.bincount(self.target(y, x, size, downsample).ravel(), minlength=256)
            shares[i] = counts[: self.classes + 1] / (size * size)
        return majority(shares[:, 1:], self.min_fraction)

    def coverage(self) -> RoiMask:
        factor = max(1, math.ceil(max(self.values.shape) / COVERAGE_SIDE))
        height, width = (-(-side // factor) for side in self.values.shape)
        padded = np.zeros((height * factor, width * factor), bool)
        padded[: self.values.shape[0], : self.values.shape[1]] = self.values > 0
        mask = np.asarray(padded.reshape(height, factor, width, factor).any(axis=(1, 3)))
        return RoiMask(mask, self.downsample * factor)


def majority(shares: np.ndarray, min_fraction: float) -> np.ndarray:
    """Per row of ``shares`` (n, K), the class with the largest share, or -1 when it is below
    ``min_fraction`` or tied with another; int32 of shape (n,)."""
    if shares.shape[1] == 0:
        return np.full(len(shares), -1, np.int32)
    best = np.argmax(shares, axis=1)
    top = shares[np.arange(len(shares)), best]
    tied = (shares == top[:, None]).sum(axis=1) > 1
    # a share equal to the minimum passes, whatever rounding made of the division
    passed = top >= min_fraction - 1e-12
    return np.where(passed & ~tied, best, -1).astype(np.int32)


# ---------------------------------------------------------------------------------------------
# Annotations


@dataclass(frozen=True)
class Region:
    """One annotated feature: its position in the file, class number (1..K) and geometry."""

    feature: int
    number: int
    geometry: Any


def parse_geojson(
    data: bytes, path: Path, classes: Sequence[str], shape: tuple[int, int]
) -> list[Region]:
    """The labelled regions of a GeoJSON FeatureCollection, checked feature by feature.

    Features whose ``properties.objectType`` is other than ``"annotation"`` (QuPath's detections
    and cells) are skipped, and counted in an INFO message.

    Raises
    ------
    SourceError
        When the text is not a FeatureCollection, or a feature (named by its index) is not a
        Polygon or MultiPolygon, has no class, a class outside ``classes``, or coordinates outside
        the image of ``shape`` (height, width) in level-0 pixels.
    """
    try:
        document = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise SourceError(f"{path}: not UTF-8 text; save the GeoJSON file as UTF-8") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        where = f" (line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise SourceError(f"{path}: not valid JSON{where}; export the annotations again") from None
    kind = document.get("type") if isinstance(document, dict) else type(document).__name__
    if not isinstance(document, dict) or kind != "FeatureCollection":
        raise SourceError(
            f"{path}: not a GeoJSON FeatureCollection (found {kind!r}); export the annotations as "
            f"a FeatureCollection (QuPath: File > Export objects as GeoJSON, 'Export as "
            f"FeatureCollection')"
        )
    features = document.get("features")
    if not isinstance(features, list):
        raise SourceError(f"{path}: its 'features' is not a list; export the annotations again")
    numbers = {name: i + 1 for i, name in enumerate(classes)}
    regions = []
    repaired = []
    skipped: dict[str, int] = {}
    for index, feature in enumerate(features):
        kind = _object_type(feature)
        if kind not in (None, "annotation"):
            skipped[kind] = skipped.get(kind, 0) + 1
            continue
        region, fixed = _region(feature, index, path, numbers, shape)
        regions.append(region)
        if fixed:
            repaired.append(index)
    if skipped:
        logger.info(
            "%s: skipped %s: only annotations are label regions",
            path,
            ", ".join(
                f"{count} {kind} object{'s' * (count > 1)}"
                for kind, count in sorted(skipped.items())
            ),
        )
    if repaired:
        shown = ", ".join(map(str, repaired[:10])) + (" ..." if len(repaired) > 10 else "")
        logger.warning(
            "%s: repaired %d invalid geometries with shapely's make_valid (features %s)",
            path,
            len(repaired),
            shown,
        )
    return regions


def _region(
    feature: object, index: int, path: Path, numbers: dict[str, int], shape: tuple[int, int]
) -> tuple[Region, bool]:
    """One feature as a labelled region, and whether its geometry had to be repaired."""
    import shapely

    where = f"{path}: feature {index}"
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise SourceError(f"{where} is not a GeoJSON Feature; export the annotations again")
    number = _class_number(feature, where, numbers)
    shaped = _geometry(feature.get("geometry"), where)
    _check_inside(shaped, where, shape)
    fixed = not shaped.is_valid
    if fixed:
        # "structure" keeps the union of overlapping parts, as an annotator means them
        shaped = _polygonal(shapely.make_valid(shaped, method="structure", keep_collapsed=False))
    return Region(index, number, shaped), fixed


def _class_number(feature: dict[str, Any], where: str, numbers: dict[str, int]) -> int:
    name = _class_name(feature)
    if name is None:
        raise SourceError(
            f"{where} has no class (properties.classification.name); classify it in QuPath or "
            f"remove it"
        )
    if name not in numbers:
        raise SourceError(
            f"{where} has class {name!r}, which is not in labels.classes ({', '.join(numbers)}); "
            f"add it to labels.classes or reclassify the feature"
        )
    return numbers[name]


# what shapely's GeoJSON reader raises for malformed coordinates (a missing key, a mapping, a
# number too large for a float, a ring of two points ...)
_GEOMETRY_ERRORS = (ValueError, TypeError, AttributeError, IndexError, KeyError, OverflowError)


def _geometry(geometry: object, where: str) -> Any:
    """A Polygon or MultiPolygon with finite coordinates, or a one-line error."""
    import shapely
    from shapely.geometry import shape as to_geometry

    kind = geometry.get("type") if isinstance(geometry, dict) else None
    if kind not in ("Polygon", "MultiPolygon"):
        raise SourceError(
            f"{where} is a {kind or 'missing'} geometry; label regions must be Polygon or "
            f"MultiPolygon: remove it or export area annotations only"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # NaN coordinates: refused below
            shaped = to_geometry(geometry)
    except (*_GEOMETRY_ERRORS, shapely.errors.ShapelyError) as exc:
        raise SourceError(
            f"{where}: unreadable {kind} coordinates ({type(exc).__name__}: {exc}); fix or "
            f"remove it"
        ) from None
    if shaped.is_empty:
        raise SourceError(f"{where}: the {kind} is empty; remove the feature")
    if not np.isfinite(shapely.get_coordinates(shaped)).all():
        raise SourceError(
            f"{where}: the {kind} has coordinates that are not finite numbers (NaN or infinity); "
            f"fix or remove it"
        )
    return shaped


def _check_inside(shaped: Any, where: str, shape: tuple[int, int]) -> None:
    x0, y0, x1, y1 = shaped.bounds
    height, width = shape
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise SourceError(
            f"{where}: coordinates span x {x0:g} to {x1:g}, y {y0:g} to {y1:g}, outside the "
            f"{width}x{height} image; annotations must be in level-0 pixel coordinates of this "
            f"image"
        )


def _object_type(feature: object) -> str | None:
    """QuPath's ``properties.objectType`` ("annotation", "detection", "cell" ...), if any."""
    properties = feature.get("properties") if isinstance(feature, dict) else None
    kind = properties.get("objectType") if isinstance(properties, dict) else None
    return None if kind is None else str(kind)


def _class_name(feature: dict[str, Any]) -> str | None:
    properties = feature.get("properties")
    if not isinstance(properties, dict):
        return None
    classification = properties.get("classification")
    name = classification.get("name") if isinstance(classification, dict) else None
    return name if isinstance(name, str) and name else None


def _polygonal(geometry: Any) -> Any:
    """The polygons of a (repaired) geometry: lines and points a repair may leave are dropped."""
    import shapely

    parts = [
        part
        for part in shapely.get_parts(geometry)
        if part.geom_type in ("Polygon", "MultiPolygon")
    ]
    return shapely.union_all(parts) if parts else shapely.Polygon()


class AnnotationLabels:
    """Labels from annotated regions (see the module docstring), indexed with an STRtree."""

    def __init__(
        self,
        path: Path,
        regions: Sequence[Region],
        classes: int,
        labels: LabelParams,
        shape: tuple[int, int],
    ) -> None:
        import shapely

        self.path = path
        self.rule = labels.rule
        self.min_fraction = labels.min_fraction
        self.classes = classes
        self.shape = shape
        by_class = [
            shapely.union_all([r.geometry for r in regions if r.number == number])
            for number in range(1, classes + 1)
        ]
        parts, numbers = [], []
        later = shapely.Polygon()
        for number in range(classes, 0, -1):  # a later class paints over an earlier one
            own = shapely.difference(by_class[number - 1], later)
            later = shapely.union(later, by_class[number - 1])
            for part in shapely.get_parts(own):
                if part.geom_type == "Polygon" and not part.is_empty:
                    parts.append(part)
                    numbers.append(number)
        self.parts = np.array(parts, dtype=object)
        self.numbers = np.array(numbers, dtype=np.int64)
        shapely.prepare(self.parts)
        self.tree = shapely.STRtree(self.parts)

    @classmethod
    def read(
        cls, path: Path, classes: Sequence[str], labels: LabelParams, shape: tuple[int, int]
    ) -> AnnotationLabels:
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_ANNOTATION_BYTES + 1)
        except OSError as exc:
            raise SourceError(f"{path}: cannot read annotations ({exc.strerror})") from exc
        if len(data) > MAX_ANNOTATION_BYTES:
            raise SourceError(f"{path}: annotation file is larger than 1 GiB; split or simplify it")
        regions = parse_geojson(data, path, classes, shape)
        return cls(path, regions, len(classes), labels, shape)

    def _number_at(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """The class number (0: none) at level-0 points; regions are disjoint, so one at most."""
        import shapely

        result = np.zeros(len(ys), np.int64)
        if len(ys) and len(self.parts):
            points = shapely.points(xs + EDGE_NUDGE[0], ys + EDGE_NUDGE[1])
            inside, part = self.tree.query(points, predicate="within")
            result[inside] = self.numbers[part]
        return result

    def labels(self, ys: np.ndarray, xs: np.ndarray, size: int, downsample: float) -> np.ndarray:
        ys, xs = np.asarray(ys, np.float64), np.asarray(xs, np.float64)
        if self.rule == "centre":
            cy = (ys + size // 2 + 0.5) * downsample
            cx = (xs + size // 2 + 0.5) * downsample
            result: np.ndarray = (self._number_at(cy, cx) - 1).astype(np.int32)
            return result
        import shapely

        side = size * downsample
        boxes = shapely.box(
            xs * downsample, ys * downsample, xs * downsample + side, ys * downsample + side
        )
        shares = np.zeros((len(ys), self.classes + 1))
        if len(ys) and len(self.parts):
            box, part = self.tree.query(boxes, predicate="intersects")
            areas = shapely.area(shapely.intersection(boxes[box], self.parts[part]))
            np.add.at(shares, (box, self.numbers[part]), areas / (side * side))
        return majority(shares[:, 1:], self.min_fraction)

    def target(self, y: int, x: int, size: int, downsample: float) -> np.ndarray:
        import shapely

        out = np.zeros((size, size), np.uint8)
        y0, x0, side = y * downsample, x * downsample, size * downsample
        hits = self.tree.query(shapely.box(x0, y0, x0 + side, y0 + side), predicate="intersects")
        if len(hits):
            centres = (np.arange(size) + 0.5) * downsample
            gy, gx = np.meshgrid(
                y0 + centres + EDGE_NUDGE[1], x0 + centres + EDGE_NUDGE[0], indexing="ij"
            )
            for part in np.sort(hits):
                inside = shapely.contains_xy(self.parts[part], gx, gy)
                out[inside] = self.numbers[part]
        return out

    def coverage(self) -> RoiMask:
        """Mask pixels (square cells of ``factor`` level-0 pixels) that hold the centre of a
        labelled level-0 pixel: what a raster drawn from the regions at level 0 would mark."""
        import shapely

        height, width = self.shape
        factor = max(1, math.ceil(max(height, width) / COVERAGE_SIDE))
        rows, cols = -(-height // factor), -(-width // factor)
        mask = np.zeros((rows, cols), bool)
        for part in self.parts:
            x0, y0, x1, y1 = part.bounds
            r0, r1 = int(y0 // factor), min(rows - 1, int(y1 // factor))
            c0, c1 = int(x0 // factor), min(cols - 1, int(x1 // factor))
            ys, xs = np.mgrid[r0 : r1 + 1, c0 : c1 + 1] * factor
            cells = shapely.box(xs, ys, xs + factor, ys + factor)
            inside = shapely.contains(part, cells)
            edge = shapely.intersects(part, cells) & ~inside
            for row, col in zip(*np.nonzero(edge), strict=True):
                inside[row, col] = self._holds_centre(part, ys[row, col], xs[row, col], factor)
            mask[r0 : r1 + 1, c0 : c1 + 1] |= inside
        return RoiMask(mask, float(factor))

    @staticmethod
    def _holds_centre(part: Any, top: int, left: int, factor: int) -> bool:
        """Whether ``part`` holds the centre of a level-0 pixel of the cell at (top, left)."""
        import shapely

        centres = np.arange(factor) + 0.5
        gy, gx = np.meshgrid(
            top + centres + EDGE_NUDGE[1], left + centres + EDGE_NUDGE[0], indexing="ij"
        )
        return bool(shapely.contains_xy(part, gx, gy).any())
