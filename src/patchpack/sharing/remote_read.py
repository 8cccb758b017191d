"""Read a dataset straight from its DVC remote, without pulling it: ``open_dataset(..., remote=...)``
and ``patchpack info / verify / preview --remote``.

Where the dataset is (a :class:`RemoteLocation`): the folder's path in its DVC project, as
``dvc.lock`` names it, and either this project's remote (the default one, a named one, or an
``s3://`` URL) with the committed ``dvc.lock`` (or another ``dvc.lock`` file), or a repository (a
path or git URL) at a git rev, opened with DVC's API (``dvc.repo.Repo.open``), whose ``dvc.lock``
and remote configuration at that rev are used.

What is trusted: only the md5 that ``dvc.lock`` records. It names the folder's ``.dir`` listing
(checked against it), the listing names the manifest's md5 (checked), and the manifest names each
shard's sha256, checked (with the listing's md5) before a shard is opened; see
:mod:`patchpack.sharing.shard_cache`. The listing and manifest are kept in the cache folder, under the
listing's md5, so a second read of the same version needs the remote for the shards only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from patchpack.dataset.manifest import Manifest, ShardEntry, load_manifest
from patchpack.engine.output import MANIFEST_NAME
from patchpack.errors import ConfigError, IntegrityError, RemoteError
from patchpack.sharing.dvcconfig import find_root
from patchpack.sharing.dvchash import file_md5
from patchpack.sharing.shard_cache import DEFAULT_PREFETCH, CachedShard, ShardCache

DEFAULT_CACHE_BYTES = 2 << 30  # 2 GiB of shards
LISTING_NAME = ".listing.dir"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

_DIR_MD5 = re.compile(r"[0-9a-f]{32}\.dir")


@dataclass(frozen=True)
class RemoteLocation:
    """Where a dataset is read from without a pull.

    Attributes
    ----------
    data : str, default "data/patches"
        The dataset folder's path in its project, as ``dvc.lock`` records it.
    remote : str, optional
        A DVC remote name or URL (``s3://bucket/prefix``); default: the project's default remote.
    repo : str, optional
        A repository path or git URL; default: the DVC project holding the working directory.
    rev : str, optional
        A git rev (tag, branch, commit) of ``repo`` whose ``dvc.lock`` is read; default: the working
        tree's ``dvc.lock`` (for the project here), the default branch (for a URL).
    lock : Path, optional
        A ``dvc.lock`` file to read instead of the project's (not with ``rev``).
    """

    data: str = "data/patches"
    remote: str | None = None
    repo: str | None = None
    rev: str | None = None
    lock: Path | None = None

    def describe(self) -> str:
        where = self.repo or "this project"
        at = f"@{self.rev}" if self.rev else ""
        via = f" via {self.remote}" if self.remote else ""
        return f"{self.data} of {where}{at}{via}"


def parse_size(text: str | int) -> int:
    """Bytes in ``text``: an integer, optionally with K, M, G or T (powers of 1024): ``512M``."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", str(text), re.IGNORECASE)
        if found is None:
            raise ConfigError(
                f"cache size {text!r} is not a size; give bytes, or a number with K, M, G or T "
                f"(e.g. 512M, 2G)"
            )
        value = int(float(found.group(1)) * _UNITS[found.group(2).upper()])
    if value < 1:
        raise ConfigError(f"cache size must be at least 1 byte (received {text!r})")
    return value


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/patchpack/remote`` (``~/.cache/patchpack/remote`` without it)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "patchpack" / "remote"


