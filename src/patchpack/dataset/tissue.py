"""Tissue detection: which parts of a slide hold something worth a patch (``extract.roi: tissue``).

The mask is a pure function of pixels, computed from one low-resolution view of the source:

1. the view: the smallest pyramid level whose longer side is at least ``MASK_SIDE`` pixels (or the
   whole image, averaged over square blocks of ``factor`` pixels, for single-level images);
2. a score per pixel: the larger of its saturation (``(max - min) / max`` of RGB, in 0..255) and its
   darkness (``255 - max``): glass and paper are bright and unsaturated, stained tissue is
   saturated, and unstained or grayscale tissue is darker than the background;
3. Otsu's threshold on that score (scikit-image), then a small clean-up (SciPy): a binary opening
   with a disk of radius 1 and the removal of connected pieces smaller than ``MIN_PIECE`` pixels.

A candidate patch is accepted when at least ``extract.min_roi_fraction`` of its footprint lies in the
mask; the fraction is read from a summed-area table, so checking a candidate costs four lookups.
Each mask is saved as a PNG in the dataset (``roi/<digest>.png``) and hashed in the manifest.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from patchpack.dataset.binary import opened, otsu_threshold, without_small_pieces
from patchpack.dataset.readers import Reader, smallest_level_at_least
from patchpack.errors import SourceError

MASK_SIDE = 1024
MIN_PIECE = 16


@dataclass(frozen=True)
class Roi:
    """What the plan needs of a source's region of interest: the mask (as its PNG) and the rule.

    Hashable and small, so plans that carry it can be compared, cached and sent to workers.
    """

    png: bytes
    downsample: float  # level-0 pixels per mask pixel
    min_fraction: float

    def keep(
        self, ys: np.ndarray, xs: np.ndarray, size: int, level_downsample: float
    ) -> np.ndarray:
        """Which candidates (level corners ``ys``, ``xs`` of side ``size``) lie enough in the ROI."""
        table = _table(self.png)
        scale = level_downsample
        inside = fractions(table, self.downsample, ys * scale, xs * scale, size * scale)
        kept: np.ndarray = inside >= self.min_fraction
        return kept

    def touches(self, rects: np.ndarray, level_downsample: float) -> np.ndarray:
        """Whether a set mask cell lies under or next to each level rectangle (rows of y0, y1, x0,
        x1): a footprint inside a rectangle that this says False for touches no set cell (the
        cell of margin absorbs any rounding of a fractional downsample)."""
        table = _table(self.png)
        height, width = table.shape[0] - 1, table.shape[1] - 1
        level0 = rects * level_downsample
        y0, y1 = touched(level0[:, 0], level0[:, 1] - level0[:, 0], self.downsample, height)
        x0, x1 = touched(level0[:, 2], level0[:, 3] - level0[:, 2], self.downsample, width)
        y0, x0 = np.maximum(y0 - 1, 0), np.maximum(x0 - 1, 0)
        y1, x1 = np.minimum(y1 + 1, height), np.minimum(x1 + 1, width)
        touching: np.ndarray = _set_cells(table, y0, y1, x0, x1) > 0
        return touching


@functools.lru_cache(maxsize=8)
def _table(png: bytes) -> np.ndarray:
    return RoiMask.from_png(png, 1.0).table()


@dataclass(frozen=True)
class RoiMask:
    """A boolean mask over a source and how many level-0 pixels one mask pixel spans."""

    mask: np.ndarray
    downsample: float

    def table(self) -> np.ndarray:
        """The summed-area table, shape (height + 1, width + 1), int64."""
        table = np.zeros((self.mask.shape[0] + 1, self.mask.shape[1] + 1), np.int64)
        table[1:, 1:] = self.mask.astype(np.int64).cumsum(0).cumsum(1)
        return table

    def png(self) -> bytes:
        """The mask as a 1-bit PNG (bytes depend only on the mask)."""
        buffer = io.BytesIO()
        Image.fromarray(self.mask).convert("1").save(buffer, format="PNG", optimize=False)
        return buffer.getvalue()

    def intersect(self, other: RoiMask) -> RoiMask:
        """Where both masks are set, on this mask's grid (``other`` read under its pixel centres)."""
        height, width = self.mask.shape
        centres_y = (np.arange(height) + 0.5) * self.downsample / other.downsample
        centres_x = (np.arange(width) + 0.5) * self.downsample / other.downsample
        rows = np.clip(np.floor(centres_y).astype(np.int64), 0, other.mask.shape[0] - 1)
        cols = np.clip(np.floor(centres_x).astype(np.int64), 0, other.mask.shape[1] - 1)
        return RoiMask(self.mask & other.mask[rows[:, None], cols[None, :]], self.downsample)

    @classmethod
    def from_png(cls, data: bytes, downsample: float) -> RoiMask:
        with Image.open(io.BytesIO(data)) as image:
            return cls(np.asarray(image.convert("L")) > 0, downsample)


def fractions(
    table: np.ndarray,
    mask_downsample: float,
    ys: np.ndarray,
    xs: np.ndarray,
    size: float,
) -> np.ndarray:
    """The fraction of set mask pixels among those each footprint touches.

    ``ys``, ``xs`` are level-0 top-left corners and ``size`` the footprint's side in level-0 pixels.
    A footprint counts every mask pixel it touches, wholly: where a mask pixel spans more than a patch
    (coarse masks, small patches) this is coarser than the area in tissue, by at most one mask pixel
    on each side.
    """
    y0, y1 = touched(ys, size, mask_downsample, table.shape[0] - 1)
    x0, x1 = touched(xs, size, mask_downsample, table.shape[1] - 1)
    return _fraction(table, y0, y1, x0, x1)


