"""The output folder's life: one writer at a time, a crash-safe swap, recovery, and change detection.

* **One writer.** ``extract`` holds an exclusive ``flock`` on ``.<name>.lock`` beside the output for
  its whole run; a second writer stops at once with ``another extract (pid N) is writing OUT``.
* **Crash-safe swap.** The complete staging folder replaces the output in one atomic step where the
  platform has one: Linux ``renameat2(RENAME_EXCHANGE)`` swaps the two folders, so at every instant the
  output path holds a complete dataset (the old one, then the new one). Elsewhere the swap is two
  renames (output aside to ``.<name>.old-PID``, staging in), and :func:`recover` restores a leftover
  ``.old`` folder when a crash left no output; every command that reads a dataset runs it first.
* **Readers never see a half-swapped dataset.** A swap replaces the whole folder, so a reader that
  sees the folder's identity (device, inode) change between its start and its end read parts of two
  datasets: it says so (:class:`DatasetChanged`) instead of reporting corruption.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import shutil
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

from patchpack.errors import OutputError, PatchpackError

MANIFEST_NAME = "manifest.json"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


class DatasetChanged(PatchpackError):
    """The dataset folder was replaced (by an extract) while it was being read."""

    def __init__(self, folder: Path) -> None:
        super().__init__(
            f"{folder}: the dataset changed while it was being read (an extract replaced it); "
            f"run the command again"
        )


def lock_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.lock")


@contextlib.contextmanager
def exclusive_writer(out: Path, *, shown: Path | None = None) -> Iterator[None]:
    """Hold the output folder's writer lock, or fail at once naming the process that holds it."""
    import fcntl

    path = lock_path(out)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # never through a link: a planted `.patches.lock -> somefile` would have it overwritten
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OutputError(
                f"{path}: the output lock is a symbolic link, which patchpack never writes "
                f"through; delete the link and run again"
            ) from exc
        raise OutputError(
            f"{path}: cannot create the output lock ({exc.strerror}); choose a writable --out"
        ) from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OutputError(f"{path}: the output lock is not a regular file; delete it and run again")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise OutputError(
                f"another extract (pid {holder}) is writing {shown or out}; wait for it to finish "
                f"or stop it, then run again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock; the file stays, so no two processes race on it


def writer_active(out: Path) -> bool:
    """Whether some process holds ``out``'s writer lock right now."""
    import fcntl

    try:
        fd = os.open(lock_path(out), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def recover(out: Path) -> bool:
    """Restore the dataset a crash left at ``.<name>.old-PID`` when ``out`` is missing.

    Only the two-rename swap (platforms without an atomic exchange) can leave this state. Nothing is
    done while a writer holds the lock: it is in the middle of its swap. Returns whether it restored.
    """
    out = Path(out)
    if out.exists() or not out.parent.is_dir() or writer_active(out):
        return False
    leftovers = sorted(
        (p for p in out.parent.glob(f".{out.name}.old-*") if (p / MANIFEST_NAME).is_file()),
        key=lambda p: p.stat().st_mtime_ns,
    )
    if not leftovers:
        return False
    try:
        os.rename(leftovers[-1], out)
    except OSError:
        return False
    return True


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap the paths ``a`` and ``b`` (Linux ``renameat2``); ``False`` where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    function = getattr(libc, "renameat2", None)
    if function is None:  # glibc before 2.28
        return False
    result = function(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):  # the file system cannot exchange
        return False
    raise OSError(code, os.strerror(code), str(b))


def swap_in(staging: Path, out: Path) -> None:
    """Put the complete ``staging`` folder at ``out``; at no instant is ``out`` without a dataset
    where the platform can exchange atomically. The old output is deleted afterwards."""
    if not out.exists():
        os.rename(staging, out)
        return
    # A neutral name first: after the exchange it holds the old dataset, which no later run may take
    # for its own staged shards (it is deleted as a leftover instead).
    swap = out.with_name(f".{out.name}.swap-{os.getpid()}")
    os.rename(staging, swap)
    if exchange(swap, out):
        shutil.rmtree(swap, ignore_errors=True)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.rename(out, old)  # a crash here leaves no output: recover() restores `old`
    os.rename(swap, out)
    shutil.rmtree(old, ignore_errors=True)


def remove_leftovers(out: Path) -> None:
    """Delete what crashed swaps left beside ``out`` (only while holding the writer lock)."""
    for pattern in (f".{out.name}.swap-*", f".{out.name}.old-*"):
        for path in out.parent.glob(pattern):
            shutil.rmtree(path, ignore_errors=True)


def identity(folder: Path) -> tuple[int, int] | None:
    """The (device, inode) of ``folder``: it changes when a swap replaces the folder."""
    try:
        status = os.stat(folder)
    except OSError:
        return None
    return (status.st_dev, status.st_ino)


@contextlib.contextmanager
def stable_read(folder: Path) -> Iterator[None]:
    """Read ``folder`` inside this block; raise :class:`DatasetChanged` if it was swapped meanwhile.

    Errors raised while it was being swapped are replaced by :class:`DatasetChanged` too: they come
    from reading two datasets at once, not from damage.
    """
    recover(folder)
    before = identity(folder)
    try:
        yield
    except (PatchpackError, OSError):
        # a file that vanished, or one of another dataset, mid-read: the folder was swapped
        if identity(folder) != before:
            raise DatasetChanged(folder) from None
        raise
    if identity(folder) != before:
        raise DatasetChanged(folder)


def ignore_file_size_signal() -> None:
    """Let a file size limit (``ulimit -f``) fail a write with ``EFBIG`` instead of killing the process."""
    import signal

    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def describe_write_error(exc: OSError, where: Path) -> str:
    """One line for an error writing the output: what failed, where, and what to do."""
    path = exc.filename or where
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{path}: no space left on the device; free space or choose another --out"
    if exc.errno == errno.EFBIG:
        return f"{path}: file size limit reached (see `ulimit -f`); raise it or lower shards.target_patches"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{path}: cannot write there ({exc.strerror}); choose a writable --out"
    return f"{path}: cannot write the dataset ({exc.strerror or exc}); check the output folder"
