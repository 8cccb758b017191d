"""Labels from QuPath GeoJSON: regions parsed, filtered, repaired and indexed, and the edge rule.

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
points to), so annotations and a raster that draws them on its pixel grid give the same labels.
The regions are indexed with shapely's STRtree.

This module imports shapely (a fifth of a second): :mod:`~patchpack.dataset.labels.files` imports it
only when it opens an annotation file.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import shape as to_geometry

from patchpack.dataset.labels.rule import COVERAGE_SIDE, majority
from patchpack.dataset.tissue import RoiMask
from patchpack.errors import SourceError
from patchpack.params import LabelParams

logger = logging.getLogger(__name__)

MAX_ANNOTATION_BYTES = 1 << 30
# Points are moved this far right and down (pixels) before a containment test: far below a pixel,
# far above float64 rounding at gigapixel coordinates. The two differ by an irrational-looking
# ratio, so no edge between integer vertices runs along the nudge and keeps a point on itself.
EDGE_NUDGE = (1e-6, 1.618034e-6)  # (x, y)


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
        centres = np.arange(factor) + 0.5
        gy, gx = np.meshgrid(
            top + centres + EDGE_NUDGE[1], left + centres + EDGE_NUDGE[0], indexing="ij"
        )
        return bool(shapely.contains_xy(part, gx, gy).any())
