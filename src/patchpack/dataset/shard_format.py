"""The HDF5 shard format: its constants, the decoded content of a shard and the checks a shard must pass.

A shard is one HDF5 file, ``<split>/shard-NNNNN.h5``, holding ``n`` patches of one split:

==============  ======================  ====================================================
dataset         dtype, shape            meaning
==============  ======================  ====================================================
images          uint8 (n, h, w, c)      the patches, in chunks of about 1 MiB
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

Every dataset has the patch count as its first dimension, so generic HDF5 readers (such as Hugging
Face ``datasets``) see one row per patch. A patch covers ``patch_size * downsample``
level-0 pixels from ``coords``, where ``downsample`` is its level's (recorded per source in the
manifest), so it can always be found again in the slide.

File attributes: ``format_version`` (int), ``class_names`` (a list of strings; format 2 stored one
JSON string), ``split``, ``patch_size``, ``channels``. Nothing in a shard depends on its position among the other shards or on sources that
are not in it, so adding an image to a dataset leaves the bytes of unrelated shards unchanged.

The writer and the reader are :mod:`patchpack.dataset.shards`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np

from patchpack.dataset.io import content_hash_json
from patchpack.errors import ConfigError, IntegrityError

FORMAT_VERSION = 3
# Formats this patchpack reads (and verifies); it writes FORMAT_VERSION only. Format 3: class_names is a
# list of strings, chunks are sized in bytes, each (image, split) draws its patches in segments of
# their own streams, and the fingerprint covers the params.
READABLE_FORMATS = (2, 3)
SHARD_GLOB = "shard-*.h5"
ARRAYS = ("images", "labels", "sources", "source_index", "patch_index", "coords", "levels")


def shard_name(index: int) -> str:
    """The file name of shard number ``index``: ``shard-00003.h5``."""
    return f"shard-{index:05d}.h5"


def class_names_of(value: Any) -> list[str] | None:
    """The ``class_names`` attribute as a list of strings: a list (format 3) or a JSON string
    (format 2); ``None`` when it is neither."""
    value = _plain(value)
    if isinstance(value, str):
        value = _json_or_none(value)
    if isinstance(value, list) and all(isinstance(name, str) for name in value):
        return value
    return None


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
        digests = []
        for row, (label, source, index, (y, x), level) in enumerate(provenance):
            # fed in parts, straight from the arrays: the digest of their concatenation, no copies
            digest = hashlib.blake2b(np.ascontiguousarray(rows[row]).data, digest_size=8)
            if masks is not None:
                digest.update(np.ascontiguousarray(masks[row]).data)
            digest.update(f"|{label}|{source}|{index}|{y}|{x}|{level}".encode())
            digests.append(digest.hexdigest())
        return digests

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
    format_version: int = FORMAT_VERSION

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
            _stored_inside(h5, name, found, path)
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
        if isinstance(sources, h5py.Dataset):
            _stored_inside(h5, "sources", sources, path)
        if (
            not isinstance(sources, h5py.Dataset)
            or sources.shape != (self.patches,)
            or sources.dtype.kind != "S"
        ):
            raise _damaged(path, f"it has no source for each of its {self.patches} patches")
        wanted = {
            "format_version": self.format_version,
            "split": self.split,
            "patch_size": self.patch_size,
            "channels": self.channels,
            "class_names": list(self.class_names),
        }
        for key, value in wanted.items():
            got = _plain(h5.attrs.get(key))
            if key == "class_names" and self.format_version == 2 and isinstance(got, str):
                got = _json_or_none(got)  # format 2 stored the list as one JSON string
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


def _stored_inside(h5: h5py.File, name: str, found: h5py.Dataset, path: Path) -> None:
    """Refuse a dataset whose data lives outside the shard: a soft or external link, external
    raw storage or a virtual dataset would make a reader open other files."""
    if not isinstance(h5.get(name, getlink=True), h5py.HardLink):
        raise _damaged(path, f"{name} is a link, not data stored in the shard")
    plist = found.id.get_create_plist()
    if plist.get_external_count() or plist.get_layout() == h5py.h5d.VIRTUAL:
        raise _damaged(path, f"{name} keeps its data outside the shard")


def _damaged(path: Path, what: str) -> ShardMismatch:
    return ShardMismatch(path, what)


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _plain(value: Any) -> Any:
    """An attribute as plain Python: str for bytes, int for NumPy scalars, a list of str for an
    array of strings (how h5py returns a list attribute)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.dtype.kind in "OSU" and value.ndim == 1:
        return [item.decode() if isinstance(item, bytes) else item for item in value.tolist()]
    return value
