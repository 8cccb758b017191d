"""A bounded local cache of shards fetched on demand from a DVC remote, each checked before use.

A shard arrives from the remote's content-addressed store under the md5 that the committed listing
names (checked while it streams, see :mod:`patchpack.sharing.objects`), lands at a temporary name,
and is hashed again with sha256 against the manifest's entry: only a shard that passes both reaches
its final name and is opened. A shard already in the cache folder from an earlier run is hashed the
same way before its first use, so a file changed on disk is fetched again rather than read.

The cache holds at most ``bound`` bytes of shards, plus the one being downloaded: downloads happen
one at a time, and after each the least recently used shards are evicted (closed and deleted) until
the total is back under the bound. A shard being read is never evicted; a download waits for such
reads to end when only they stand above the bound. :meth:`ShardCache.prefetch` downloads the next
few shards of an epoch's order in a background thread while the current ones are read.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from patchpack.dataset.io import file_sha256
from patchpack.dataset.manifest import Manifest, ShardEntry
from patchpack.dataset.shards import ShardReader
from patchpack.errors import ConfigError, IntegrityError

DEFAULT_PREFETCH = 2  # shards downloaded ahead of the one being read


@dataclass
class _Held:
    """One shard in the cache: its file, size, open reader and how many reads use it now."""

    path: Path
    size: int
    reader: ShardReader | None = None
    pins: int = 0
    checked: bool = False


def _hold_folder(folder: Path) -> Any:
    """An exclusive lock on the cache folder for this cache's life: another process evicting or
    adopting its files would delete the shards this one reads or downloads."""
    import fcntl

    handle = open(folder / ".lock", "a+b")  # noqa: SIM115  # held until close()
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise ConfigError(
            f"{folder}: this remote cache folder is in use by another patchpack process; wait "
            f"for it to finish, or give this one a folder of its own (--cache DIR, cache_dir=)"
        ) from None
    return handle


class ShardCache:
    """Shards of ``manifest`` (read from ``manifest.folder``, the cache folder) fetched from
    ``store`` (a :class:`patchpack.sharing.objects.RemoteObjects`) by the md5s of ``listing``.

    Attributes
    ----------
    bound : int
        Bytes of shards the cache folder may hold (one more shard while it downloads).
    peak : int
        The most bytes of shards the folder held at once, the download in flight included.
    fetched : int
        Shards downloaded so far.
    """

    def __init__(
        self, manifest: Manifest, store: Any, listing: dict[str, str], *, bound: int
    ) -> None:
        if manifest.folder is None:
            raise ValueError("the manifest must have been read from the cache folder")
        self.manifest = manifest
        self.folder = manifest.folder
        self.store = store
        self.listing = listing
        self.bound = bound
        self.peak = 0
        self.fetched = 0
        self._held: collections.OrderedDict[str, _Held] = collections.OrderedDict()
        self._loading: set[str] = set()
        self._cond = threading.Condition()
        self._download = threading.Lock()
        self._prefetch: tuple[int, threading.Thread] | None = None
        self._generation = 0
        self._position = 0
        self._order_index: dict[str, int] = {}
        self._lock = _hold_folder(self.folder)
        self._adopt()

    # --- what an earlier run left in the folder --------------------------------------------------

    def _adopt(self) -> None:
        """Count the shards already in the cache folder, oldest use first; evict above the bound."""
        found = []
        for entry in self.manifest.shards:
            path = self.folder / entry.path
            with contextlib.suppress(OSError):
                stat = path.stat()
                found.append((stat.st_mtime_ns, entry.path, _Held(path, stat.st_size)))
        for _, name, held in sorted(found):
            self._held[name] = held
        for leftover in self.folder.glob("*/.*fetch-*"):
            leftover.unlink(missing_ok=True)
        with self._cond:
            self._evict()

    @property
    def used(self) -> int:
        """Bytes of shards in the cache folder now."""
        return sum(held.size for held in self._held.values())

    # --- reading a shard ------------------------------------------------------------------------

    @contextlib.contextmanager
    def reader(self, entry: ShardEntry) -> Iterator[ShardReader]:
        """The open reader of ``entry``'s shard, fetched first when it is not in the cache; it is
        not evicted inside the block."""
        held = self._acquire(entry)
        try:
            if held.reader is None:
                with self._cond:
                    if held.reader is None:
                        held.reader = ShardReader(held.path, self.manifest.layout(entry))
            yield held.reader
        finally:
            with self._cond:
                held.pins -= 1
                self._cond.notify_all()

    def _acquire(self, entry: ShardEntry) -> _Held:
        name = entry.path
        with self._cond:
            while True:
                held = self._held.get(name)
                if held is not None and held.checked:
                    held.pins += 1
                    self._held.move_to_end(name)
                    return held
                if name not in self._loading:
                    break
                self._cond.wait()
            self._loading.add(name)
        try:
            with self._download:
                held = self._load(entry)
        finally:
            with self._cond:
                self._loading.discard(name)
                self._cond.notify_all()
        return held

    def _load(self, entry: ShardEntry) -> _Held:
        """Check a cached copy, else download; returns the entry pinned once."""
        name = entry.path
        with self._cond:
            held = self._held.get(name)
        if held is not None and file_sha256(held.path) != entry.sha256:
            with self._cond:
                self._drop(name)
            held = None
        if held is None:
            size = self._fetch(entry)
            held = _Held(self.folder / name, size)
            with self._cond:
                self._held[name] = held
                self.peak = max(self.peak, self.used)
        with self._cond:
            held.checked = True
            held.pins += 1
            self._held.move_to_end(name)
            self._evict(wait=True)
        return held

    def _fetch(self, entry: ShardEntry) -> int:
        """Download ``entry``'s shard: md5 checked as it streams, sha256 checked before the rename."""
        md5 = self.listing.get(entry.path)
        if md5 is None:
            raise IntegrityError(
                f"{entry.path}: the manifest names it but the committed listing does not; the "
                f"dataset was committed damaged: ask the owner to extract and commit again"
            )
        target = self.folder / entry.path
        tmp = target.with_name(f".{target.name}.fetch-{os.getpid()}")
        size = 0
        try:
            with self._cond:
                self.peak = max(self.peak, self.used)
            size = int(self.store.download(md5, tmp))
            with self._cond:
                self.peak = max(self.peak, self.used + size)
            if size > self.bound:
                raise ConfigError(
                    f"the shard cache bound ({self.bound:,} bytes) is smaller than one shard "
                    f"({entry.path}: {size:,} bytes); give a cache size of at least {size:,} bytes"
                )
            got = file_sha256(tmp)
            if got != entry.sha256:
                raise IntegrityError(
                    f"{entry.path}: the remote's object {md5} has sha256 {got[:16]}..., the "
                    f"manifest says {entry.sha256[:16]}...: refused, nothing was kept"
                )
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.fetched += 1
        return size

    def _evict(self, *, wait: bool = False) -> None:
        """Close and delete least recently used shards until the cache is under its bound; with
        ``wait``, wait for reads to end when only shards being read stand above it."""
        while self.used > self.bound:
            victim = next((n for n, h in self._held.items() if h.pins == 0), None)
            if victim is None:
                if not wait:
                    return
                self._cond.wait()
                continue
            self._drop(victim)

    def _drop(self, name: str) -> None:
        held = self._held.pop(name)
        if held.reader is not None:
            held.reader.close()
        held.path.unlink(missing_ok=True)

    # --- reading ahead --------------------------------------------------------------------------

    def prefetch(self, order: Sequence[ShardEntry], ahead: int = DEFAULT_PREFETCH) -> None:
        """Download up to ``ahead`` shards of ``order`` beyond the last one read, in a background
        thread; a later call (or :meth:`close`) replaces it. Errors surface when a read needs the
        shard."""
        with self._cond:
            self._generation += 1
            generation = self._generation
            self._position = 0
            self._cond.notify_all()
        if ahead < 1 or not order:
            return
        with self._cond:
            self._order_index = {entry.path: k for k, entry in enumerate(order)}
        thread = threading.Thread(
            target=self._read_ahead,
            args=(generation, list(order), ahead),
            name="patchpack-shard-prefetch",
            daemon=True,
        )
        self._prefetch = (generation, thread)
        thread.start()

    def touched(self, entry: ShardEntry) -> None:
        """Record that ``entry`` is being read: the read-ahead keeps going from there."""
        with self._cond:
            position = self._order_index.get(entry.path)
            if position is not None and position > self._position:
                self._position = position
                self._cond.notify_all()

    def _read_ahead(self, generation: int, order: list[ShardEntry], ahead: int) -> None:
        for k, entry in enumerate(order):
            with self._cond:
                # never further ahead than the cache holds, or it would evict a shard still to come
                while generation == self._generation and k > self._position + min(
                    ahead, self._slots() - 1
                ):
                    self._cond.wait()
                if generation != self._generation:
                    return
                held = self._held.get(entry.path)
                if held is not None and held.checked:
                    continue
            try:
                with self.reader(entry):
                    pass
            except Exception:  # the read that needs this shard raises it
                return

    def _slots(self) -> int:
        """How many shards the bound holds, judged by the largest seen so far."""
        sizes = [held.size for held in self._held.values()]
        return max(1, self.bound // max(sizes)) if sizes else 1

    def close(self) -> None:
        """Stop reading ahead and close every open shard (the files stay, for the next run)."""
        with self._cond:
            self._generation += 1
            self._cond.notify_all()
        if self._prefetch is not None:
            self._prefetch[1].join(timeout=60)
            self._prefetch = None
        with self._cond:
            for held in self._held.values():
                if held.reader is not None:
                    held.reader.close()
                    held.reader = None
        self._lock.close()  # another process may use the folder now


class CachedShard:
    """One shard as the loader and the preview read it, fetched into the cache only when read.

    Its size and whether it holds masks come from the manifest, so planning an epoch downloads
    nothing; its labels are kept in memory once read.
    """

    def __init__(self, cache: ShardCache, entry: ShardEntry, *, masks: bool) -> None:
        self.cache = cache
        self.entry = entry
        self.has_masks = masks
        self._labels: np.ndarray | None = None

    def __len__(self) -> int:
        return self.entry.patches

    @contextlib.contextmanager
    def _open(self) -> Iterator[ShardReader]:
        self.cache.touched(self.entry)
        with self.cache.reader(self.entry) as reader:
            yield reader

    @property
    def labels(self) -> np.ndarray:
        """ndarray of shape (n_patches,), as the shard stores them."""
        if self._labels is None:
            with self._open() as reader:
                self._labels = reader.labels
        return self._labels

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        with self._open() as reader:
            return reader.read(start, stop)

    def read_masks(self, start: int, stop: int) -> np.ndarray:
        with self._open() as reader:
            return reader.read_masks(start, stop)

    def take(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._open() as reader:
            return reader.take(rows)

    def take_masks(self, rows: np.ndarray) -> np.ndarray:
        with self._open() as reader:
            return reader.take_masks(rows)

    def close(self) -> None:
        """Nothing to close: the cache owns the open shard."""