@dataclass
class RemoteSource:
    """A dataset on a remote, opened: its checked manifest (read from the cache folder), the
    shard cache and the object store. Close it to stop reading ahead and close the shards."""

    location: RemoteLocation
    md5: str
    manifest: Manifest
    cache: ShardCache
    store: Any
    shard_bytes: int = 0  # the first shard's size on the remote: what one shard takes
    warned: bool = False

    def shard(self, entry: ShardEntry) -> CachedShard:
        """The shard of ``entry``, fetched when first read."""
        masks = self.manifest.params.extract.targets == "mask"
        return CachedShard(self.cache, entry, masks=masks)

    def read_ahead(self, plan: Any, entries: list[ShardEntry]) -> None:
        """Fetch the shards of ``entries`` in the order the epoch ``plan`` first reads them; say
        (in the log) when one group spans more shards than the cache holds, since each of them is
        then fetched again for each of its windows."""
        order: dict[int, None] = {}
        for group in plan.groups:
            for window in group:
                order.setdefault(window.shard, None)
        self.cache.prefetch([entries[k] for k in order], DEFAULT_PREFETCH)
        widest = max((len({w.shard for w in group}) for group in plan.groups), default=0)
        largest = self.shard_bytes
        if largest and widest * largest > self.cache.bound and not self.warned:
            self.warned = True
            logging.getLogger("patchpack").warning(
                "a shuffle group spans %d shards (about %s bytes), more than the shard cache "
                "holds (%s bytes): shards will be fetched more than once per epoch; raise "
                "cache_size or lower shuffle_buffer",
                widest,
                f"{widest * largest:,}",
                f"{self.cache.bound:,}",
            )

    @contextlib.contextmanager
    def local(self, entry: ShardEntry) -> Iterator[None]:
        """``entry``'s shard in the cache folder (fetched and checked) for the block."""
        with self.cache.reader(entry):
            yield

    def close(self) -> None:
        self.cache.close()
        self.store.close()

    def __enter__(self) -> RemoteSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_remote(
    location: RemoteLocation,
    *,
    cache_dir: str | Path | None = None,
    cache_size: str | int = DEFAULT_CACHE_BYTES,
) -> RemoteSource:
    """Resolve ``location``, fetch and check its listing and manifest, and set up the shard cache.

    Raises
    ------
    RemoteError
        When the project, repository, rev or remote cannot be found or reached, or ``dvc.lock``
        records no folder hash for ``location.data``.
    IntegrityError
        When the remote serves a listing or manifest that does not hash to the committed md5.
    ConfigError
        When the cache size is not a size, or is smaller than one shard.
    """
    bound = parse_size(cache_size)
    if location.lock is not None and location.rev is not None:
        raise ConfigError("--lock names a dvc.lock file and --rev one at a git rev: give one")
    repo = _open_repo(location)
    try:
        md5 = _committed_md5(repo, location)
        store = _store(repo, location)
    except BaseException:
        repo.close()
        raise
    try:
        folder = Path(cache_dir or default_cache_dir()) / md5.removesuffix(".dir")
        listing = _listing(store, md5, folder)
        manifest = _manifest(store, listing, folder)
        shard_bytes = _check_bound(store, listing, manifest, bound)  # before evicting to it
        cache = ShardCache(manifest, store, listing, bound=bound)
    except BaseException:
        store.close()
        raise
    return RemoteSource(location, md5, manifest, cache, store, shard_bytes)


def _open_repo(location: RemoteLocation) -> Any:
    """The DVC repository: ``location.repo`` at ``location.rev``, else the project here."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from scmrepo.exceptions import SCMError

    source = location.repo
    if source is None:
        source = os.fspath(find_root(Path.cwd()))
    try:
        return Repo.open(source, rev=location.rev) if location.rev else Repo.open(source)
    except (DvcException, SCMError) as exc:
        at = f" at rev {location.rev!r}" if location.rev else ""
        raise RemoteError(
            f"{source}{at}: cannot open it as a DVC repository ({_one_line(exc)}); check the path "
            f"or URL and that the rev exists (`git tag`, `git log`)"
        ) from exc


def _committed_md5(repo: Any, location: RemoteLocation) -> str:
    """The ``.dir`` md5 recorded for ``location.data``: in the ``dvc.lock`` given, else in the
    repository's ``dvc.lock`` (at the rev), else in its ``<data>.dvc`` file (``dvc add``)."""
    rel = Path(location.data).as_posix().strip("/")
    if location.lock is not None:
        text = _read(location.lock)
        outs = _lock_outs(text, str(location.lock))
        if rel in outs:
            return outs[rel]
        where, recorded = str(location.lock), sorted(outs)
    else:
        where = (location.repo or str(repo.root_dir)) + (f"@{location.rev}" if location.rev else "")
        outs = _lock_outs(_text(repo, "dvc.lock") or "", f"{where}:dvc.lock")
        if rel in outs:
            return outs[rel]
        dvcfile = _lock_outs(_text(repo, f"{rel}.dvc") or "", f"{where}:{rel}.dvc", rel)
        if rel in dvcfile:
            return dvcfile[rel]
        where, recorded = f"{where}: dvc.lock (nor {rel}.dvc)", sorted(outs)
    raise RemoteError(
        f"{where} records no folder hash for {rel} (recorded: {', '.join(recorded) or 'none'}); "
        f"name the dataset folder as dvc.lock does, or the owner runs `dvc repro` and commits "
        f"dvc.lock"
    )


def _text(repo: Any, relpath: str) -> str | None:
    """A file of the repository (at its rev), or ``None`` when it has none."""
    try:
        with repo.fs.open(repo.fs.join(repo.root_dir, relpath), "r", encoding="utf-8") as handle:
            return str(handle.read())
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _read(lock: Path) -> str:
    try:
        return lock.read_text(encoding="utf-8")
    except OSError as exc:
        raise RemoteError(
            f"{lock}: cannot read this dvc.lock ({exc.strerror}); give the path of the "
            f"committed dvc.lock"
        ) from exc


