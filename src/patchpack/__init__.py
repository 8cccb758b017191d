"""patchpack: reproducible image-patch datasets in HDF5 shards, shared with DVC.

The public API is framework-free: importing patchpack loads neither Keras nor DVC nor boto3.
"""

from __future__ import annotations

from patchpack._version import __version__
from patchpack.dataset.manifest import Manifest, load_manifest
from patchpack.dataset.shards import ShardData, ShardReader, read_shard
from patchpack.errors import (
    ConfigError,
    IntegrityError,
    ModelError,
    PatchpackError,
    RemoteError,
    SourceError,
)
from patchpack.params import Params, load_params
from patchpack.training.loader import BatchOptions, PatchDataset, Split, open_dataset

__all__ = [
    "BatchOptions",
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
