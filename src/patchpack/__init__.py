"""patchpack: reproducible image-patch datasets in HDF5 shards, shared with DVC.

The public API is framework-free: importing patchpack loads neither Keras nor DVC nor boto3.
"""

from __future__ import annotations

from pathlib import Path

from patchpack._version import __version__
from patchpack.dataset.manifest import Manifest, load_manifest
from patchpack.dataset.shards import ShardData, ShardReader, read_shard
from patchpack.errors import (
    ConfigError,
    IntegrityError,
    ModelError,
    NotPulledError,
    PatchpackError,
    RemoteError,
    SourceError,
)
from patchpack.params import Params, load_params
from patchpack.training import loader as _loader
from patchpack.training.loader import BatchOptions, PatchDataset, Split, open_split


def open_dataset(
    folder: str | Path = "data/patches",
    *,
    remote: str | bool | None = None,
    repo: str | None = None,
    rev: str | None = None,
    lock: str | Path | None = None,
    cache_dir: str | Path | None = None,
    cache_size: str | int = 2 << 30,
) -> PatchDataset:
    """Open the dataset in ``folder``; or, with ``remote``, ``repo``, ``rev`` or ``lock``, read it
    straight from its DVC remote without a pull (see :mod:`patchpack.sharing.remote_read`).

    Remotely, ``folder`` is the dataset's path in its project as ``dvc.lock`` names it; ``remote``
    is a DVC remote name or ``s3://`` URL (``True``: the default remote), ``repo`` a repository
    path or git URL, ``rev`` a git rev of it, ``lock`` a ``dvc.lock`` file. Shards download on
    demand into ``cache_dir`` (default ``~/.cache/patchpack/remote``), at most ``cache_size`` bytes
    of them (an int, or ``"512M"``, ``"2G"``), each checked against the manifest's sha256 first.
    """
    if not remote and repo is None and rev is None and lock is None:
        return _loader.open_dataset(folder)
    from patchpack.sharing.remote_read import RemoteLocation, open_remote

    location = RemoteLocation(
        data=Path(folder).as_posix(),
        remote=remote if isinstance(remote, str) else None,
        repo=repo,
        rev=rev,
        lock=None if lock is None else Path(lock),
    )
    source = open_remote(location, cache_dir=cache_dir, cache_size=cache_size)
    try:
        return PatchDataset(
            source.manifest,
            open_shard=source.shard,
            on_epoch=source.read_ahead,
            on_close=source.close,
        )
    except BaseException:
        source.close()
        raise


__all__ = [
    "BatchOptions",
    "ConfigError",
    "IntegrityError",
    "Manifest",
    "ModelError",
    "NotPulledError",
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
    "open_split",
    "read_shard",
]
