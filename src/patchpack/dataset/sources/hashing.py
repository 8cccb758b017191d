"""Source hashes: each file hashed once per process while it stays the same file, and the check
that a file still holds the bytes the catalog hashed."""

from __future__ import annotations

from pathlib import Path

from patchpack.dataset.io import file_sha256
from patchpack.errors import SourceError

_HASHED: dict[tuple[str, int, int, int, int, int], str] = {}


def _stat_key(path: Path) -> tuple[str, int, int, int, int, int]:
    """What identifies a file's bytes without reading them: path, device, inode, size, mtime and
    ctime. A rewrite that restores size and mtime (``os.utime``) still moves the ctime, which no
    process can set back."""
    status = path.stat()
    return (
        str(path),
        status.st_dev,
        status.st_ino,
        status.st_size,
        status.st_mtime_ns,
        status.st_ctime_ns,
    )


def check_file(path: Path, sha256: str, what: str = "source") -> None:
    """Refuse a file whose bytes are not those the catalog hashed (changed, or a stale copy)."""
    try:
        digest = source_sha256(path)
    except OSError as exc:
        raise SourceError(
            f"{path}: cannot read the {what} ({exc.strerror}); every worker needs the source "
            f"and label folders at the same path"
        ) from exc
    if digest != sha256:
        raise SourceError(
            f"{path}: its bytes differ from those the catalog hashed (sha256 {sha256[:16]}...): "
            f"the file changed, or this node holds another copy; give every worker the same "
            f"sources and run again"
        )


def remember_sha256(path: Path, sha256: str) -> None:
    """Record a file's sha256, computed while it was written (a fetched source), for this process."""
    _HASHED[_stat_key(path)] = sha256


def source_sha256(path: Path) -> str:
    """sha256 of a source file, hashed once per process while it stays the same file.

    The catalog hashes every source; the worker checks (before and after decoding) and tissue masks
    in the same process then reuse the hash instead of reading the file again, as long as the file's
    :func:`_stat_key` is unchanged. Another process, or another node, hashes anew.
    """
    key = _stat_key(path)
    if key not in _HASHED:
        _HASHED[key] = file_sha256(path)
    return _HASHED[key]
