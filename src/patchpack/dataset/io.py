"""The few file and encoding primitives every writer in patchpack shares.

* :func:`atomic_output` is the one way a file reaches its final path: written under a temporary name
  beside it, renamed into place when complete, removed on any failure. Nothing half-written ever sits
  at a final path.
* Two canonical JSON encoders, each deciding different bytes, so they must never be swapped:
  :func:`manifest_json` decides the bytes of ``manifest.json`` (and of the ``class_names`` shard
  attribute); :func:`content_hash_json` is hashed into content sha256s and never written anywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def manifest_json(value: Any) -> str:
    """Canonical JSON as written to disk: sorted keys, one-space indent, trailing newline.

    Equal values give equal text. It decides the bytes of ``manifest.json``, the ``class_names``
    attribute of every shard and the staging digest: changing it changes dataset bytes.
    """
    return json.dumps(value, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def content_hash_json(value: Any) -> str:
    """Compact canonical JSON (sorted keys, no spaces) fed to content hashes, never written to disk."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def temporary_name(path: Path) -> Path:
    """A unique hidden name beside ``path`` that keeps its suffix (``.x.tmp-PID-TOKEN.h5``)."""
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    return path.with_name(f".{path.stem}.tmp-{token}{path.suffix}")


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success rename it to ``path``, on any failure delete it.

    The parent folder is created. The rename is atomic on POSIX and Windows within one file system,
    so a reader sees either the old file, or the complete new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, flushed to the disk before the rename."""
    with atomic_output(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_json_atomic(path: Path, value: Any) -> None:
    """Write ``value`` as :func:`manifest_json` to ``path`` atomically."""
    write_bytes_atomic(path, manifest_json(value).encode("utf-8"))


def file_sha256(path: Path, block: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()
