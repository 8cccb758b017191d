"""Deterministic HDF5 shard writer and reader.

A shard is one HDF5 file, ``<split>/shard-NNNNN.h5``, holding ``n`` patches of one split:

==============  ======================  ====================================================
dataset         dtype, shape            meaning
==============  ======================  ====================================================
images          uint8 (n, h, w, c)      the patches, chunked by ``chunk_patches`` rows
labels          int32 (n,)              index into the ``class_names`` attribute
sources         bytes (n,)              id (relative POSIX path, UTF-8) of each patch's source
source_index    int32 (n,)              number of the patch's source among this shard's sources
patch_index     int32 (n,)              the patch's number within its source image
coords          int32 (n, 2)            top-left corner (y, x) of the patch, in level-0 pixels
levels          int32 (n,)              the pyramid level the patch was cut from
masks           uint8 (n, h, w)         with ``extract.targets: mask`` only: the class number
                                        (0 = unlabelled, ``i`` = ``class_names[i - 1]``) under
                                        each pixel, cut at the same coordinates as the images
==============  ======================  ====================================================

Every dataset has the patch count as its first dimension (format 2), so generic HDF5 readers (such
as Hugging Face ``datasets``) see one row per patch. A patch covers ``patch_size * downsample``
level-0 pixels from ``coords``, where ``downsample`` is its level's (recorded per source in the
manifest), so it can always be found again in the slide.

File attributes: ``format_version`` (int), ``class_names`` (JSON list), ``split``, ``patch_size``,
``channels``. Nothing in a shard depends on its position among the other shards or on sources that
are not in it, so adding an image to a dataset leaves the bytes of unrelated shards unchanged.

Byte identity: h5py's default ``libver`` (the earliest), ``track_times=False`` on every dataset, no
``track_order``, fixed chunk shapes and filters, and a fixed creation order. Files are written to a
temporary name beside the final one and renamed when closed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np

from patchpack.dataset.io import content_hash_json, write_bytes_atomic
from patchpack.errors import ConfigError, IntegrityError

FORMAT_VERSION = 2
SHARD_GLOB = "shard-*.h5"
ARRAYS = ("images", "labels", "sources", "source_index", "patch_index", "coords", "levels")


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
    sources : tuple of str, the distinct source ids that ``source_index`` points into
    source_index : ndarray of shape (n_patches,), int32
    patch_index : ndarray of shape (n_patches,), int32
    coords : ndarray of shape (n_patches, 2), int32, top-left (y, x) in level-0 pixels
    attrs : dict of the file attributes
    levels : ndarray of shape (n_patches,), int32, the pyramid level of each patch (default 0)
    masks : ndarray of shape (n_patches, height, width), uint8, or None: segmentation targets
    """

    images: np.ndarray
    labels: np.ndarray
    sources: tuple[str, ...]
    source_index: np.ndarray
    patch_index: np.ndarray
    coords: np.ndarray
    attrs: dict[str, Any]
    levels: np.ndarray = None  # type: ignore[assignment]  # filled with zeros when not given
    masks: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.levels is None:
            object.__setattr__(self, "levels", np.zeros(len(self.labels), np.int32))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def source_of(self, row: int) -> str:
        return self.sources[int(self.source_index[row])]

    def content_sha256(self) -> str:
        """sha256 over the decoded arrays and attributes: equal for equal pixels in any container."""
        digest = hashlib.sha256()
        digest.update(content_hash_json(self.attrs).encode())
        for name in self.arrays():
            array = self._array(name)
            digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
            digest.update(np.ascontiguousarray(array).data)  # the buffer: no copy of the pixels
        return digest.hexdigest()

    def patch_digests(self) -> list[str]:
        """A short digest per patch (pixels, label, source and coordinates), to name the first difference."""
        rows = self.images.reshape(len(self), -1)
        # plain Python values: formatting them is several times faster than NumPy scalars, same text
        provenance = zip(
            self.labels.tolist(),
            self.source_rows(),
            self.patch_index.tolist(),
            self.coords.tolist(),
            self.levels.tolist(),
            strict=True,
        )
        masks = self.masks.reshape(len(self), -1) if self.masks is not None else None
        return [
            hashlib.blake2b(
                rows[row].tobytes()
                + (b"" if masks is None else masks[row].tobytes())
                + f"|{label}|{source}|{index}|{y}|{x}|{level}".encode(),
                digest_size=8,
            ).hexdigest()
            for row, (label, source, index, (y, x), level) in enumerate(provenance)
        ]

    def arrays(self) -> tuple[str, ...]:
        """The names of the datasets this shard holds, in creation order."""
        return ARRAYS if self.masks is None else (*ARRAYS, "masks")

    def source_rows(self) -> list[str]:
        """The source id of every patch, in row order (what the ``sources`` dataset stores)."""
        return [self.sources[int(i)] for i in self.source_index]

    def _array(self, name: str) -> np.ndarray:
        if name == "sources":
            encoded = [source.encode() for source in self.source_rows()]
            return np.array(encoded, dtype=object).astype("S") if encoded else np.empty(0, "S1")
        value: np.ndarray = getattr(self, name)
        return value


