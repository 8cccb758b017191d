"""Label rasters: a palette or single-channel integer PNG or TIFF of class numbers per image.

A raster's size is that of its image at level 0, at any of its pyramid levels, or an integer
fraction of level 0 (the same on both sides): each raster pixel then spans that many level-0
pixels. A patch pixel takes the value of the raster pixel under its centre (nearest neighbour),
which is how mask targets are cut.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from patchpack.dataset.labels.rule import COVERAGE_SIDE, majority
from patchpack.dataset.readers import Level
from patchpack.dataset.sources import LabelFile, SourceImage
from patchpack.dataset.sources.decode import OpenMessages, open_guarded
from patchpack.dataset.tissue import RoiMask
from patchpack.errors import SourceError
from patchpack.params import LabelParams


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


_RASTER_OPEN = OpenMessages(
    too_many_pixels="label raster claims too many pixels for one decode ({exc}); save it at a "
    "pyramid level (1/16 of level 0 is typical) or as a TIFF",
    unidentified="not a readable label raster (PNG or TIFF); re-export it",
    unreadable="unreadable label raster ({exc}); re-export it",
)


@contextlib.contextmanager
def _opened_png(path: Path) -> Iterator[Any]:
    """A PNG label raster, opened lazily; its size is checked against ``source.max_megapixels``
    by the caller instead of Pillow's decompression-bomb limit."""
    image = open_guarded(path, _RASTER_OPEN)
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
