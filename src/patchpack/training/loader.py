"""Batches of patches streamed from HDF5 shards, as plain numpy (no deep-learning framework)::

    from patchpack import open_dataset

    with open_dataset("data/patches") as dataset:
        train = dataset.split("train")
        for images, labels in train.batches(batch_size=64, seed=0, epoch=0):
            ...  # images: uint8 (n, h, w, c); labels: int32 (n,)

A dataset extracted with ``extract.targets: mask`` yields ``(images, masks)`` instead, masks uint8
(n, h, w) of class numbers (0 = unlabelled, ``i`` = ``class_names[i - 1]``); pass
``targets="labels"`` for the patch labels.

Frameworks get thin adapters beside this module: :mod:`patchpack.training.keras_adapter` wraps a
:class:`Split` as a ``keras.utils.PyDataset``.

How an epoch is shuffled
------------------------
A fully random permutation of the patches would make every patch of a batch cost a whole compressed
HDF5 chunk (``chunk_patches`` rows) to decode, and reading whole shards in order would hand the model
batches of patches from one source image. The loader takes the middle road, in two levels:

1. Each shard is cut into *windows* of ``chunk_patches`` consecutive rows, aligned with the HDF5
   chunks, so a window is read with one contiguous read that decodes whole chunks once. The windows of
   all shards are shuffled together (this also shuffles the order of shards).
2. The shuffled windows are taken in *groups* of ``shuffle_buffer`` patches (rounded down to whole
   windows, at least one; by default as many patches as fill 16 MiB: 16384 patches of 32x32
   grayscale, 106 of 224x224 RGB). A group is read into memory and its patches are permuted there;
   batches are cut from the concatenated groups, and a batch may straddle two groups.

A larger ``shuffle_buffer`` mixes patches from more windows (hence more source images and shards)
into each batch, at the cost of memory: up to ``max(3, workers + 2)`` groups are held at once,
about 64 MiB with the default buffer and two workers. The order is a
function of ``(seed, epoch)`` only, through patchpack's own permutation (a keyed hash, documented
in :mod:`patchpack.training.order`, the same with any numpy or torch version), never of timing
or worker count, and every patch is visited exactly once per epoch, the last batch being partial
when the split size is not a multiple of the batch size. Without ``shuffle`` the order is the
canonical one (shards in manifest order, rows in order), as evaluation wants.

Parallelism: batches are read ahead by threads (``workers``), through an adapter's workers (Keras'
``PyDataset``) or the numpy iterator's own pool. h5py serializes calls into HDF5, so the threads overlap reading with
the model's work rather than decode several chunks at once; nothing is loaded beyond the groups in
the cache, so memory does not grow with the dataset.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from patchpack.dataset.manifest import Manifest, ShardEntry, load_manifest
from patchpack.dataset.shards import ShardReader
from patchpack.engine.output import stable_read
from patchpack.errors import ConfigError, NotPulledError
from patchpack.params import SPLITS
from patchpack.training.batches import BatchOptions, BatchSource, ShardLike
from patchpack.training.order import EpochPlan, Window, plan_epoch

__all__ = [
    "BatchOptions",
    "BatchSource",
    "EpochPlan",
    "PatchDataset",
    "Split",
    "Window",
    "open_dataset",
    "open_split",
    "plan_epoch",
]

DEFAULT_BUFFER_BYTES = 16 * 2**20
DEFAULT_CACHE_GROUPS = 3


class PatchDataset:
    """An extracted dataset folder (``manifest.json`` and shards), opened for reading.

    Use :func:`open_dataset`. Every shard is opened (and checked against the manifest) up front and
    held open, so an extract that replaces the folder later cannot mix its shards into this one.
    Closing the dataset closes them. ``open_shard`` replaces the opening of a shard (a remote source
    returns shards that download when first read); ``on_epoch`` is told each epoch's plan, with the
    split's shard entries, before its batches are read (a remote source fetches ahead in that order).
    """

    def __init__(
        self,
        manifest: Manifest,
        *,
        open_shard: Callable[[ShardEntry], ShardLike] | None = None,
        on_epoch: Callable[[EpochPlan, list[ShardEntry]], None] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.manifest = manifest
        if manifest.folder is None:
            raise ValueError("the manifest was not read from a folder; use open_dataset(folder)")
        self.folder: Path = manifest.folder
        self.class_names = list(manifest.class_names)
        self.patch_size = manifest.patch_size
        self.channels = manifest.channels
        self.chunk_patches = window_rows(manifest)
        if open_shard is None:
            _allow_open_files(len(manifest.shards))
        self._on_close = on_close
        self._splits: dict[str, Split] = {}
        try:
            for name in SPLITS:
                readers: list[ShardLike] = []
                entries = manifest.shards_for(name)
                self._splits[name] = Split(
                    name,
                    readers,
                    chunk_patches=self.chunk_patches,
                    patch_bytes=math.prod(self.input_shape),
                    on_epoch=None if on_epoch is None else _told(on_epoch, entries),
                )
                for entry in entries:
                    readers.append(
                        open_shard(entry)
                        if open_shard is not None
                        else ShardReader(manifest.shard_path(entry), manifest.layout(entry))
                    )
        except BaseException:
            self.close()
            raise

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(patch_size, patch_size, channels)``: the shape of one patch."""
        return (self.patch_size, self.patch_size, self.channels)

    def split(self, name: str) -> Split:
        """The ``train``, ``val`` or ``test`` patches."""
        if name not in self._splits:
            raise ValueError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        return self._splits[name]

    def close(self) -> None:
        for split in self._splits.values():
            split.close()
        if self._on_close is not None:
            self._on_close()

    def __enter__(self) -> PatchDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _told(
    on_epoch: Callable[[EpochPlan, list[ShardEntry]], None], entries: list[ShardEntry]
) -> Callable[[EpochPlan], None]:
    return lambda plan: on_epoch(plan, entries)