@dataclass(frozen=True)
class ShardLayout:
    """What a shard must hold according to its manifest, checked before any array is read.

    A shard may come from someone else (a pulled dataset): its shapes, dtypes, attributes and index
    ranges are checked against these expectations first, so a forged row count or dtype is a one-line
    :class:`IntegrityError`, never a huge allocation or silently wrong data.
    """

    patches: int
    patch_size: int
    channels: int
    split: str
    class_names: tuple[str, ...]
    masks: bool = False

    def arrays(self) -> dict[str, tuple[np.dtype[Any], tuple[int, ...]]]:
        n, side = self.patches, self.patch_size
        int32 = np.dtype(np.int32)
        arrays: dict[str, tuple[np.dtype[Any], tuple[int, ...]]] = {
            "images": (np.dtype(np.uint8), (n, side, side, self.channels)),
            "labels": (int32, (n,)),
            "source_index": (int32, (n,)),
            "patch_index": (int32, (n,)),
            "coords": (int32, (n, 2)),
            "levels": (int32, (n,)),
        }
        if self.masks:
            arrays["masks"] = (np.dtype(np.uint8), (n, side, side))
        return arrays

    def check_file(self, h5: h5py.File, path: Path) -> None:
        """Shapes, dtypes and attributes, from HDF5 metadata only."""
        for name, (dtype, shape) in self.arrays().items():
            found = h5.get(name)
            if not isinstance(found, h5py.Dataset):
                raise _damaged(path, f"it has no {name} dataset")
            if found.dtype != dtype or found.shape != shape:
                raise _damaged(
                    path,
                    f"{name} is {found.dtype} of shape {found.shape}, the manifest says "
                    f"{dtype} of shape {shape}",
                )
        if not self.masks and "masks" in h5:
            raise _damaged(
                path, "it has a masks dataset, but the manifest says extract.targets: none"
            )
        sources = h5.get("sources")
        if (
            not isinstance(sources, h5py.Dataset)
            or sources.shape != (self.patches,)
            or sources.dtype.kind != "S"
        ):
            raise _damaged(path, f"it has no source for each of its {self.patches} patches")
        wanted = {
            "format_version": FORMAT_VERSION,
            "split": self.split,
            "patch_size": self.patch_size,
            "channels": self.channels,
            "class_names": list(self.class_names),
        }
        for key, value in wanted.items():
            got = _plain(h5.attrs.get(key))
            if key == "class_names" and isinstance(got, str):
                got = _json_or_none(got)
            if got != value:
                raise _damaged(path, f"attribute {key} is {got!r}, the manifest says {value!r}")

    def check_values(
        self, labels: np.ndarray, source_index: np.ndarray, sources: int, path: Path
    ) -> None:
        """Labels inside the class list and source indices inside the shard's source list."""
        classes = len(self.class_names)
        if labels.size and (labels.min() < 0 or labels.max() >= classes):
            raise _damaged(
                path,
                f"labels run from {labels.min()} to {labels.max()}, but there are {classes} classes",
            )
        if source_index.size and (source_index.min() < 0 or source_index.max() >= sources):
            raise _damaged(path, f"source_index points outside its {sources} sources")


class ShardMismatch(IntegrityError):
    """A readable shard that does not hold what its manifest says; ``what`` says how."""

    def __init__(self, path: Path, what: str) -> None:
        super().__init__(
            f"{path}: {what}; the shard is damaged or not this dataset's: run `dvc pull` or "
            f"`dvc repro`"
        )
        self.what = what


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


def _damaged(path: Path, what: str) -> ShardMismatch:
    return ShardMismatch(path, what)


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


_memory_files = itertools.count()


def shard_bytes(data: ShardData, *, chunk_patches: int, compression: str, level: int) -> bytes:
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
        chunks = (max(1, min(chunk_patches, n)), *data.images.shape[1:])
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
    chunk_patches: int,
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
            self.class_names: list[str] = json.loads(self._h5.attrs["class_names"])
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


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value
