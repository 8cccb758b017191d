"""One epoch of a split as batches by index: the options that decide it and the thread-safe source
that reads each shuffle group once while it is cached (see :mod:`patchpack.training.loader`)."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from patchpack.training.order import EpochPlan

TARGETS = ("auto", "labels", "masks")


@dataclass(frozen=True)
class BatchOptions:
    """How one epoch of a split is delivered; the order depends on ``seed`` and ``epoch`` only.

    Attributes
    ----------
    batch_size : int
        Patches per batch; the last batch holds the remainder.
    seed, epoch : int, default 0
        What the order is a function of.
    shuffle : bool, default True
        False gives the canonical order (shards in manifest order, rows in order).
    workers : int, default 2
        Threads reading ahead; 0 reads in the calling thread. Changes speed, never the order.
    shuffle_buffer : int, optional
        Patches shuffled together in memory (see the module docstring); default: as many as fill
        16 MiB.
    targets : {"auto", "labels", "masks"}, default "auto"
        What each batch pairs with the images: class labels, int32 (n,), or mask targets, uint8
        (n, h, w) (datasets extracted with ``extract.targets: mask``); ``auto`` takes the masks
        when the dataset has them and the labels otherwise.
    """

    batch_size: int
    seed: int = 0
    epoch: int = 0
    shuffle: bool = True
    workers: int = 2
    shuffle_buffer: int | None = None
    targets: str = "auto"

    def __post_init__(self) -> None:
        size = self.batch_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"batch_size must be a positive integer (received {size!r})")
        if self.workers < 0:
            raise ValueError(f"workers must be 0 or more (received {self.workers!r})")
        if self.targets not in TARGETS:
            raise ValueError(
                f"targets must be one of {', '.join(TARGETS)} (received {self.targets!r})"
            )

    def next_epoch(self) -> BatchOptions:
        """The same options for the following epoch."""
        return dataclasses.replace(self, epoch=self.epoch + 1)


class ShardLike(Protocol):
    """What a split reads a shard through: a :class:`ShardReader`, or a shard that a remote
    source fetches only when it is read (see ``open_dataset(..., remote=...)``)."""

    @property
    def has_masks(self) -> bool: ...

    @property
    def labels(self) -> np.ndarray: ...

    def __len__(self) -> int: ...

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]: ...

    def read_masks(self, start: int, stop: int) -> np.ndarray: ...

    def close(self) -> None: ...


class HasReaders(Protocol):
    """What a batch source reads from: a split's open shards, in manifest order."""

    @property
    def readers(self) -> Sequence[ShardLike]: ...


class _Slot:
    """One cached group: filled once by whichever thread gets there first."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.value: tuple[np.ndarray, np.ndarray] | None = None


class BatchSource:
    """Batches of one epoch plan, by index, thread-safe; reads each group once while it is cached."""

    def __init__(
        self,
        split: HasReaders,
        plan: EpochPlan,
        batch_size: int,
        *,
        cache_groups: int,
        masks: bool = False,
    ) -> None:
        self.split = split
        self.masks = masks
        self.plan = plan
        self.batch_size = batch_size
        self.num_batches = math.ceil(len(plan) / batch_size)
        self._cache: collections.OrderedDict[int, _Slot] = collections.OrderedDict()
        self._capacity = cache_groups
        self._lock = threading.Lock()

    def last_group(self, index: int) -> int:
        """The last group that batch ``index`` takes patches from."""
        hi = min((index + 1) * self.batch_size, len(self.plan))
        return int(np.searchsorted(self.plan.offsets, hi, side="left")) - 1

    def prefetch(self, group: int) -> None:
        """Read group ``group`` into the cache; errors surface when a batch needs the group."""
        with contextlib.suppress(Exception):
            self._group(group)

    def batch(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        lo = index * self.batch_size
        hi = min(lo + self.batch_size, len(self.plan))
        offsets = self.plan.offsets
        first = int(np.searchsorted(offsets, lo, side="right")) - 1
        parts = []
        group = first
        while group < len(self.plan.groups) and offsets[group] < hi:
            images, labels = self._group(group)
            a = max(lo, int(offsets[group])) - int(offsets[group])
            b = min(hi, int(offsets[group + 1])) - int(offsets[group])
            parts.append((images[a:b], labels[a:b]))
            group += 1
        if len(parts) == 1:
            return parts[0]
        return (
            np.concatenate([images for images, _ in parts]),
            np.concatenate([labels for _, labels in parts]),
        )

    def _group(self, group: int) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            slot = self._cache.get(group)
            if slot is None:
                slot = self._cache[group] = _Slot()
            self._cache.move_to_end(group)
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        with slot.lock:
            if slot.value is None:
                slot.value = self._read(group)
            return slot.value

    def _read(self, group: int) -> tuple[np.ndarray, np.ndarray]:
        windows = self.plan.groups[group]
        images_parts: list[Any] = []
        labels_parts: list[Any] = []
        for window in windows:
            reader = self.split.readers[window.shard]
            images, labels = reader.read(window.start, window.stop)
            images_parts.append(images)
            labels_parts.append(
                reader.read_masks(window.start, window.stop) if self.masks else labels
            )
        images = np.concatenate(images_parts) if len(images_parts) > 1 else images_parts[0]
        labels = np.concatenate(labels_parts)
        if not self.masks:
            labels = labels.astype(np.int32, copy=False)
        perm = self.plan.permutation(group)
        if perm is not None:
            images, labels = images[perm], labels[perm]
        return images, labels
