"""The per-core floor of a slide workload: the primitives it cannot avoid, timed on this machine.

For the patches a dataset holds (their level-0 corners) this times, in this process, on one core:

* decoding every distinct tile they touch once (tifffile's decoder, the imagecodecs codec under it),
* per candidate, the exact pixel sums of the ``min_std`` check (``patchpack.dataset.pixelstd``),
* per patch, cutting it from decoded tiles (a copy), its share of the shard's content sha256 and
  its own blake2b digest,
* the patches in an HDF5 file built in memory, zstd level 3 in chunks of about 1 MiB, and the
  source file's sha256 (the catalog's hash of what it reads).

Their sum is what a single-core extraction with patchpack's checks costs at the least; the
benchmark prints each workload's rate as a fraction of ``patches / floor seconds``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

MIB = 2**20


@dataclasses.dataclass(frozen=True)
class Floor:
    """Seconds of each primitive for ``patches`` patches; :attr:`rate` is the floor in patches/s."""

    patches: int
    tiles: int
    parts: dict[str, float]

    @property
    def seconds(self) -> float:
        return sum(self.parts.values())

    @property
    def rate(self) -> float:
        return self.patches / self.seconds

    def describe(self) -> str:
        shares = ", ".join(
            f"{name} {seconds * 1e3:,.0f} ms" for name, seconds in self.parts.items()
        )
        return (
            f"per-core floor: {self.rate:,.0f} patches/s ({self.patches} patches, {self.tiles} "
            f"distinct tiles; {shares})"
        )


def fastest(func: Callable[[], object], repeats: int = 3) -> float:
    """The fastest of ``repeats`` calls of ``func``, seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best


def measure_floor(slide: Path, corners: np.ndarray, patches: np.ndarray, candidates: int) -> Floor:
    """The floor of cutting ``patches`` (shape (n, size, size, 3), the pixels a dataset holds) at
    level-0 ``corners`` (shape (n, 2), (y, x)) from ``slide``, with ``candidates`` windows checked
    for ``min_std``."""
    decode_seconds, tiles = tile_decode(slide, corners, patches.shape[1])
    return Floor(
        patches=len(corners),
        tiles=tiles,
        parts={
            "tile decode": decode_seconds,
            **per_patch(patches, candidates),
            "file sha256": fastest(lambda: _file_sha256(slide)),
        },
    )


def tile_decode(slide: Path, corners: np.ndarray, size: int) -> tuple[float, int]:
    """Seconds to decode, once each, the level-0 tiles the patches touch; and how many there are."""
    import tifffile

    with tifffile.TiffFile(slide) as tif:
        page = tif.series[0].levels[0].keyframe
        tile_h, tile_w = int(page.tilelength), int(page.tilewidth)
        across = -(-int(page.imagewidth) // tile_w)
        needed = {
            (y // tile_h + down) * across + x // tile_w + right
            for y, x in corners.tolist()
            for down in range((y + size - 1) // tile_h - y // tile_h + 1)
            for right in range((x + size - 1) // tile_w - x // tile_w + 1)
        }
        stored = []
        for index in sorted(needed):
            tif.filehandle.seek(page.dataoffsets[index])
            stored.append((index, tif.filehandle.read(page.databytecounts[index])))

        def decode() -> None:
            for index, data in stored:
                page.decode(data, index, jpegtables=page.jpegtables, _fullsize=True)

        return fastest(decode), len(stored)


def per_patch(patches: np.ndarray, candidates: int) -> dict[str, float]:
    """Seconds of the per-patch primitives for ``patches`` (shape (n, size, size, 3))."""
    import h5py
    import hdf5plugin

    from patchpack.dataset import pixelstd

    n, size = patches.shape[:2]
    mosaic = np.concatenate([np.concatenate([patches[0], patches[-1]])] * 2, axis=1)
    target = np.empty_like(patches)

    def cut() -> None:
        for i in range(n):
            target[i] = mosaic[i % size : i % size + size, :size]

    def check() -> None:
        for i in range(candidates):
            pixelstd.exact_sums(patches[i % n].reshape(1, -1))

    def digests() -> None:
        hashlib.sha256(patches.data).hexdigest()
        for i in range(n):
            hashlib.blake2b(patches[i].data, digest_size=8).hexdigest()

    rows = max(1, MIB // patches[0].nbytes)  # chunks of about 1 MiB

    def store() -> None:
        with h5py.File("floor.h5", "w", driver="core", backing_store=False) as h5:
            h5.create_dataset(
                "images", data=patches, chunks=(rows, *patches.shape[1:]), **hdf5plugin.Zstd(3)
            )
            h5.flush()
            h5.id.get_file_image()

    return {
        "cut": fastest(cut),
        "std sums": fastest(check),
        "hashes": fastest(digests),
        "zstd-3 HDF5": fastest(store),
    }


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(8 * MIB):
            digest.update(block)
    return digest.hexdigest()
