"""Readers: one small interface over the libraries that decode source images.

A reader says how many pyramid levels a source has, their sizes, and its resolution (microns per
pixel) when the file records one, and returns any window of any level as a uint8 array converted by
the one conversion rule (see :mod:`patchpack.dataset.sources`)::

    with open_reader(path, channels=3, max_megapixels=100) as reader:
        reader.levels        # (Level(height, width, downsample), ...), level 0 first
        reader.mpp           # microns per pixel at level 0, or None
        reader.read(level=1, y=0, x=0, height=256, width=256)   # (256, 256, 3) uint8

The backend is chosen per file, deterministically, by :func:`choose_backend`, and recorded per source
in the manifest; nothing else in patchpack knows which one decoded a file:

==========  =====================================================================================
pillow      PNG, JPEG and untiled single-level TIFF: decoded whole (as small images always were)
tifffile    tiled or pyramidal TIFF, BigTIFF, OME-TIFF, Aperio SVS: a window decodes only the tiles
            it touches (tifffile + zarr, tile codecs from imagecodecs)
openslide   vendor formats tifffile cannot read (NDPI, MRXS, SCN, VMS, BIF ...), through
            openslide-python with the openslide-bin library
==========  =====================================================================================

``source.max_megapixels`` guards what is decoded at once: a whole image for ``pillow``, one window
(a patch, or the low-resolution level the tissue mask is computed from) for the tiled backends.
"""

from __future__ import annotations

import collections
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import numpy as np
from PIL import Image

from patchpack.errors import SourceError

PILLOW_SUFFIXES = (".png", ".jpg", ".jpeg")
TIFF_SUFFIXES = (".tif", ".tiff", ".svs", ".btf", ".tf8", ".tf2")
OPENSLIDE_SUFFIXES = (".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide")
SUFFIXES = PILLOW_SUFFIXES + TIFF_SUFFIXES + OPENSLIDE_SUFFIXES
BACKENDS = ("pillow", "tifffile", "openslide")


@dataclass(frozen=True)
class Level:
    """One pyramid level: its size in pixels and how many level-0 pixels one of its pixels spans."""

    height: int
    width: int
    downsample: float


class Reader(Protocol):
    """What every backend offers; see the module docstring."""

    path: Path
    backend: str
    levels: tuple[Level, ...]
    mpp: float | None

    def read(self, level: int, y: int, x: int, height: int, width: int) -> np.ndarray: ...

    def close(self) -> None: ...

    def __enter__(self) -> Reader: ...

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


def smallest_level_at_least(levels: tuple[Level, ...], side: int, *, lowest: int = 0) -> int:
    """The smallest level whose longer side is at least ``side`` pixels (``lowest`` if none is)."""
    for index in range(len(levels) - 1, lowest, -1):
        if max(levels[index].height, levels[index].width) >= side:
            return index
    return lowest


def choose_backend(path: Path) -> str:
    """The backend for ``path``, from its suffix and, for TIFF, whether it is tiled or pyramidal."""
    suffix = path.suffix.lower()
    if suffix in PILLOW_SUFFIXES:
        return "pillow"
    if suffix in OPENSLIDE_SUFFIXES:
        return "openslide"
    if suffix not in TIFF_SUFFIXES:
        raise SourceError(
            f"{path}: not an image (supported: {', '.join(SUFFIXES)}); remove it from the source folder"
        )
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            series = tif.series[0] if tif.series else None
            pyramid = series is not None and len(series.levels) > 1
            return "tifffile" if page.is_tiled or pyramid or tif.is_bigtiff else "pillow"
    except (OSError, ValueError, IndexError, tifffile.TiffFileError) as exc:
        raise SourceError(
            f"{path}: not a readable TIFF ({exc}); re-export it or remove it"
        ) from exc