def _allow_open_files(shards: int) -> None:
    """Raise the soft limit on open files (up to the hard limit) when the shards need more."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = shards + 256  # headroom for the rest of the process
    if soft != resource.RLIM_INFINITY and soft < wanted:
        limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))


def open_dataset(folder: str | Path) -> PatchDataset:
    """Open the dataset in ``folder`` (``manifest.json`` and ``<split>/shard-NNNNN.h5``).

    Raises
    ------
    IntegrityError
        When the manifest is missing, unreadable or malformed, or a shard does not fit it.
    DatasetChanged
        When an extract replaced the folder while it was being opened: open it again.
    """
    folder = Path(folder)
    with stable_read(folder):
        return PatchDataset(load_manifest(folder))


def open_split(folder: str | Path, name: str) -> Split:
    """Open one split of the dataset in ``folder``: only its shards, so a partial pull is enough.

    Close it with :meth:`Split.close`. Every shard of the split is opened (and checked against the
    manifest) up front, as :func:`open_dataset` does.

    Raises
    ------
    ConfigError
        When ``name`` is not a split (``train``, ``val``, ``test``).
    NotPulledError
        When none of the split's shards is on disk (a partial pull left it out).
    IntegrityError
        When the manifest is missing or malformed, or a shard is missing or does not fit it.
    """
    if name not in SPLITS:
        raise ConfigError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
    folder = Path(folder)
    with stable_read(folder):
        manifest = load_manifest(folder)
        entries = manifest.shards_for(name)
        if entries and not any(manifest.shard_path(e).is_file() for e in entries):
            raise NotPulledError(
                f"{folder}: the {name} split is not pulled (none of its {len(entries)} shards is "
                f"here); run `patchpack pull --split {name}` (or `dvc pull`)"
            )
        _allow_open_files(len(entries))
        readers: list[ShardReader] = []
        try:
            for entry in entries:
                readers.append(ShardReader(manifest.shard_path(entry), manifest.layout(entry)))
        except BaseException:
            for reader in readers:
                reader.close()
            raise
    patch_bytes = manifest.patch_size**2 * manifest.channels
    return Split(name, readers, chunk_patches=window_rows(manifest), patch_bytes=patch_bytes)


def window_rows(manifest: Manifest) -> int:
    """Rows per window of the dataset's shards: the rows of one HDF5 chunk of images."""
    return manifest.params.shards.chunk_rows(manifest.patch_size**2 * manifest.channels)


