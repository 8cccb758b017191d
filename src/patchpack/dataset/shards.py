"""Deterministic HDF5 shard writer and reader.

A shard is one HDF5 file, ``<split>/shard-NNNNN.h5``, holding ``n`` patches of one split:

==============  ======================  ====================================================
dataset         dtype, shape            meaning
==============  ======================  ====================================================
images          uint8 (n, h, w, c)      the patches, chunked by ``chunk_patches`` rows
labels          int32 (n,)              index into the ``class_names`` attribute
sources         UTF-8 string (k,)       ids (relative POSIX paths) of this shard's sources
source_index    int32 (n,)              index into ``sources``
patch_index     int32 (n,)              the patch's number within its source image
coords          int32 (n, 2)            top-left corner (y, x) of the patch in its source
==============  ======================  ====================================================

File attributes: ``format_version`` (int), ``class_names`` (JSON list), ``split``, ``patch_size``,
``channels``. Nothing in a shard depends on its position among the other shards or on sources that
are not in it, so adding an image to a dataset leaves the bytes of unrelated shards unchanged.

Byte identity: h5py's default ``libver`` (the earliest), ``track_times=False`` on every dataset, no
``track_order``, fixed chunk shapes and filters, and a fixed creation order. Files are written to a
temporary name beside the final one and renamed when closed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np

from patchpack.dataset.io import atomic_output, content_hash_json
from patchpack.errors import ConfigError, IntegrityError

FORMAT_VERSION = 1
SHARD_GLOB = "shard-*.h5"
ARRAYS = ("images", "labels", "sources", "source_index", "patch_index", "coords")
_STRING = h5py.string_dtype("utf-8")


def shard_name(index: int) -> str:
    """The file name of shard number ``index``: ``shard-00003.h5``."""
    return f"shard-{index:05d}.h5"


def compression_options(compression: str, level: int) -> dict[str, Any]:
    """h5py ``create_dataset`` keywords for a compression name from params.yaml."""
    if compression == "zstd":
        return dict(hdf5plugin.Zstd(clevel=level))
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": level}
    if compression == "none":
        return {}
    raise ConfigError(
        f"unknown compression {compression!r}; choose one of zstd, gzip, none in shards.compression"
    )


@dataclass(frozen=True)
class ShardData:
    """The decoded content of one shard.

    Attributes
    ----------
    images : ndarray of shape (n_patches, height, width, n_channels), uint8
    labels : ndarray of shape (n_patches,), int32
    sources : tuple of str, the source ids that ``source_index`` points into
    source_index : ndarray of shape (n_patches,), int32
    patch_index : ndarray of shape (n_patches,), int32
    coords : ndarray of shape (n_patches, 2), int32, top-left (y, x)
    attrs : dict of the file attributes
    """

    images: np.ndarray
    labels: np.ndarray
    sources: tuple[str, ...]
    source_index: np.ndarray
    patch_index: np.ndarray
    coords: np.ndarray
    attrs: dict[str, Any]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def source_of(self, row: int) -> str:
        return self.sources[int(self.source_index[row])]

    def content_sha256(self) -> str:
        """sha256 over the decoded arrays and attributes: equal for equal pixels in any container."""
        digest = hashlib.sha256()
        digest.update(content_hash_json(self.attrs).encode())
        for name in ARRAYS:
            array = self._array(name)
            digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()

    def patch_digests(self) -> list[str]:
        """A short digest per patch (pixels, label, source and coordinates), to name the first difference."""
        rows = self.images.reshape(len(self), -1)
        return [
            hashlib.blake2b(
                rows[row].tobytes()
                + f"|{self.labels[row]}|{self.source_of(row)}|{self.patch_index[row]}"
                f"|{self.coords[row, 0]}|{self.coords[row, 1]}".encode(),
                digest_size=8,
            ).hexdigest()
            for row in range(len(self))
        ]

    def _array(self, name: str) -> np.ndarray:
        if name == "sources":
            return np.array([source.encode() for source in self.sources], dtype=object).astype("S")
        value: np.ndarray = getattr(self, name)
        return value


def write_shard(
    path: Path,
    data: ShardData,
    *,
    chunk_patches: int,
    compression: str,
    level: int,
) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file beside it, renamed when complete."""
    options = compression_options(compression, level)
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as h5:
        for key in sorted(data.attrs):
            h5.attrs[key] = data.attrs[key]
        n = len(data)
        chunks = (max(1, min(chunk_patches, n)), *data.images.shape[1:])
        h5.create_dataset("images", data=data.images, chunks=chunks, track_times=False, **options)
        h5.create_dataset("labels", data=data.labels, track_times=False)
        h5.create_dataset("sources", data=list(data.sources), dtype=_STRING, track_times=False)
        h5.create_dataset("source_index", data=data.source_index, track_times=False)
        h5.create_dataset("patch_index", data=data.patch_index, track_times=False)
        h5.create_dataset("coords", data=data.coords, track_times=False)


def read_shard(path: Path) -> ShardData:
    """Read a whole shard into memory.

    Raises
    ------
    IntegrityError
        When the file is missing, truncated, not HDF5 or lacks a dataset.
    """
    try:
        with h5py.File(path, "r") as h5:
            attrs = {key: _plain(h5.attrs[key]) for key in sorted(h5.attrs)}
            return ShardData(
                images=h5["images"][()],
                labels=h5["labels"][()],
                sources=tuple(value.decode() for value in h5["sources"][()]),
                source_index=h5["source_index"][()],
                patch_index=h5["patch_index"][()],
                coords=h5["coords"][()],
                attrs=attrs,
            )
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise IntegrityError(f"{path}: unreadable shard ({exc}); run patchpack verify") from exc


class ShardReader:
    """Random access to one shard's patches without loading the whole file.

    Use as a context manager, or call :meth:`close`. Reads of contiguous row ranges are fastest: they
    map onto whole HDF5 chunks.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._h5 = h5py.File(self.path, "r")
            self._images = self._h5["images"]
            self._labels: np.ndarray = self._h5["labels"][()]
        except (OSError, KeyError) as exc:
            raise IntegrityError(
                f"{self.path}: unreadable shard ({exc}); run patchpack verify"
            ) from exc
        self.class_names: list[str] = json.loads(self._h5.attrs["class_names"])

    def __len__(self) -> int:
        return int(self._labels.shape[0])

    @property
    def labels(self) -> np.ndarray:
        """ndarray of shape (n_patches,), int32."""
        return self._labels

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Patches ``start:stop`` as ``(images, labels)``; images of shape (n, h, w, c), uint8."""
        return self._images[start:stop], self._labels[start:stop]

    def take(self, rows: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Patches at ``rows`` (any order, repeats allowed) as ``(images, labels)``."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return np.empty((0, *self._images.shape[1:]), np.uint8), np.empty(0, np.int32)
        order = np.argsort(rows, kind="stable")
        lo, hi = int(rows[order[0]]), int(rows[order[-1]]) + 1
        block = self._images[lo:hi]
        return block[rows - lo], self._labels[rows]

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value
