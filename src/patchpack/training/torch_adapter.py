"""A split as a PyTorch map-style ``Dataset`` of batches, in exactly the Keras adapter's order.

Nothing but :mod:`patchpack.torch` imports this module, so ``import patchpack`` never loads torch::

    from patchpack.torch import dataloader

    train = dataloader("data/patches", "train", batch_size=64, seed=0, num_workers=2)
    for epoch in range(10):
        train.set_epoch(epoch)
        for images, labels in train:  # images: uint8 (n, h, w, c); labels: int64 (n,)
            ...

Why batches, not patches: the loader reads whole HDF5 chunks and permutes them in memory (see
:mod:`patchpack.training.loader`), so the unit a worker serves is a batch of the epoch's plan, cut
exactly where :class:`~patchpack.training.keras_adapter.ShardSequence` cuts it. The sampler yields
``(epoch, batch)`` keys, or with workers ``(epoch, first, count)`` keys for runs of consecutive
batches (about a shuffle group each, so a worker decodes mostly its own groups); the
``DataLoader`` runs with ``batch_size=None`` (the dataset batches), hands the keys to its workers
in turn and returns their results in the sampler's order, so ``num_workers`` 0, 2 or 4 give the
same batches. Workers send numpy arrays, which the main process turns into tensors without a copy:
for small batches that is several times faster than tensors moved through shared memory. A worker
opens its own HDF5 files the first time it serves a batch (h5py handles do not survive a fork),
and again if it finds itself in another process than the one that opened them.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from patchpack.training.loader import BatchOptions, BatchSource, Split, open_split

Key = tuple[int, ...]  # (epoch, batch), or (epoch, first batch, count) for a run of batches
Batch = tuple[np.ndarray, np.ndarray]
Tensors = tuple[torch.Tensor, torch.Tensor]


class ShardBatches(Dataset[Any]):
    """Batch ``batch`` of epoch ``epoch`` of one split, at key ``(epoch, batch)``; the ``count``
    batches from ``first`` as a list at key ``(epoch, first, count)``.

    Parameters
    ----------
    folder : path
        The dataset folder (``manifest.json`` and the shards).
    split : {"train", "val", "test"}
    options : BatchOptions
        Batch size, seed, shuffle, shuffle buffer and targets; ``options.epoch`` is the epoch of a
        plain integer key. ``options.workers`` is not used: the ``DataLoader``'s workers read.

    Items are numpy arrays ``(images, targets)``: images uint8 of shape (n, height, width,
    n_channels), targets int64 labels of shape (n,) or, for mask targets, uint8 of shape
    (n, height, width). :class:`PatchLoader` makes them tensors in the main process: numpy arrays
    cross from a worker through its pipe several times faster than tensors through shared memory
    (about 1 ms per tensor), for the small batches of small patches.

    Raises
    ------
    NotPulledError, IntegrityError, ConfigError
        As :func:`~patchpack.training.loader.open_split`, when the dataset is built (the split is
        opened once to check it, and closed before any worker starts).
    """

    def __init__(self, folder: str | Path, split: str, options: BatchOptions) -> None:
        self.folder = Path(folder)
        self.split = split
        self.options = options
        opened = open_split(self.folder, split)
        try:
            self.num_batches = opened.num_batches(options.batch_size)
            plan = opened.epoch_source(options).plan  # checks the targets against the split too
            self.group_patches = int(np.diff(plan.offsets).max(initial=0))
        finally:
            opened.close()
        self._opened: tuple[int, Split] | None = None
        self._sources: dict[int, BatchSource] = {}

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, key: Key | int) -> Batch | list[Batch]:
        if not isinstance(key, tuple):
            return self.batch(self.options.epoch, key)
        if len(key) == 3:
            epoch, first, count = key
            return [self.batch(epoch, index) for index in range(first, first + count)]
        epoch, index = key
        return self.batch(epoch, index)

    def batch(self, epoch: int, index: int) -> Batch:
        """Batch ``index`` of epoch ``epoch``, as numpy arrays."""
        if not 0 <= index < self.num_batches:
            raise IndexError(f"batch {index} out of range (0..{self.num_batches - 1})")
        images, targets = self._source(int(epoch)).batch(index)
        # The images are a view of a group in this epoch's cache, whose rows are each served once
        # an epoch, so changing them in place touches no other batch; a worker pickles only the
        # view's bytes.
        labels = targets.astype(np.int64) if targets.dtype.kind == "i" else targets
        return images, labels

    def _source(self, epoch: int) -> BatchSource:
        split = self._open()
        source = self._sources.get(epoch)
        if source is None:
            options = dataclasses.replace(self.options, epoch=epoch, workers=0)
            # keep the previous epoch's source: its last batches may still be in flight
            self._sources = {k: v for k, v in self._sources.items() if k == epoch - 1}
            source = self._sources[epoch] = split.epoch_source(options)
        return source

    def _open(self) -> Split:
        pid = os.getpid()
        if self._opened is None or self._opened[0] != pid:
            # handles opened by another process (before a fork) are left alone, never used
            self._sources = {}
            self._opened = (pid, open_split(self.folder, self.split))
        return self._opened[1]

    def close(self) -> None:
        """Close this process's shard files (a later batch opens them again)."""
        if self._opened is not None and self._opened[0] == os.getpid():
            self._opened[1].close()
        self._opened, self._sources = None, {}

    def __getstate__(self) -> dict[str, Any]:
        # a worker started by spawn or forkserver gets the recipe, not the open files
        state = self.__dict__.copy()
        state["_opened"], state["_sources"] = None, {}
        return state