class Split:
    """The patches of one split, read in batches from shard readers that stay open."""

    def __init__(
        self,
        name: str,
        readers: Sequence[ShardLike],
        *,
        chunk_patches: int = 256,
        patch_bytes: int = 1024,
        on_epoch: Callable[[EpochPlan], None] | None = None,
    ) -> None:
        self.name = name
        self.readers = readers
        self.on_epoch = on_epoch
        self.chunk_patches = chunk_patches
        self.patch_bytes = patch_bytes

    @property
    def has_masks(self) -> bool:
        """Whether the split's shards hold mask targets (``extract.targets: mask``)."""
        return bool(self.readers) and all(reader.has_masks for reader in self.readers)

    @property
    def sizes(self) -> list[int]:
        """Patches in each shard, in canonical shard order."""
        return [len(reader) for reader in self.readers]

    def __len__(self) -> int:
        return sum(self.sizes)

    def num_batches(self, batch_size: int) -> int:
        """Batches per epoch, the last one partial when ``len(self)`` is not a multiple."""
        return math.ceil(len(self) / batch_size)

    def labels(self) -> np.ndarray:
        """All labels in canonical order (what ``shuffle=False`` delivers), int32 of shape (n,)."""
        if not self.readers:
            return np.empty(0, np.int32)
        return np.concatenate([reader.labels for reader in self.readers]).astype(
            np.int32, copy=False
        )

    def plan(
        self,
        *,
        seed: int,
        epoch: int,
        shuffle: bool = True,
        shuffle_buffer: int | None = None,
    ) -> EpochPlan:
        """This split's :class:`EpochPlan` for ``(seed, epoch)``."""
        if shuffle_buffer is None:
            shuffle_buffer = max(1, DEFAULT_BUFFER_BYTES // self.patch_bytes)
        return plan_epoch(
            self.sizes,
            seed=seed,
            epoch=epoch,
            shuffle=shuffle,
            window=self.chunk_patches,
            shuffle_buffer=shuffle_buffer,
        )

    def batches(
        self,
        batch_size: int,
        *,
        seed: int = 0,
        epoch: int = 0,
        shuffle: bool = True,
        workers: int = 2,
        shuffle_buffer: int | None = None,
        targets: str = "auto",
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield one epoch as ``(images, targets)`` batches; the arguments are :class:`BatchOptions`.

        Yields
        ------
        images : ndarray of shape (n, height, width, n_channels), uint8
        targets : ndarray of shape (n,), int32 (labels), or of shape (n, height, width), uint8
            (masks, for a dataset extracted with ``extract.targets: mask``, unless
            ``targets="labels"``)
        """
        options = BatchOptions(batch_size, seed, epoch, shuffle, workers, shuffle_buffer, targets)
        return self.iter_epoch(options)

    def iter_epoch(self, options: BatchOptions) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield the epoch ``options`` describes, read ahead by ``options.workers`` threads."""
        source = self.epoch_source(options)
        if options.workers <= 0:
            for index in range(source.num_batches):
                yield source.batch(index)
            return
        # Threads read whole groups ahead; batches are slices of them, cut here. A thread per batch
        # would cost more in hand-offs than slicing does.
        submitted = 0
        groups = len(source.plan.groups)
        with ThreadPoolExecutor(options.workers, thread_name_prefix="patchpack-loader") as pool:
            for index in range(source.num_batches):
                wanted = min(groups, source.last_group(index) + 1 + options.workers)
                while submitted < wanted:
                    pool.submit(source.prefetch, submitted)
                    submitted += 1
                yield source.batch(index)

    def epoch_source(self, options: BatchOptions) -> BatchSource:
        """Random access to the batches of the epoch ``options`` describes (thread-safe)."""
        plan = self.plan(
            seed=options.seed,
            epoch=options.epoch,
            shuffle=options.shuffle,
            shuffle_buffer=options.shuffle_buffer,
        )
        cache = max(DEFAULT_CACHE_GROUPS, options.workers + 2)
        masks = options.targets == "masks" or (options.targets == "auto" and self.has_masks)
        if masks and not self.has_masks:
            raise ValueError(
                f"the {self.name} split holds no mask targets; extract with extract.targets: mask "
                f"or ask for targets='labels'"
            )
        if self.on_epoch is not None:
            self.on_epoch(plan)
        return BatchSource(self, plan, options.batch_size, cache_groups=cache, masks=masks)

    def close(self) -> None:
        for reader in self.readers:
            reader.close()
