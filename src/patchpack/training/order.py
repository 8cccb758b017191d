"""The order of an epoch: patchpack's own permutation and the plan of windows and groups it drives.

Every loader (the numpy iterator, the Keras adapter, the PyTorch adapter) takes its order from here,
so one ``(seed, epoch)`` gives one order in every framework, with any numpy or torch version.

The permutation
---------------
Neither numpy nor torch promises to keep its shuffling algorithm across versions, so the order is
computed with an algorithm of patchpack's own, built on ``hashlib`` (a keyed-hash sort)::

    key   = b"patchpack-permutation-1\\0" + JSON [stream, seed, epoch, group]
            (no spaces: "[0,5,2,0]"; ``group`` is 0 for the window order)
    words = SHAKE-256(key), its first 8 * n bytes read as n little-endian uint64 words
    order = the indices 0 .. n-1 sorted by (word, index)

SHAKE-256 is fixed by FIPS 202 and a sort by ``(word, index)`` has exactly one answer, so the
permutation is the same on every machine, Python, numpy or torch version. Stream 0 orders the
windows of an epoch and stream 1 the patches inside group ``group`` (see
:mod:`patchpack.training.loader` for windows and groups). Changing this algorithm changes every
training order: the tests keep a golden list of patch digests so such a change cannot go unnoticed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

PERMUTATION_KEY = b"patchpack-permutation-1\0"
WINDOW_STREAM = 0
GROUP_STREAM = 1


def permutation(n: int, *, stream: int, seed: int, epoch: int, group: int = 0) -> np.ndarray:
    """patchpack's permutation of ``range(n)`` for one key (see the module docstring).

    Returns
    -------
    ndarray of shape (n,), int64
        Every index in ``range(n)`` exactly once.
    """
    if n < 0:
        raise ValueError(f"n must be 0 or more (received {n})")
    fields = [int(stream), int(seed), int(epoch), int(group)]
    key = PERMUTATION_KEY + json.dumps(fields, separators=(",", ":")).encode()
    words = np.frombuffer(hashlib.shake_256(key).digest(8 * n), dtype="<u8")
    # a stable sort breaks ties between equal words by index: one answer, whatever the sort algorithm
    return np.argsort(words, kind="stable").astype(np.int64, copy=False)


class Window(NamedTuple):
    """Rows ``start:stop`` of shard number ``shard`` (an index into the split's shard list)."""

    shard: int
    start: int
    stop: int


@dataclass(frozen=True)
class EpochPlan:
    """The order of one epoch, computed without reading pixels.

    Attributes
    ----------
    groups : tuple of tuple of Window
        The windows of each group, in reading order.
    offsets : ndarray of shape (n_groups + 1,), int64
        Position in the epoch's stream of each group's first patch; the last entry is the total.
    seed, epoch : int
        What the order is a function of.
    shuffle : bool
        Whether windows and the patches within a group are permuted.
    """

    groups: tuple[tuple[Window, ...], ...]
    offsets: np.ndarray
    seed: int
    epoch: int
    shuffle: bool

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def permutation(self, group: int) -> np.ndarray | None:
        """How group ``group``'s patches are permuted once read (``None``: kept in order)."""
        if not self.shuffle:
            return None
        size = int(self.offsets[group + 1] - self.offsets[group])
        return permutation(size, stream=GROUP_STREAM, seed=self.seed, epoch=self.epoch, group=group)

    def order(self) -> list[tuple[int, int]]:
        """Every patch of the epoch as ``(shard, row)``, in the order batches deliver them."""
        result: list[tuple[int, int]] = []
        for index, group in enumerate(self.groups):
            rows = [(w.shard, row) for w in group for row in range(w.start, w.stop)]
            perm = self.permutation(index)
            result += rows if perm is None else [rows[i] for i in perm]
        return result


def plan_epoch(
    sizes: Sequence[int],
    *,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    window: int = 256,
    shuffle_buffer: int = 1024,
) -> EpochPlan:
    """Plan an epoch over shards of ``sizes`` patches (see :mod:`patchpack.training.loader`).

    Pure and cheap: no pixels are read.

    Parameters
    ----------
    sizes : sequence of int
        Patches in each shard, in canonical shard order.
    seed, epoch : int
        The order is a function of these two only.
    shuffle : bool, default True
        False gives the canonical order: shards in order, rows in order.
    window : int, default 256
        Rows per window: the shards' ``chunk_patches``, so a window decodes whole chunks.
    shuffle_buffer : int, default 1024
        Patches per group (rounded down to whole windows, at least one) permuted in memory.
    """
    if window < 1 or shuffle_buffer < 1:
        raise ValueError(
            f"window and shuffle_buffer must be at least 1 (received {window}, {shuffle_buffer})"
        )
    windows = [
        Window(shard, start, min(start + window, size))
        for shard, size in enumerate(sizes)
        for start in range(0, size, window)
    ]
    if shuffle:
        perm = permutation(len(windows), stream=WINDOW_STREAM, seed=seed, epoch=epoch)
        windows = [windows[i] for i in perm]
    per_group = max(1, shuffle_buffer // window)
    groups = tuple(tuple(windows[i : i + per_group]) for i in range(0, len(windows), per_group))
    sizes_of_groups = [sum(w.stop - w.start for w in group) for group in groups]
    offsets = np.concatenate([[0], np.cumsum(sizes_of_groups, dtype=np.int64)]).astype(np.int64)
    return EpochPlan(groups=groups, offsets=offsets, seed=seed, epoch=epoch, shuffle=shuffle)
