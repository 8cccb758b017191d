"""The ``tifffile`` backend: tiled or pyramidal TIFF, a window decoding only the tiles it touches."""

from __future__ import annotations

import collections
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from patchpack.dataset.readers.base import Level, _Base, _positive, _quiet, _reason, convert
from patchpack.dataset.readers.tiles import (
    _END_OF_IMAGE,
    _chunk_table,
    _Chunks,
    _page_size,
    _Undecodable,
)
from patchpack.errors import SourceError


class TiffReader(_Base):
    """Tiled or pyramidal TIFF through tifffile: a window decodes only the tiles it touches.

    Each tile is read from the file and decoded by the page's own tifffile decoder, with the
    arguments tifffile's zarr store passes it (JPEG tables and header, tiles padded to full size at
    the image's edges), so the samples are byte for byte those ``zarr.open(page.aszarr())`` gives,
    without zarr's per-chunk machinery (about a third of the time per tile, and no zarr import).

    Decoded tiles are kept (up to :attr:`tile_cache_bytes`, ``TILE_CACHE_BYTES`` unless the caller
    sizes it to its working set; least recently used first out), since random patches overlap: on
    the demo slide 4,000 windows of 128x128 touch 9,000 tiles of 512x512, but only 100 distinct ones.
    A window is cut from whole decoded tiles, exactly as zarr cuts it, so the pixels are the same;
    tiles or strips above ``CACHED_TILE_PIXELS`` (large strips) are decoded for each window instead
    of kept.
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
        self.tile_cache_bytes = self.TILE_CACHE_BYTES
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
            while self._tiles and self._tile_bytes > self.tile_cache_bytes:
                self._tile_bytes -= self._tiles.popitem(last=False)[1].nbytes
        self._tiles[key] = tile
        return tile

    def tile_bytes(self, level: int, height: int, width: int, windows: int) -> int:
        """Bytes of the decoded tiles that ``windows`` windows of ``height`` x ``width`` pixels of
        ``level`` touch at most: their tiles, up to every tile of the level (0 where the tiles are
        too large to keep)."""
        table = self._chunks[level]
        tile_h, tile_w = table.chunk[:2]
        if tile_h * tile_w > self.CACHED_TILE_PIXELS:
            return 0
        per_window = (-(-height // tile_h) + 1) * (-(-width // tile_w) + 1)
        tiles = min(len(table.offsets), windows * per_window)
        return int(tiles * math.prod(table.chunk) * table.page.dtype.itemsize)

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
