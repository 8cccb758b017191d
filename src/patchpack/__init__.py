"""patchpack: reproducible image-patch datasets in HDF5 shards, shared with DVC."""

from __future__ import annotations

__version__ = "0.1.0"

from patchpack.errors import ConfigError, IntegrityError, PatchpackError, RemoteError, SourceError
from patchpack.manifest import Manifest, load_manifest
from patchpack.params import Params, load_params
from patchpack.shards import ShardData, ShardReader, read_shard

__all__ = [
    "ConfigError",
    "IntegrityError",
    "Manifest",
    "Params",
    "PatchpackError",
    "RemoteError",
    "ShardData",
    "ShardReader",
    "SourceError",
    "__version__",
    "load_manifest",
    "load_params",
    "read_shard",
]
