"""Windowed access to a slide's sampled level: the windows read while candidates are checked, kept
until their patches are cut, and the caches sized to what a shard needs."""

from __future__ import annotations

import collections

import numpy as np

from patchpack.dataset import pixelstd
from patchpack.dataset.readers import Reader, TiffReader


class Windows:
    """Windowed access to the sampled level of a source too large to decode whole.

    The windows read while checking candidates are kept (up to :attr:`keep_bytes`), since the
    candidates that pass are the patches cut next: each patch is then decoded once. Before a shard
    is cut, :meth:`size_for` sizes this to what the shard needs and the reader's tile cache to what
    this and the earlier shards of the source needed (random patches of one slide share tiles
    across shards), within ``source.cache_mb``: smaller than its working set, a cache read in the
    order it was filled misses on every read.
    """

    KEEP_BYTES = 64 * 2**20

    def __init__(self, reader: Reader, level: int) -> None:
        self.reader = reader
        self.level = level
        self.keep_bytes = self.KEEP_BYTES
        self._kept: collections.OrderedDict[tuple[int, int, int], np.ndarray] = (
            collections.OrderedDict()
        )
        self._bytes = 0
        self._tiles_needed = 0  # the most tile bytes a shard of this source has touched so far

    def size_for(self, windows: int, size: int, channels: int, budget: int) -> None:
        """Size the caches for ``windows`` windows of ``size`` pixels: their bytes kept (at most
        half of ``budget``), and the tiles they touch or an earlier shard's did, whichever is more
        (at most the rest)."""
        self.keep_bytes = min(windows * size * size * channels, budget // 2)
        if isinstance(self.reader, TiffReader):
            needed = self.reader.tile_bytes(self.level, size, size, windows)
            self._tiles_needed = max(self._tiles_needed, needed)
            self.reader.tile_cache_bytes = min(self._tiles_needed, budget - self.keep_bytes)

    def held_bytes(self) -> int:
        """The most bytes this source's caches may hold."""
        tiles = self.reader.tile_cache_bytes if isinstance(self.reader, TiffReader) else 0
        return self.keep_bytes + tiles

    def window(self, y: int, x: int, size: int) -> np.ndarray:
        key = (int(y), int(x), size)
        found = self._kept.pop(key, None)
        if found is not None:
            self._bytes -= found.nbytes
            return found
        window = self.reader.read(self.level, key[0], key[1], size, size)
        self._kept[key] = window
        self._bytes += window.nbytes
        while self._bytes > self.keep_bytes:
            self._bytes -= self._kept.popitem(last=False)[1].nbytes
        return window

    min_std = 0.0  # the threshold the stds are compared with (set by the sampling of a shard)

    def stds(self, ys: np.ndarray, xs: np.ndarray, size: int) -> np.ndarray:
        """Pixel standard deviation of each candidate window, compared with :attr:`min_std`
        exactly as NumPy's float64 std is (see :mod:`patchpack.dataset.pixelstd`); a rejected
        window is not kept, since it is never cut."""
        values = np.empty(len(ys))
        for i, (y, x) in enumerate(zip(ys, xs, strict=True)):
            window = self.window(y, x, size)
            values[i] = pixelstd.stds(window.reshape(1, -1), self.min_std)[0]
            if values[i] < self.min_std:
                self._drop((int(y), int(x), size))
        return values

    def _drop(self, key: tuple[int, int, int]) -> None:
        dropped = self._kept.pop(key, None)
        if dropped is not None:
            self._bytes -= dropped.nbytes
