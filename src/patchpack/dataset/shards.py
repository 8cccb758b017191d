"""Deterministic HDF5 shard writer and reader.

A shard is one HDF5 file, ``<split>/shard-NNNNN.h5``; its datasets and attributes, and the checks a
shard must pass before it is read, are in :mod:`patchpack.dataset.shard_format` (importable here).

Byte identity: h5py's default ``libver`` (the earliest), ``track_times=False`` on every dataset, no
``track_order``, fixed chunk shapes and filters, and a fixed creation order. Files are written to a
temporary name beside the final one and renamed when closed.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from patchpack.dataset.io import write_bytes_atomic
from patchpack.dataset.shard_format import (
    ARRAYS,
    FORMAT_VERSION,
    READABLE_FORMATS,
    SHARD_GLOB,
    ShardData,
    ShardLayout,
    ShardMismatch,
    _damaged,
    _plain,
    class_names_of,
    compression_options,
    shard_name,
)
from patchpack.errors import IntegrityError
from patchpack.params import CHUNK_BYTES, chunk_rows

__all__ = [
    "ARRAYS",
    "CHUNK_BYTES",
    "FORMAT_VERSION",
    "READABLE_FORMATS",
    "SHARD_GLOB",
    "ShardData",
    "ShardLayout",
    "ShardMismatch",
    "ShardReader",
    "chunk_rows",
    "class_names_of",
    "compression_options",
    "read_shard",
    "shard_bytes",
    "shard_name",
    "write_shard",
]


def _distinct(rows: np.ndarray, index: np.ndarray, path: Path) -> tuple[str, ...]:
    """The distinct source ids, numbered as ``source_index`` numbers them (first appearance)."""
    ids = [value.decode() if isinstance(value, bytes) else str(value) for value in rows]
    if len(ids) != len(index):
        raise _damaged(path, f"it names {len(ids)} sources for {len(index)} patches")
    distinct: dict[int, str] = {}
    for row, number in enumerate(index.tolist()):
        if distinct.setdefault(number, ids[row]) != ids[row]:
            raise _damaged(path, f"row {row}: source_index {number} names two sources")
    if sorted(distinct) != list(range(len(distinct))):
        raise _damaged(path, "source_index skips numbers")
    return tuple(distinct[number] for number in range(len(distinct)))


_memory_files = itertools.count()


def shard_bytes(
    data: ShardData, *, chunk_patches: int | None, compression: str, level: int
) -> bytes:
    """The bytes of the HDF5 file holding ``data``, built in memory (HDF5's core driver).

    HDF5 itself never touches the disk, so a full disk or a file size limit surfaces as an ordinary
    ``OSError`` when the bytes are written, never inside the library. The bytes are those that the
    same calls would write to a file.
    """
    options = compression_options(compression, level)
    name = f"patchpack-shard-{os.getpid()}-{next(_memory_files)}.h5"
    # No chunk cache: every chunk is compressed and placed the moment it is written, so the file's
    # layout cannot depend on the process's cache settings or memory (seen once in a Dask worker,
    # where chunks held in the cache were placed after the small datasets, in other bytes).
    with h5py.File(
        name, "w", driver="core", backing_store=False, rdcc_nbytes=0, rdcc_nslots=1, rdcc_w0=1.0
    ) as h5:
        for key in sorted(data.attrs):
            h5.attrs[key] = data.attrs[key]
        n = len(data)
        rows = chunk_rows(chunk_patches, int(np.prod(data.images.shape[1:])))
        chunks = (max(1, min(rows, n)), *data.images.shape[1:])
        h5.create_dataset("images", data=data.images, chunks=chunks, track_times=False, **options)
        h5.create_dataset("labels", data=data.labels, track_times=False)
        # fixed-length UTF-8 bytes, chunked and compressed like the images: a source id repeats on
        # every row, which compression removes (variable-length strings cannot be compressed)
        ids = data._array("sources")
        sources = {"chunks": chunks[:1], **options} if n else {}
        h5.create_dataset("sources", data=ids, track_times=False, **sources)
        h5.create_dataset("source_index", data=data.source_index, track_times=False)
        h5.create_dataset("patch_index", data=data.patch_index, track_times=False)
        h5.create_dataset("coords", data=data.coords, track_times=False)
        h5.create_dataset("levels", data=data.levels.astype(np.int32), track_times=False)
        if data.masks is not None:
            h5.create_dataset(
                "masks", data=data.masks, chunks=chunks[:3], track_times=False, **options
            )
        h5.flush()
        image: bytes = h5.id.get_file_image()
    return image


def write_shard(
    path: Path,
    data: ShardData,
    *,
    chunk_patches: int | None,
    compression: str,
    level: int,
) -> None:
    """Write ``data`` to ``path`` atomically: built in memory, written beside it, renamed when complete."""
    image = shard_bytes(data, chunk_patches=chunk_patches, compression=compression, level=level)
    write_bytes_atomic(path, image)


def read_shard(path: Path, layout: ShardLayout | None = None) -> ShardData:
    """Read a whole shard into memory, checked against ``layout`` (from the manifest) first.

    Raises
    ------
    IntegrityError
        When the file is missing, truncated, not HDF5, lacks a dataset or does not fit ``layout``.
    """
    try:
        with h5py.File(path, "r") as h5:
            if layout is not None:
                layout.check_file(h5, path)
            attrs = {key: _plain(h5.attrs[key]) for key in sorted(h5.attrs)}
            index = h5["source_index"][()]
            data = ShardData(
                images=h5["images"][()],
                labels=h5["labels"][()],
                sources=_distinct(h5["sources"][()], index, path),
                source_index=index,
                patch_index=h5["patch_index"][()],
                coords=h5["coords"][()],
                attrs=attrs,
                levels=h5["levels"][()],
                masks=h5["masks"][()] if "masks" in h5 else None,
            )
    except (OSError, KeyError, ValueError, TypeError, AttributeError) as exc:
        raise IntegrityError(f"{path}: unreadable shard ({exc}); run patchpack verify") from exc
    if layout is not None:
        layout.check_values(data.labels, data.source_index, len(data.sources), path)
    return data


class ShardReader:
    """Random access to one shard's patches without loading the whole file.

    Use as a context manager, or call :meth:`close`. Reads of contiguous row ranges are fastest: they
    map onto whole HDF5 chunks.
    """

    def __init__(self, path: str | Path, layout: ShardLayout | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise IntegrityError(f"{self.path}: shard is missing; run `dvc pull` or `dvc repro`")
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as exc:
            raise IntegrityError(
                f"{self.path}: unreadable shard ({exc}); run patchpack verify"
            ) from exc
        try:
            if layout is not None:
                layout.check_file(self._h5, self.path)
            self._images = self._h5["images"]
            self._labels: np.ndarray = self._h5["labels"][()]
            names = class_names_of(self._h5.attrs.get("class_names"))
            if names is None:
                raise IntegrityError(
                    f"{self.path}: attribute class_names is not a list of names; run patchpack verify"
                )
            self.class_names: list[str] = names
            if layout is not None:
                index = self._h5["source_index"][()]
                layout.check_values(self._labels, index, self._h5["sources"].shape[0], self.path)
        except IntegrityError:
            self._h5.close()
            raise
        except (OSError, KeyError, ValueError, TypeError) as exc:
            self._h5.close()
            raise IntegrityError(
                f"{self.path}: unreadable shard ({exc}); run patchpack verify"
            ) from exc

    def __len__(self) -> int:
        return int(self._labels.shape[0])

    @property
    def labels(self) -> np.ndarray:
        """ndarray of shape (n_patches,), int32."""
        return self._labels

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Patches ``start:stop`` as ``(images, labels)``; images of shape (n, h, w, c), uint8."""
        return self._images[start:stop], self._labels[start:stop]

    @property
    def has_masks(self) -> bool:
        """Whether the shard holds segmentation targets (``extract.targets: mask``)."""
        return "masks" in self._h5

    def read_masks(self, start: int, stop: int) -> np.ndarray:
        """The mask targets of patches ``start:stop``, uint8 of shape (n, h, w)."""
        if not self.has_masks:
            raise IntegrityError(
                f"{self.path}: the shard holds no masks; extract with extract.targets: mask"
            )
        masks: np.ndarray = self._h5["masks"][start:stop]
        return masks

    def take(self, rows: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Patches at ``rows`` (any order, repeats allowed) as ``(images, labels)``."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return np.empty((0, *self._images.shape[1:]), np.uint8), np.empty(0, np.int32)
        order = np.argsort(rows, kind="stable")
        lo, hi = int(rows[order[0]]), int(rows[order[-1]]) + 1
        block = self._images[lo:hi]
        return block[rows - lo], self._labels[rows]

    def take_masks(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """The mask targets at ``rows`` (as :meth:`take`), uint8 of shape (n, h, w)."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return np.empty((0, *self._images.shape[1:3]), np.uint8)
        lo, hi = int(rows.min()), int(rows.max()) + 1
        taken: np.ndarray = self.read_masks(lo, hi)[rows - lo]
        return taken

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