def open_reader(
    path: Path, *, channels: int, max_megapixels: float, backend: str | None = None
) -> Reader:
    """Open ``path`` with a windowed backend (chosen by :func:`choose_backend` unless given).

    Small images (backend ``pillow``) are decoded whole by :func:`patchpack.dataset.sources.load_pixels`
    and wrapped in an :class:`ArrayReader` instead.
    """
    backend = backend or choose_backend(path)
    limit = int(max_megapixels * 1_000_000)
    if backend == "tifffile":
        return TiffReader(path, channels, limit)
    if backend == "openslide":
        return OpenSlideReader(path, channels, limit)
    raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def backend_versions() -> dict[str, str]:
    """Versions of the tile decoders: where pixels can differ between machines."""
    import imagecodecs
    import openslide
    import tifffile
    import zarr

    versions = {
        "tifffile": tifffile.__version__,
        "zarr": zarr.__version__,
        "imagecodecs": imagecodecs.__version__,
        "openslide-python": openslide.__version__,
        "openslide": str(openslide.__library_version__),
    }
    # zlib is left out: which copy is loaded depends on import order, not on the pixels
    for codec in ("jpeg8", "jpeg2k", "webp"):
        version = getattr(imagecodecs, f"{codec}_version", None)
        if callable(version):
            versions[f"imagecodecs.{codec}"] = str(version())
    return versions


def convert(array: np.ndarray, channels: int, where: str) -> np.ndarray:
    """A decoded window, shape (height, width[, samples]), to uint8 (height, width, channels).

    The same rule as for whole images: 16-bit values drop their low byte, alpha is dropped, one
    channel takes ITU-R 601-2 luma exactly as Pillow's ``convert("L")`` computes it, three channels
    take RGB (gray is replicated).
    """
    if array.dtype.kind == "f":
        raise SourceError(
            f"{where}: floating-point pixels have no fixed scale; convert to 8 or 16 bits"
        )
    if array.dtype != np.uint8:
        array = (np.clip(array.astype(np.int64), 0, 65535) >> 8).astype(np.uint8)
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    if array.shape[2] in (2, 4):  # gray + alpha, RGB + alpha: the stored colour is kept
        array = array[:, :, : array.shape[2] - 1]
    if array.shape[2] not in (1, 3):
        raise SourceError(
            f"{where}: {array.shape[2]} samples per pixel; patchpack reads gray or RGB"
        )
    if channels == array.shape[2]:
        return np.ascontiguousarray(array)
    if channels == 3:
        return np.ascontiguousarray(np.repeat(array, 3, axis=2))
    luma = np.asarray(Image.fromarray(np.ascontiguousarray(array)).convert("L"), dtype=np.uint8)
    return luma[:, :, np.newaxis]