def touched(
    starts: np.ndarray, size: float | np.ndarray, mask_downsample: float, cells: int
) -> tuple[np.ndarray, np.ndarray]:
    """The mask cells ``first..last - 1`` along one axis that footprints from ``starts`` touch."""
    first = np.clip(np.floor(starts / mask_downsample).astype(np.int64), 0, cells)
    last = np.clip(np.ceil((starts + size) / mask_downsample).astype(np.int64), 0, cells)
    return first, last


def _fraction(
    table: np.ndarray, y0: np.ndarray, y1: np.ndarray, x0: np.ndarray, x1: np.ndarray
) -> np.ndarray:
    """Set cells over touched cells for spans that broadcast against each other."""
    inside = _set_cells(table, y0, y1, x0, x1)
    area = np.maximum((y1 - y0) * (x1 - x0), 1)
    result: np.ndarray = inside / area
    return result


def _set_cells(
    table: np.ndarray, y0: np.ndarray, y1: np.ndarray, x0: np.ndarray, x1: np.ndarray
) -> np.ndarray:
    """Set mask cells in rows ``y0..y1 - 1`` and columns ``x0..x1 - 1``, from the summed-area table."""
    inside: np.ndarray = table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]
    return inside


def any_kept(roi: Roi, y_range: range, x_range: range, size: int, level_downsample: float) -> bool:
    """Whether any corner of ``y_range`` x ``x_range`` (level pixels) is one :meth:`Roi.keep` keeps.

    Exact, and as fast as the footprints are few: a footprint's fraction depends only on the mask
    cells it touches, so each distinct span of cells along each axis is tried once, with the very
    arithmetic of :func:`fractions`.
    """
    if not len(y_range) or not len(x_range):
        return False
    table = _table(roi.png)
    scale = level_downsample

    def spans(positions: range, cells: int) -> tuple[np.ndarray, np.ndarray]:
        starts = np.arange(positions.start, positions.stop, dtype=np.int64) * scale
        first, last = touched(starts, size * scale, roi.downsample, cells)
        # both ends only grow with the position, so equal spans are neighbours
        new = np.ones(len(first), bool)
        new[1:] = (first[1:] != first[:-1]) | (last[1:] != last[:-1])
        return first[new], last[new]

    y0, y1 = spans(y_range, table.shape[0] - 1)
    x0, x1 = spans(x_range, table.shape[1] - 1)
    rows = max(1, 2**20 // len(x0))  # about a million footprints at a time
    for top in range(0, len(y0), rows):
        part = slice(top, top + rows)
        inside = _fraction(table, y0[part, None], y1[part, None], x0[None, :], x1[None, :])
        if (inside >= roi.min_fraction).any():
            return True
    return False


def low_resolution_view(reader: Reader) -> tuple[np.ndarray, float]:
    """The view the mask is computed from, (height, width, channels) uint8, and its downsample.

    The smallest level at least ``MASK_SIDE`` pixels on its longer side (or level 0), averaged over
    square blocks when it is more than twice that, so the mask's size does not grow with the slide's.
    """
    index = smallest_level_at_least(reader.levels, MASK_SIDE)
    level = reader.levels[index]
    factor = max(1, max(level.height, level.width) // MASK_SIDE)
    if factor == 1:
        return reader.read(index, 0, 0, level.height, level.width), level.downsample
    return _strips(reader, index, factor), float(factor) * level.downsample


def _strips(reader: Reader, index: int, factor: int) -> np.ndarray:
    """Level ``index`` averaged over ``factor`` x ``factor`` blocks, read a strip of rows at a time."""
    level = reader.levels[index]
    rows = max(factor, (8 * 2**20 // max(1, level.width * 3)) // factor * factor)
    usable = (level.height // factor) * factor
    if usable == 0:
        raise SourceError(
            f"{reader.path}: {level.width}x{level.height} is too thin to compute a tissue mask from; "
            f"remove it or use extract.roi: all"
        )
    parts = [
        _block_mean(reader.read(index, top, 0, min(rows, usable - top), level.width), factor)
        for top in range(0, usable, rows)
    ]
    return np.concatenate(parts)


def _block_mean(pixels: np.ndarray, factor: int) -> np.ndarray:
    height, width = (pixels.shape[0] // factor) * factor, (pixels.shape[1] // factor) * factor
    blocks = pixels[:height, :width].reshape(height // factor, factor, width // factor, factor, -1)
    mean: np.ndarray = blocks.mean(axis=(1, 3), dtype=np.float64)
    return np.round(mean).astype(np.uint8)


def _score_table() -> np.ndarray:
    """``max(saturation, darkness)`` for every (largest channel, spread) pair, uint8 (256, 256)."""
    high, spread = np.mgrid[0:256, 0:256].astype(np.int32)
    saturation = np.where(high > 0, spread * 255 // np.maximum(high, 1), 0)
    table: np.ndarray = np.maximum(saturation, 255 - high).astype(np.uint8)
    return table


_SCORE = _score_table()


def tissue_mask(pixels: np.ndarray, where: str) -> np.ndarray:
    """Otsu on the larger of saturation and darkness, then a small clean-up; boolean (h, w)."""
    # channel by channel: a reduction over a short last axis is several times slower
    channels = [pixels[..., c] for c in range(pixels.shape[2])]
    high8, low8 = functools.reduce(np.maximum, channels), functools.reduce(np.minimum, channels)
    index = high8.astype(np.intp) << 8
    index |= high8 - low8
    score = _SCORE.ravel()[index]
    if score.min() == score.max():
        raise SourceError(
            f"{where}: the image is uniform, so no tissue can be told from background; remove it or "
            f"use extract.roi: all"
        )
    cleaned = without_small_pieces(opened(score > otsu_threshold(score)), MIN_PIECE)
    return cleaned
