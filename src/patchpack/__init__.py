"""patchpack: reproducible image-patch datasets in HDF5 shards, shared with DVC."""

from __future__ import annotations

__version__ = "0.1.0"

from patchpack.errors import (
    ConfigError,
    IntegrityError,
    ModelError,
    PatchpackError,
    RemoteError,
    SourceError,
)
from patchpack.manifest import Manifest, load_manifest
from patchpack.params import Params, load_params
from patchpack.shards import ShardData, ShardReader, read_shard

_LAZY = {"PatchDataset", "Split", "open_dataset"}  # the loader imports Keras: only on first use


def __getattr__(name: str) -> object:
    if name in _LAZY:
        from patchpack import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'patchpack' has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "IntegrityError",
    "Manifest",
    "ModelError",
    "Params",
    "PatchDataset",
    "PatchpackError",
    "RemoteError",
    "ShardData",
    "ShardReader",
    "SourceError",
    "Split",
    "__version__",
    "load_manifest",
    "load_params",
    "open_dataset",
    "read_shard",
]