class _Base:
    path: Path
    levels: tuple[Level, ...]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the file."""

    def _check_window(
        self, level: int, y: int, x: int, height: int, width: int, limit: int
    ) -> None:
        if not 0 <= level < len(self.levels):
            raise SourceError(
                f"{self.path}: level {level} does not exist (levels 0 to {len(self.levels) - 1}); "
                f"lower source.level"
            )
        size = self.levels[level]
        if y < 0 or x < 0 or y + height > size.height or x + width > size.width:
            raise SourceError(
                f"{self.path}: window y={y}, x={x}, {height}x{width} lies outside level {level} "
                f"({size.height}x{size.width})"
            )
        if height * width > limit:
            raise SourceError(
                f"{self.path}: reading {height}x{width} pixels at level {level} at once is above "
                f"source.max_megapixels={limit / 1e6:g}; raise it or use a smaller window or level"
            )


class ArrayReader(_Base):
    """A small image already decoded whole (Pillow's path, the one conversion rule): one level."""

    backend = "pillow"

    def __init__(self, path: Path, pixels: np.ndarray) -> None:
        self.path = Path(path)
        self._pixels = pixels
        self.levels = (Level(pixels.shape[0], pixels.shape[1], 1.0),)
        self.mpp: float | None = None

    def pixels(self) -> np.ndarray:
        """The whole image, (height, width, channels) uint8."""
        return self._pixels

    def read(self, level: int, y: int, x: int, height: int, width: int) -> np.ndarray:
        self._check_window(
            level, y, x, height, width, self._pixels.shape[0] * self._pixels.shape[1]
        )
        return self._pixels[y : y + height, x : x + width]


class TiffReader(_Base):
    """Tiled or pyramidal TIFF through tifffile and zarr: a window decodes only the tiles it touches.

    Decoded tiles are kept (up to ``TILE_CACHE_BYTES``, least recently used first out), since random
    patches overlap: on the demo slide 4,000 windows of 128x128 touch 9,000 tiles of 512x512, but only
    100 distinct ones. A window is cut from whole decoded tiles, exactly as zarr cuts it, so the
    pixels are the same; levels stored in chunks above ``CACHED_TILE_PIXELS`` (large strips) are read
    window by window instead.
    """

    backend = "tifffile"
    TILE_CACHE_BYTES = 64 * 2**20
    CACHED_TILE_PIXELS = 1024 * 1024

    def __init__(self, path: Path, channels: int, limit: int) -> None:
        import tifffile

        self.path = Path(path)
        self.channels = channels
        self.limit = limit
        try:
            self._tif = tifffile.TiffFile(self.path)
        except (OSError, ValueError, IndexError, tifffile.TiffFileError) as exc:
            raise SourceError(f"{self.path}: not a readable TIFF ({exc}); re-export it") from exc
        try:
            series = self._tif.series[0]
            pages = [level.keyframe for level in series.levels]
            if any(page.planarconfig == 2 for page in pages):  # samples stored plane by plane
                raise SourceError(
                    f"{self.path}: samples are stored in separate planes, which patchpack does not "
                    f"read; re-save it with contiguous samples (tifffile planarconfig='contig')"
                )
        except SourceError:
            self._tif.close()
            raise
        except (OSError, ValueError, IndexError, tifffile.TiffFileError) as exc:
            self._tif.close()
            raise SourceError(f"{self.path}: not a readable TIFF ({exc}); re-export it") from exc
        self._pages = pages
        self._arrays: dict[int, Any] = {}
        self._tiles: collections.OrderedDict[tuple[int, int, int], np.ndarray] = (
            collections.OrderedDict()
        )
        self._tile_bytes = 0
        base_width = _page_size(pages[0])[1]
        self.levels = tuple(
            Level(*_page_size(page), downsample=base_width / _page_size(page)[1]) for page in pages
        )
        self.mpp = _tiff_mpp(self._tif, pages[0])

    def _array(self, level: int) -> Any:
        if level not in self._arrays:
            import zarr

            self._arrays[level] = zarr.open(self._pages[level].aszarr(), mode="r")
        return self._arrays[level]

    def read(self, level: int, y: int, x: int, height: int, width: int) -> np.ndarray:
        self._check_window(level, y, x, height, width, self.limit)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tifffile warns about odd tags while decoding
                window = self._window(level, y, x, height, width)
        except Exception as exc:  # any codec failure, whatever library raises it
            raise SourceError(
                f"{self.path}: level {level}: cannot decode the tiles of the window at y={y}, x={x} "
                f"({type(exc).__name__}: {exc}); the file is truncated, corrupt or uses an unsupported "
                f"codec"
            ) from exc
        return convert(window, self.channels, f"{self.path}: level {level}")

    def _window(self, level: int, y: int, x: int, height: int, width: int) -> np.ndarray:
        """The stored samples of a window, assembled from cached decoded tiles where they fit."""
        array = self._array(level)
        tile_h, tile_w = (int(side) for side in array.chunks[:2])
        if tile_h * tile_w > self.CACHED_TILE_PIXELS:
            return np.asarray(array[y : y + height, x : x + width])
        window = np.empty((height, width, *array.shape[2:]), array.dtype)
        for row in range(y // tile_h, (y + height - 1) // tile_h + 1):
            for col in range(x // tile_w, (x + width - 1) // tile_w + 1):
                tile = self._tile(array, level, row, col, (tile_h, tile_w))
                top, left = row * tile_h, col * tile_w
                y0, y1 = max(y, top), min(y + height, top + tile.shape[0])
                x0, x1 = max(x, left), min(x + width, left + tile.shape[1])
                window[y0 - y : y1 - y, x0 - x : x1 - x] = tile[
                    y0 - top : y1 - top, x0 - left : x1 - left
                ]
        return window

    def _tile(
        self, array: Any, level: int, row: int, col: int, shape: tuple[int, int]
    ) -> np.ndarray:
        """Tile (row, col) of ``level``, decoded once while it stays in the cache."""
        key = (level, row, col)
        tile = self._tiles.pop(key, None)
        if tile is None:
            top, left = row * shape[0], col * shape[1]
            tile = np.asarray(array[top : top + shape[0], left : left + shape[1]])
            self._tile_bytes += tile.nbytes
            while self._tiles and self._tile_bytes > self.TILE_CACHE_BYTES:
                self._tile_bytes -= self._tiles.popitem(last=False)[1].nbytes
        self._tiles[key] = tile
        return tile

    def close(self) -> None:
        self._tiles.clear()
        self._tile_bytes = 0
        self._tif.close()


def _page_size(page: Any) -> tuple[int, int]:
    return int(page.imagelength), int(page.imagewidth)


def _tiff_mpp(tif: Any, page: Any) -> float | None:
    """Microns per pixel at level 0: Aperio's ``MPP =``, OME's PhysicalSizeX, else the resolution tags."""
    description = page.description or ""
    aperio = re.search(r"\bMPP\s*=\s*([0-9.]+)", description)
    if aperio:
        return float(aperio.group(1))
    if tif.is_ome and tif.ome_metadata:
        physical = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', tif.ome_metadata)
        unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', tif.ome_metadata)
        if physical and (unit is None or unit.group(1) in ("µm", "um", "\u00b5m")):
            return float(physical.group(1))
    tag = page.tags.get("XResolution")
    unit_tag = page.tags.get("ResolutionUnit")
    if tag is None or unit_tag is None:
        return None
    numerator, denominator = tag.value
    pixels_per_unit = numerator / denominator if denominator else 0.0
    microns = {2: 25_400.0, 3: 10_000.0}.get(int(unit_tag.value))
    if not microns or pixels_per_unit <= 0:
        return None
    return microns / pixels_per_unit


class OpenSlideReader(_Base):
    """Vendor whole-slide formats through OpenSlide (openslide-bin ships the library)."""

    backend = "openslide"

    def __init__(self, path: Path, channels: int, limit: int) -> None:
        import openslide

        self.path = Path(path)
        self.channels = channels
        self.limit = limit
        try:
            self._slide = openslide.OpenSlide(str(self.path))
        except (openslide.OpenSlideError, OSError) as exc:
            raise SourceError(
                f"{self.path}: OpenSlide cannot open it ({exc}); check the file"
            ) from exc
        self.levels = tuple(
            Level(height, width, float(downsample))
            for (width, height), downsample in zip(
                self._slide.level_dimensions, self._slide.level_downsamples, strict=True
            )
        )
        mpp = self._slide.properties.get(openslide.PROPERTY_NAME_MPP_X)
        self.mpp = float(mpp) if mpp else None

    def read(self, level: int, y: int, x: int, height: int, width: int) -> np.ndarray:
        import openslide

        self._check_window(level, y, x, height, width, self.limit)
        downsample = self.levels[level].downsample
        origin = (round(x * downsample), round(y * downsample))  # OpenSlide wants level-0 corners
        try:
            region = self._slide.read_region(origin, level, (width, height))
        except openslide.OpenSlideError as exc:
            raise SourceError(
                f"{self.path}: level {level}: cannot decode the window at y={y}, x={x} ({exc})"
            ) from exc
        return convert(np.asarray(region), self.channels, f"{self.path}: level {level}")

    def close(self) -> None:
        self._slide.close()
