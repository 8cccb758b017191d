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
            it touches (tile by tile with tifffile's own decoder and imagecodecs' codecs: the same
            calls, so the same bytes, as tifffile's zarr store, without zarr's per-chunk overhead)
openslide   vendor formats tifffile cannot read (NDPI, MRXS, SCN, VMS, BIF ...), through
            openslide-python with the openslide-bin library
==========  =====================================================================================

DICOM whole-slide images (``.dcm``, or any file with the DICOM preamble) are refused in one line:
a DICOM slide is a series of files, one per level, which the catalog would take for separate images.

``source.max_megapixels`` guards what is decoded at once: a whole image for ``pillow``, one window
(a patch, or the low-resolution level the tissue mask is computed from) for the tiled backends.

A tiled file's pixels are what its stored samples say, or an error, never a guess:

* when it is opened, every level's tile (or strip) table must cover the size its header claims and
  every tile must lie inside the file, with a nonzero offset and byte count; otherwise one line
  names the file, the level and the tile (``slide.tif: level 0: tile 12 (row 1, col 4) is truncated
  (3,120 of 20,480 bytes in the file); re-export the slide``). Nothing is allocated per pixel, so a
  header claiming 10^6 x 10^6 pixels costs no more than any other;
* a JPEG tile must end with its end-of-image marker when read: libjpeg decodes a stream cut short
  without an error, filling the rest of the tile with gray;