def _lock_outs(text: str, name: str, single: str | None = None) -> dict[str, str]:
    """``path -> .dir md5`` of the folder outputs in a ``dvc.lock`` text (or, with ``single``, in
    the ``.dvc`` file of that folder)."""
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise RemoteError(f"{name}: not a DVC file ({_one_line(exc)})") from exc
    if not isinstance(raw, dict):
        raise RemoteError(f"{name}: not a DVC file (no mapping at its top)")
    stages = raw.get("stages") if single is None else {"": {"outs": raw.get("outs")}}
    found: dict[str, str] = {}
    for stage in (stages if isinstance(stages, dict) else {}).values():
        outs = stage.get("outs") if isinstance(stage, dict) else None
        for out in outs if isinstance(outs, list) else []:
            if not isinstance(out, dict):
                continue
            md5 = out.get("md5")
            path = single if single is not None else out.get("path")
            # the md5 names the listing's file in the cache folder: hex digits only
            if isinstance(path, str) and isinstance(md5, str) and _DIR_MD5.fullmatch(md5):
                found[path] = md5
    return found


def _store(repo: Any, location: RemoteLocation) -> Any:
    """The remote's object store: the named or default remote, or the URL given."""
    from dvc.exceptions import DvcException

    from patchpack.sharing.objects import RemoteObjects

    name = location.remote or None
    remotes = dict(repo.config.get("remote", {}))
    try:
        if name is not None and "://" in name:
            same = [key for key, conf in remotes.items() if conf.get("url") == name.rstrip("/")]
            if not same:
                return RemoteObjects.of(repo, _url_odb(repo, name.rstrip("/")))
            name = same[0]
        return RemoteObjects.of(repo, repo.cloud.get_remote_odb(name, command="patchpack"))
    except DvcException as exc:
        known = ", ".join(sorted(remotes)) or "none"
        raise RemoteError(
            f"{location.describe()}: the DVC remote cannot be used ({_one_line(exc)}; configured "
            f"remotes: {known}); pass --remote NAME or an s3:// URL, or set one up with "
            f"`patchpack remote s3 URL`"
        ) from exc


def _url_odb(repo: Any, url: str) -> Any:
    """The object store at ``url``, a remote this project does not configure."""
    from dvc.data_cloud import Remote
    from dvc.fs import get_cloud_fs

    cls, config, fs_path = get_cloud_fs(repo.config, url=url)
    return Remote(url, fs_path, cls(**config), **config).odb


def _listing(store: Any, md5: str, folder: Path) -> dict[str, str]:
    """The committed listing: from the cache folder when its bytes hash to ``md5``, else fetched
    (checked against ``md5``) and kept there."""
    import json

    kept = folder / LISTING_NAME
    if kept.is_file() and file_md5(kept) == md5.removesuffix(".dir"):
        items = json.loads(kept.read_bytes())
        return {str(item["relpath"]): str(item["md5"]) for item in items}
    raw, listing = store.listing(md5)
    listing = dict(listing)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = kept.with_name(f".{kept.name}.tmp-{os.getpid()}")
    tmp.write_bytes(raw)
    tmp.replace(kept)
    return listing


def _manifest(store: Any, listing: dict[str, str], folder: Path) -> Manifest:
    """The manifest the listing names, fetched into the cache folder unless it is there already."""
    md5 = listing.get(MANIFEST_NAME)
    if md5 is None:
        raise IntegrityError(
            f"the committed listing names no {MANIFEST_NAME}: not a patchpack dataset, or it was "
            f"committed incomplete; ask the owner to extract and commit again"
        )
    path = folder / MANIFEST_NAME
    if not (path.is_file() and file_md5(path) == md5):
        store.download(md5, path)
    return load_manifest(folder)


def _check_bound(store: Any, listing: dict[str, str], manifest: Manifest, bound: int) -> int:
    """Refuse a cache bound smaller than the first shard, before anything is read; returns the
    first shard's size (0 without one)."""
    if not manifest.shards:
        return 0
    first = manifest.shards[0]
    md5 = listing.get(first.path)
    if md5 is None:
        return 0  # the read of the shard says so
    size = store.size(md5)
    if size > bound:
        raise ConfigError(
            f"the shard cache bound ({bound:,} bytes) is smaller than one shard ({first.path}: "
            f"{size:,} bytes); give a cache size of at least {size:,} bytes (e.g. --cache-size "
            f"{-(-size // (1 << 20))}M)"
        )
    return int(size)


def remote_sizes(source: RemoteSource) -> dict[str, int]:
    """Bytes of each shard on the remote (``path -> bytes``), from the objects' metadata."""
    return {
        entry.path: source.store.size(source.cache.listing[entry.path])
        for entry in source.manifest.shards
        if entry.path in source.cache.listing
    }


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
