"""Source hashes: each file hashed once per process while it stays the same file, and the check
that a file still holds the bytes the catalog hashed."""

from __future__ import annotations

import time
from pathlib import Path

from patchpack.dataset.io import file_sha256
from patchpack.errors import SourceError

# stat key -> (sha256, when it was computed, in time.time_ns())
_HASHED: dict[tuple[str, int, int, int, int, int], tuple[str, int]] = {}
# A file modified or changed this close to (or after) its hash may have been written again within
# one tick of the file system's clock, unseen by its stat key (git's "racy" index entries): such a
# file is hashed again each time, until its times lie this far behind the hash. The file's times
# are compared with this machine's clock: a network file system whose server clock runs more than
# this behind could make a just-written file look settled (one whose clock runs ahead only costs
# hashes).
RACY_NS = 2 * 10**9


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
    key = _stat_key(path)
    # what fetch put in place by rename, its content addressed by this hash: not racy
    _HASHED[key] = (sha256, max(key[4:]) + RACY_NS + 1)


def source_sha256(path: Path) -> str:
    """sha256 of a source file, hashed once per process while it stays the same file.

    The catalog hashes every source; the worker checks (before and after decoding) and tissue masks
    in the same process then reuse the hash instead of reading the file again, as long as the file's
    :func:`_stat_key` is unchanged and was not racy (see ``RACY_NS``). Another process, or another
    node, hashes anew.
    """
    key = _stat_key(path)
    known = _HASHED.get(key)
    if known is not None and max(key[4:]) < known[1] - RACY_NS:
        return known[0]
    taken = time.time_ns()
    _HASHED[key] = (file_sha256(path), taken)
    return _HASHED[key][0]