class EpochSampler(Sampler[Key]):
    """The keys of the current epoch: ``(epoch, 0) .. (epoch, n - 1)``, or with ``per_key`` above 1
    runs ``(epoch, first, count)`` of ``per_key`` batches; :meth:`set_epoch` moves it."""

    def __init__(self, batches: ShardBatches, *, per_key: int = 1) -> None:
        self.num_batches = len(batches)
        self.epoch = batches.options.epoch
        self.per_key = per_key

    def set_epoch(self, epoch: int) -> None:
        """Deliver epoch ``epoch`` next (as ``DistributedSampler.set_epoch`` does)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.num_batches / self.per_key)

    def __iter__(self) -> Iterator[Key]:
        if self.per_key == 1:
            return ((self.epoch, index) for index in range(self.num_batches))
        return (
            (self.epoch, first, min(self.per_key, self.num_batches - first))
            for first in range(0, self.num_batches, self.per_key)
        )


class PatchLoader(DataLoader[Any]):
    """A ``DataLoader`` over :class:`ShardBatches` that yields ``(images, targets)`` tensors, made
    from its workers' numpy batches without a copy (pinned when ``pin_memory`` is set); runs of
    batches are delivered one batch at a time."""

    def __init__(self, dataset: ShardBatches, **options: Any) -> None:
        options.setdefault("collate_fn", _keep)
        super().__init__(dataset, **options)

    def set_epoch(self, epoch: int) -> None:
        """Deliver epoch ``epoch`` next (the sampler's :meth:`EpochSampler.set_epoch`)."""
        sampler = self.sampler
        if not isinstance(sampler, EpochSampler):
            raise TypeError("set_epoch needs the EpochSampler that dataloader() sets")
        sampler.set_epoch(epoch)

    def __len__(self) -> int:
        """Batches per epoch (not keys: a key may stand for a run of batches)."""
        dataset = self.dataset
        return len(dataset) if isinstance(dataset, ShardBatches) else super().__len__()

    def __iter__(self) -> Iterator[Tensors]:  # type: ignore[override]  # tensors, not numpy
        items = super().__iter__() if self.num_workers else self._in_this_process()
        for item in items:
            for images, targets in item if isinstance(item, list) else [item]:
                pair = _tensor(images), _tensor(targets)
                yield (pair[0].pin_memory(), pair[1].pin_memory()) if self.pin_memory else pair

    def _in_this_process(self) -> Iterator[Any]:
        """Without workers: the sampler's items, read here. The same items as the ``DataLoader``
        machinery gives, without its per-batch bookkeeping, which costs as much as reading a
        batch of small patches."""
        dataset, collate = self.dataset, self.collate_fn
        return (collate(dataset[key]) for key in self.sampler)


def batches_per_key(batches: ShardBatches, workers: int) -> int:
    """Batches a worker serves per key: one with no workers; else about a group's worth (so a
    worker decodes its own groups, not every group, and sends one message for them), but no more
    than leaves each worker four keys an epoch."""
    if workers <= 0:
        return 1
    per_group = math.ceil(batches.group_patches / batches.options.batch_size)
    return max(1, min(per_group, math.ceil(len(batches) / (4 * workers))))


def dataloader(
    folder: str | Path,
    split: str = "train",
    *,
    batch_size: int,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = True,
    shuffle_buffer: int | None = None,
    targets: str = "auto",
    **loader_options: Any,
) -> PatchLoader:
    """A :class:`PatchLoader` over :class:`ShardBatches` with an :class:`EpochSampler`.

    ``loader_options`` go to ``DataLoader`` (``num_workers``, ``pin_memory``,
    ``persistent_workers``, ``prefetch_factor``...); ``batch_size`` and ``sampler`` are set here.
    Call ``loader.set_epoch(epoch)`` before each epoch. Batches are ``(images, targets)`` tensors:
    images uint8 of shape (n, height, width, n_channels), targets int64 labels of shape (n,) (or
    uint8 masks of shape (n, height, width)).
    """
    for taken in ("sampler", "batch_sampler", "shuffle", "collate_fn"):
        if taken in loader_options:
            raise TypeError(
                f"dataloader() sets {taken} itself; the order comes from seed and epoch"
            )
    options = BatchOptions(
        batch_size,
        seed=seed,
        epoch=epoch,
        shuffle=shuffle,
        workers=0,
        shuffle_buffer=shuffle_buffer,
        targets=targets,
    )
    batches = ShardBatches(folder, split, options)
    per_key = batches_per_key(batches, int(loader_options.get("num_workers", 0)))
    sampler = EpochSampler(batches, per_key=per_key)
    return PatchLoader(batches, batch_size=None, sampler=sampler, **loader_options)


def _tensor(array: Any) -> torch.Tensor:
    return torch.from_numpy(array) if isinstance(array, np.ndarray) else torch.as_tensor(array)


def _keep(batch: Any) -> Any:
    """The dataset already batches: pass its numpy arrays through as they are (the default would
    make tensors in the worker, and a list of the tuple)."""
    return batch