* stored samples follow the same conversion rule as Pillow's path (see
  :mod:`patchpack.dataset.sources`), so one image tiled or in strips gives the same pixels: MINISWHITE
  is inverted (1, 2, 4 and 8 bits; 16-bit MINISWHITE is kept as stored, as Pillow reads it), 1-, 2- and
  4-bit gray is spread over 0..255 as Pillow unpacks it (bilevel to 0 and 255), PALETTE is expanded
  through its colormap (``value >> 8``, Pillow's ``// 256``), CMYK (SEPARATED) goes to RGB by Pillow's
  own ``convert("RGB")``; other photometrics (CIELAB, YCbCr without JPEG, ...) are refused in one line.

tifffile logs (logger ``tifffile``) and warns about odd tags while it opens and decodes; inside the
reader both are silenced, so patchpack's one line is the only thing a bad file prints.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import re
import threading
import warnings
from collections.abc import Callable, Iterator
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
DICOM_SUFFIXES = (".dcm", ".dicom")

# TIFF Compression values of JPEG tiles: libjpeg decodes a stream cut short without an error (the
# rest of the tile comes out gray), so these streams must end with the end-of-image marker
_JPEG_COMPRESSIONS = frozenset({7, 33007, 34892})
_END_OF_IMAGE = b"\xff\xd9"


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
    if suffix in DICOM_SUFFIXES or (suffix not in TIFF_SUFFIXES and _is_dicom(path)):
        raise SourceError(
            f"{path}: DICOM whole-slide images are not supported yet; convert the series to a "
            f"pyramidal TIFF (e.g. `vips tiffsave {path.name} slide.tif --tile --pyramid "
            f"--compression jpeg --bigtiff`, with a libvips built on OpenSlide 4) and use that"
        )
    if suffix not in TIFF_SUFFIXES:
        raise SourceError(
            f"{path}: not an image (supported: {', '.join(SUFFIXES)}); remove it from the source folder"
        )
    import tifffile

    try:
        with _quiet(), tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            series = tif.series[0] if tif.series else None
            pyramid = series is not None and len(series.levels) > 1
            return "tifffile" if page.is_tiled or pyramid or tif.is_bigtiff else "pillow"
    except Exception as exc:  # tifffile parses untrusted bytes: it raises a dozen kinds of error
        raise SourceError(
            f"{path}: not a readable TIFF ({_reason(exc)}); re-export it or remove it"
        ) from exc


def _reason(exc: Exception) -> str:
    """What went wrong, for a message: the error's own words, with its type where they are terse
    (``ZeroDivisionError: division by zero`` says more than ``division by zero``)."""
    if isinstance(exc, OSError | ValueError) or type(exc).__name__ == "TiffFileError":
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _is_dicom(path: Path) -> bool:
    """Whether ``path`` starts with the DICOM preamble (128 bytes, then ``DICM``): DICOM files
    often have no suffix at all."""
    try:
        with path.open("rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


_QUIET = threading.local()


class _WhileQuiet(logging.Filter):
    """Drops tifffile's log records while this thread is inside :func:`_quiet`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_QUIET, "depth", 0)


_QUIET_FILTER = _WhileQuiet()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Around tifffile's opening and decoding: its log records and warnings are not shown.

    tifffile logs (logger ``tifffile``, which has no handler, so Python's last-resort handler
    prints to stderr) and warns about odd tags and sizes. A file patchpack cannot read fails with
    its own one line instead, and one it can read is read as a viewer reads it, so tifffile's
    messages would only come before that line. Records are dropped only in the thread inside the
    call, so other code in the process that uses tifffile keeps its messages.
    """
    logger = logging.getLogger("tifffile")
    if _QUIET_FILTER not in logger.filters:
        logger.addFilter(_QUIET_FILTER)
    _QUIET.depth = getattr(_QUIET, "depth", 0) + 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        _QUIET.depth -= 1


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


class _Undecodable(Exception):
    """A codec failed on one tile: the message names the tile, :class:`TiffReader` the window."""


@dataclass(frozen=True, eq=False)
class _Chunks:
    """How one level's samples are stored: a table of tiles (or strips) of one shape.

    Attributes
    ----------
    page : tifffile.TiffPage, the level's page (its decoder and its file)
    kind : str, ``tile`` or ``strip``
    shape : tuple of int, the level's stored array, (height, width[, samples])
    chunk : tuple of int, one decoded tile or strip, padded at the image's edges, (height, width[,
        samples]): the chunks of tifffile's zarr store
    across : int, tiles per row of tiles (1 for strips)
    offsets, counts : ndarray of shape (n_chunks,), int64, where each chunk lies in the file
    check_end : bool, whether a chunk must end with the JPEG end-of-image marker
    standard : callable, stored samples to what :func:`convert` takes (see :func:`_sample_rule`)
    """

    page: Any
    kind: str
    shape: tuple[int, ...]
    chunk: tuple[int, ...]
    across: int
    offsets: np.ndarray
    counts: np.ndarray
    check_end: bool
    standard: Callable[[np.ndarray], np.ndarray]

    def name(self, index: int) -> str:
        """How a message names chunk ``index``: ``tile 12 (row 1, col 4)`` or ``strip 3``."""
        if self.kind == "strip":
            return f"strip {index}"
        return f"tile {index} (row {index // self.across}, col {index % self.across})"


class TiffReader(_Base):
    """Tiled or pyramidal TIFF through tifffile: a window decodes only the tiles it touches.

    Each tile is read from the file and decoded by the page's own tifffile decoder, with the
    arguments tifffile's zarr store passes it (JPEG tables and header, tiles padded to full size at
    the image's edges), so the samples are byte for byte those ``zarr.open(page.aszarr())`` gives,
    without zarr's per-chunk machinery (about a third of the time per tile, and no zarr import).

    Decoded tiles are kept (up to ``TILE_CACHE_BYTES``, least recently used first out), since random
    patches overlap: on the demo slide 4,000 windows of 128x128 touch 9,000 tiles of 512x512, but only
    100 distinct ones. A window is cut from whole decoded tiles, exactly as zarr cuts it, so the
    pixels are the same; tiles or strips above ``CACHED_TILE_PIXELS`` (large strips) are decoded
    for each window instead of kept.
    """

    backend = "tifffile"
    TILE_CACHE_BYTES = 64 * 2**20
    CACHED_TILE_PIXELS = 1024 * 1024

    def __init__(self, path: Path, channels: int, limit: int) -> None:
        import tifffile

        self.path = Path(path)
        self.channels = channels
        self.limit = limit
        with _quiet():
            try:
                self._tif = tifffile.TiffFile(self.path)
            except Exception as exc:  # tifffile parses untrusted bytes: any kind of error
                raise SourceError(
                    f"{self.path}: not a readable TIFF ({_reason(exc)}); re-export it"
                ) from exc
            try:
                self._chunks, self.mpp = self._tables()
            except BaseException:
                self._tif.close()
                raise
        self._tiles: collections.OrderedDict[tuple[int, int, int], np.ndarray] = (
            collections.OrderedDict()
        )
        self._tile_bytes = 0
        sizes = [_page_size(table.page) for table in self._chunks]  # each checked to be nonzero
        self.levels = tuple(
            Level(height, width, downsample=sizes[0][1] / width) for height, width in sizes
        )

    def _tables(self) -> tuple[list[_Chunks], float | None]:
        """Every level's chunk table, checked against its header and the file (see the module),
        and the resolution at level 0."""
        try:
            pages = [level.keyframe for level in self._tif.series[0].levels]
            tables = [_chunk_table(self.path, index, page) for index, page in enumerate(pages)]
            return tables, _tiff_mpp(self._tif, pages[0])
        except SourceError:
            raise
        except Exception as exc:  # tifffile parses tags lazily: any kind of error, here too
            raise SourceError(
                f"{self.path}: not a readable TIFF ({_reason(exc)}); re-export it"
            ) from exc

    def read(self, level: int, y: int, x: int, height: int, width: int) -> np.ndarray:
        self._check_window(level, y, x, height, width, self.limit)
        table = self._chunks[level]
        try:
            with _quiet():
                window = table.standard(self._window(table, level, y, x, height, width))
        except SourceError:
            raise
        except Exception as exc:  # any codec failure, whatever library raises it
            cause = str(exc) if isinstance(exc, _Undecodable) else f"{type(exc).__name__}: {exc}"
            raise SourceError(
                f"{self.path}: level {level}: cannot decode the tiles of the window at y={y}, x={x} "
                f"({cause}); the file is truncated, corrupt or uses an unsupported codec"
            ) from exc
        return convert(window, self.channels, f"{self.path}: level {level}")

    def _window(
        self, table: _Chunks, level: int, y: int, x: int, height: int, width: int
    ) -> np.ndarray:
        """The stored samples of a window, assembled from decoded tiles (cached where they fit)."""
        tile_h, tile_w = table.chunk[:2]
        keep = tile_h * tile_w <= self.CACHED_TILE_PIXELS
        window = np.empty((height, width, *table.shape[2:]), table.page.dtype)
        for row in range(y // tile_h, (y + height - 1) // tile_h + 1):
            for col in range(x // tile_w, (x + width - 1) // tile_w + 1):
                tile = self._tile(table, level, row, col, keep)
                top, left = row * tile_h, col * tile_w
                y0, y1 = max(y, top), min(y + height, top + tile.shape[0])
                x0, x1 = max(x, left), min(x + width, left + tile.shape[1])
                window[y0 - y : y1 - y, x0 - x : x1 - x] = tile[
                    y0 - top : y1 - top, x0 - left : x1 - left
                ]
        return window

    def _tile(self, table: _Chunks, level: int, row: int, col: int, keep: bool) -> np.ndarray:
        """Tile (row, col) of ``level``, decoded once while it stays in the cache."""
        key = (level, row, col)
        tile = self._tiles.pop(key, None)
        if tile is None:
            tile = self._decode(table, level, row * table.across + col)
            if not keep:
                return tile
            self._tile_bytes += tile.nbytes
            while self._tiles and self._tile_bytes > self.TILE_CACHE_BYTES:
                self._tile_bytes -= self._tiles.popitem(last=False)[1].nbytes
        self._tiles[key] = tile
        return tile

    def _decode(self, table: _Chunks, level: int, index: int) -> np.ndarray:
        """Chunk ``index`` of a level, decoded as tifffile's zarr store decodes it."""
        offset, count = int(table.offsets[index]), int(table.counts[index])
        handle = table.page.parent.filehandle
        with handle.lock:
            handle.seek(offset)
            data = handle.read(count)
        where = f"{self.path}: level {level}: {table.name(index)}"
        if len(data) < count:  # the file was cut short after it was opened
            raise SourceError(
                f"{where} is truncated ({len(data):,} of {count:,} bytes in the file); re-export "
                f"the slide"
            )
        if table.check_end and not data.rstrip(b"\x00").endswith(_END_OF_IMAGE):
            raise SourceError(
                f"{where} is truncated (its JPEG stream has no end marker); re-export the slide"
            )
        page = table.page
        try:
            decoded = page.decode(
                data, index, jpegtables=page.jpegtables, jpegheader=page.jpegheader, _fullsize=True
            )[0]
        except Exception as exc:  # any codec failure, whatever library raises it
            raise _Undecodable(f"{table.name(index)}: {type(exc).__name__}: {exc}") from exc
        if decoded is None or decoded.size != math.prod(table.chunk):
            raise _Undecodable(f"{table.name(index)} decodes to {getattr(decoded, 'shape', None)}")
        tile: np.ndarray = decoded.reshape(table.chunk)
        return tile

    def close(self) -> None:
        self._tiles.clear()
        self._tile_bytes = 0
        self._tif.close()


def _page_size(page: Any) -> tuple[int, int]:
    return int(page.imagelength), int(page.imagewidth)


def _chunk_table(path: Path, level: int, page: Any) -> _Chunks:
    """Level ``level``'s chunk table, refused in one line where it cannot give the claimed pixels."""
    height, width = _page_size(page)
    where = f"{path}: level {level}"
    if height <= 0 or width <= 0:
        raise SourceError(
            f"{path}: level {level} is empty ({width} x {height} pixels); re-export the slide"
        )
    if page.planarconfig == 2:  # samples stored plane by plane
        raise SourceError(
            f"{path}: samples are stored in separate planes, which patchpack does not "
            f"read; re-save it with contiguous samples (tifffile planarconfig='contig')"
        )
    if int(page.imagedepth) > 1:
        raise SourceError(
            f"{where}: a volume of {page.imagedepth} planes; patchpack reads 2-D images, so save "
            f"one plane per page"
        )
    kind = "tile" if page.is_tiled else "strip"
    chunk = tuple(int(side) for side in page.chunks)
    if chunk[0] <= 0 or chunk[1] <= 0:
        raise SourceError(
            f"{where}: {kind}s of {chunk[1]} x {chunk[0]} pixels; re-export the slide"
        )
    across = math.ceil(width / chunk[1])
    needed = math.ceil(height / chunk[0]) * across
    offsets = np.asarray(page.dataoffsets, dtype=np.int64)
    counts = np.asarray(page.databytecounts, dtype=np.int64)
    listed = min(len(offsets), len(counts))
    if listed < needed:
        raise SourceError(
            f"{where}: the header says {width:,} x {height:,} pixels, which takes {needed:,} {kind}s "
            f"of {chunk[1]} x {chunk[0]}, but the {kind} table lists {listed:,}; re-export the slide"
        )
    table = _Chunks(
        page=page,
        kind=kind,
        shape=tuple(int(side) for side in page.shape),
        chunk=chunk,
        across=across,
        offsets=offsets[:needed],
        counts=counts[:needed],
        check_end=int(page.compression) in _JPEG_COMPRESSIONS,
        standard=_sample_rule(where, page),
    )
    _check_in_file(where, table, int(page.parent.filehandle.size))
    return table


def _check_in_file(where: str, table: _Chunks, size: int) -> None:
    """Refuse the first chunk with no data (offset or byte count 0) or not wholly in the file."""
    empty = (table.offsets <= 0) | (table.counts <= 0)
    outside = table.offsets + table.counts > size
    bad = np.flatnonzero(empty | outside)
    if not bad.size:
        return
    index = int(bad[0])
    offset, count = int(table.offsets[index]), int(table.counts[index])
    if empty[index]:
        raise SourceError(
            f"{where}: {table.name(index)} has no data (offset {offset}, {count:,} bytes); "
            f"re-export the slide"
        )
    present = min(count, max(0, size - offset))
    raise SourceError(
        f"{where}: {table.name(index)} is truncated ({present:,} of {count:,} bytes in the file); "
        f"re-export the slide"
    )


def _as_stored(samples: np.ndarray) -> np.ndarray:
    return samples


def _sample_rule(where: str, page: Any) -> Callable[[np.ndarray], np.ndarray]:
    """How a level's stored samples become gray or RGB (with any alpha) for :func:`convert`, as
    Pillow reads the same samples from a file in strips (see the module docstring)."""
    photometric = int(page.photometric)
    if photometric in (0, 1):  # MINISWHITE, MINISBLACK
        return _gray_rule(int(page.bitspersample), inverted=photometric == 0)
    if photometric == 2:  # RGB
        return _as_stored
    if photometric == 3:
        return _palette_rule(where, page)
    if photometric == 5:
        return _cmyk_rule(where, page)
    if photometric == 6 and int(page.compression) in _JPEG_COMPRESSIONS and not page.extrasamples:
        return _as_stored  # libjpeg decodes YCbCr tiles to RGB (tifffile asks it to)
    name = "YCBCR without JPEG tiles" if photometric == 6 else _photometric_name(photometric)
    raise SourceError(
        f"{where}: photometric {name} is not read by the tiled reader (it reads gray, RGB, "
        f"palette, CMYK and JPEG-coded YCbCr); convert the slide to RGB"
    )


def _photometric_name(value: int) -> str:
    import tifffile

    try:
        return str(tifffile.PHOTOMETRIC(value).name)
    except ValueError:
        return str(value)


def _gray_rule(bits: int, *, inverted: bool) -> Callable[[np.ndarray], np.ndarray]:
    """Gray as Pillow unpacks it: 1-, 2- and 4-bit values spread over 0..255 (``1``, ``L;2``,
    ``L;4``), MINISWHITE inverted at up to 8 bits (``1;I``, ``L;2I``, ``L;4I``, ``L;I``); Pillow
    reads 16-bit MINISWHITE as stored (``I;16``), and so does this."""
    if bits in (1, 2, 4):
        scale = np.uint8(255 // (2**bits - 1))

        def spread(samples: np.ndarray) -> np.ndarray:
            wide: np.ndarray = samples.astype(np.uint8) * scale
            return np.uint8(255) - wide if inverted else wide

        return spread
    if bits == 8 and inverted:

        def invert(samples: np.ndarray) -> np.ndarray:
            flipped: np.ndarray = np.uint8(255) - samples
            return flipped

        return invert
    return _as_stored


def _palette_rule(where: str, page: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Indices expanded through the colormap, each 16-bit entry's high byte, as Pillow does."""
    if page.colormap is None:
        raise SourceError(f"{where}: a palette image without a colormap; re-export the slide")
    colours = (np.asarray(page.colormap, dtype=np.uint16).reshape(3, -1) >> 8).astype(np.uint8).T
    size = max(2 ** int(page.bitspersample), len(colours))
    lookup = np.zeros((size, 3), np.uint8)  # a colormap short of 2**bits entries: the rest black
    lookup[: len(colours)] = colours

    def expand(samples: np.ndarray) -> np.ndarray:
        indices = samples[:, :, 0] if samples.ndim == 3 else samples  # alpha dropped
        rgb: np.ndarray = lookup[indices]
        return rgb

    return expand


def _cmyk_rule(where: str, page: Any) -> Callable[[np.ndarray], np.ndarray]:
    """CMYK to RGB by Pillow's own ``convert("RGB")``, the formula its strip path applies."""
    inks = int(page.samplesperpixel) - len(page.extrasamples)
    inkset = page.tags.valueof(332, 1)  # InkSet: 1 is CMYK
    if inks != 4 or inkset != 1:
        raise SourceError(
            f"{where}: photometric SEPARATED with {inks} inks (InkSet {inkset}); patchpack reads "
            f"CMYK only, so convert the slide to RGB"
        )

    def to_rgb(samples: np.ndarray) -> np.ndarray:
        cmyk = samples[:, :, :4]
        if cmyk.dtype != np.uint8:
            cmyk = (np.clip(cmyk.astype(np.int64), 0, 65535) >> 8).astype(np.uint8)
        height, width = cmyk.shape[:2]
        image = Image.frombytes("CMYK", (width, height), np.ascontiguousarray(cmyk).tobytes())
        return np.asarray(image.convert("RGB"), dtype=np.uint8)

    return to_rgb


def _positive(value: object) -> float | None:
    """A resolution as a float, or ``None`` where it is malformed, zero, negative or not finite:
    such a value records no resolution (``source.mpp`` then says so in one line)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _tiff_mpp(tif: Any, page: Any) -> float | None:
    """Microns per pixel at level 0: Aperio's ``MPP =``, OME's PhysicalSizeX, else the resolution
    tags; a malformed, zero or negative value counts as none recorded there."""
    description = page.description or ""
    aperio = re.search(r"\bMPP\s*=\s*([0-9.]+)", description)
    if aperio and (mpp := _positive(aperio.group(1))) is not None:
        return mpp
    if tif.is_ome and tif.ome_metadata:
        physical = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', tif.ome_metadata)
        unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', tif.ome_metadata)
        in_microns = unit is None or unit.group(1) in ("µm", "um", "\u00b5m")
        if physical and in_microns and (mpp := _positive(physical.group(1))) is not None:
            return mpp
    return _resolution_tags_mpp(page)


def _resolution_tags_mpp(page: Any) -> float | None:
    tag = page.tags.get("XResolution")
    unit_tag = page.tags.get("ResolutionUnit")
    if tag is None or unit_tag is None:
        return None
    try:
        numerator, denominator = tag.value
        unit = int(unit_tag.value)
    except (TypeError, ValueError):
        return None
    pixels_per_unit = numerator / denominator if denominator else 0.0
    microns = {2: 25_400.0, 3: 10_000.0}.get(unit)
    if not microns or pixels_per_unit <= 0:
        return None
    return _positive(microns / pixels_per_unit)


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
        for index, size in enumerate(self.levels):
            if size.height <= 0 or size.width <= 0:
                self._slide.close()
                raise SourceError(
                    f"{self.path}: level {index} is empty ({size.width} x {size.height} pixels); "
                    f"re-export the slide"
                )
        self.mpp = _positive(self._slide.properties.get(openslide.PROPERTY_NAME_MPP_X))

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
