"""Sources at a URL: ``source.dir: s3://bucket/slides`` (any fsspec file system that can list).

The catalog lists the URL (sorted, hidden names left out), fetches every file into a local,
content-addressed cache (``<cache>/<sha256>/<name>``, hashed while it is fetched; an object whose
version tag, its ETag, is the one fetched before is not fetched again, once its cached copy still
hashes to the sha256 recorded then) and catalogs a folder of links to the cached files: ids are the files' paths relative to the URL, so a dataset
built from a URL is byte-identical to one built from a local copy of it. Each source keeps its URL;
a worker on another node that lacks the cached file fetches it into its own cache and checks the
sha256 the catalog recorded before decoding it, so a changed object fails loudly.

The cache is ``$PATCHPACK_CACHE``, else ``$XDG_CACHE_HOME/patchpack/sources``, else
``~/.cache/patchpack/sources``. Credentials and endpoints come from the file system's own
configuration: for S3 (s3fs, installed with DVC's S3 support) the usual ``AWS_*`` variables and
files, and ``AWS_ENDPOINT_URL_S3`` for an S3-compatible server such as MinIO. Label files
(``labels.dir``) are read from a folder every worker can see.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from patchpack.dataset.io import write_json_atomic
from patchpack.dataset.readers import SUFFIXES
from patchpack.dataset.sources import SourceImage, remember_sha256, source_sha256
from patchpack.errors import SourceError

BLOCK = 8 * 2**20


def is_url(text: str) -> bool:
    """Whether ``text`` names a location through a file system protocol (``s3://...``)."""
    scheme, sep, _ = str(text).partition("://")
    return bool(sep) and scheme.isidentifier() and scheme != "file"


def cache_root() -> Path:
    """Where fetched sources are kept on this machine (an absolute path: links point into it)."""
    if os.environ.get("PATCHPACK_CACHE"):
        return Path(os.environ["PATCHPACK_CACHE"]).resolve()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return (Path(base) / "patchpack" / "sources").resolve()


def _filesystem(url: str) -> tuple[Any, str]:
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise SourceError(
            f"{url}: no file system for this URL ({exc}); use a folder, or a URL fsspec can list "
            f"(s3://, gs://, az:// with their packages installed)"
        ) from exc
    return fs, str(root).rstrip("/")


@dataclass(frozen=True)
class Listed:
    """One file under the URL: its path relative to it and its version tag (ETag), if any."""

    relative: str
    tag: str | None


def list_files(url: str) -> list[Listed]:
    """The files under ``url``, sorted by their POSIX paths relative to it (hidden names and the
    empty "folder" objects some tools create left out).

    Raises
    ------
    SourceError
        When the URL cannot be listed, lists nothing, holds two keys that would be one source
        (equal once ``.`` and empty path components are dropped and Unicode is NFC), or holds a
        name that cannot be a file in a folder (an empty, ``.`` or ``..`` path component, or a
        file that is also a folder).
    """
    fs, root = _filesystem(url)
    try:
        fs.invalidate_cache()  # a listing kept from earlier in this process may be stale
        found = fs.find(root, detail=True)
    except Exception as exc:  # each protocol raises its own errors (no bucket, no credentials ...)
        raise SourceError(
            f"{url}: cannot list the sources ({type(exc).__name__}: {exc}); check the URL and the "
            f"credentials (for S3: AWS_* variables, AWS_ENDPOINT_URL_S3 for another server)"
        ) from exc
    base = url.rstrip("/")
    listed = {}
    for path, info in found.items():
        name = str(path)[len(root) :]
        name = name[1:] if name.startswith("/") else name
        if not name or name.endswith("/"):
            continue  # a folder marker
        if any(part.startswith(".") for part in name.split("/") if part not in ("", ".", "..")):
            continue
        tag = info.get("ETag") or info.get("etag")
        listed[name] = Listed(name, str(tag) if tag else None)
    _refuse_collisions(base, listed)
    for name in sorted(listed):
        if name.startswith("/") or "//" in name or {".", ".."} & set(name.split("/")):
            raise SourceError(
                f"{base}/{name}: not a usable file name (an empty, '.' or '..' path component, "
                f"which the source's id would drop); rename or remove the object"
            )
    _refuse_file_folders(url, listed)
    if not listed:
        raise SourceError(f"{url}: no files there; check source.dir")
    return [listed[name] for name in sorted(listed)]


def _source_id(name: str) -> str:
    """The id a key becomes once mirrored and catalogued: '.' and empty components dropped (as a
    path drops them), Unicode NFC (as the catalog normalises ids)."""
    return unicodedata.normalize("NFC", "/".join(p for p in name.split("/") if p not in ("", ".")))


def _refuse_collisions(base: str, keys: dict[str, Listed]) -> None:
    """Refuse two keys that would become one source (one id), naming both."""
    by_id: dict[str, str] = {}
    for name in sorted(keys):
        first = by_id.setdefault(_source_id(name), name)
        if first == name:
            continue
        shown = (first, name)
        if unicodedata.normalize("NFC", first) == unicodedata.normalize("NFC", name):
            shown = (ascii(first)[1:-1], ascii(name)[1:-1])  # they differ in Unicode form only
        raise SourceError(
            f"{base}/{shown[0]} and {base}/{shown[1]} would both be the source "
            f"{_source_id(name)!r} (ids drop '.' and empty path components and are Unicode NFC); "
            f"rename or remove one of them"
        )


def _refuse_file_folders(url: str, listed: dict[str, Listed]) -> None:
    folders = {str(parent) for name in listed for parent in PurePosixPath(name).parents}
    for name in sorted(listed):
        if name in folders:
            raise SourceError(
                f"{url}/{name}: an object has the name of a folder of other objects; rename or "
                f"remove it"
            )
        if PurePosixPath(name).suffix.lower() not in SUFFIXES:
            raise SourceError(
                f"{url}/{name}: not an image (supported: {', '.join(SUFFIXES)}); remove it from "
                f"the source folder"
            )


def _cache_folder() -> Path:
    root = cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SourceError(
            f"{root}: cannot use it as the cache for fetched sources ({exc.strerror}); set "
            f"PATCHPACK_CACHE to a writable folder"
        ) from exc
    return root


def fetch(url: str, *, sha256: str | None = None, tag: str | None = None) -> tuple[Path, str]:
    """The cached copy of the file at ``url`` and its sha256, fetched when it is not cached.

    A cached copy is used when its bytes still have the sha256 expected: the ``sha256`` a worker
    was given, or the one recorded when the object of version ``tag`` (its ETag) was fetched
    before. Anything else is fetched anew, and a fetched copy that does not match ``sha256`` fails
    in one line.
    """
    name = PurePosixPath(url.split("://", 1)[1]).name or "source"
    root = _cache_folder()
    known = sha256 or _recorded(root, url, tag)
    if known is not None:
        cached = root / known / name
        if cached.is_file() and source_sha256(cached) == known:
            return cached, known
    found, target = _download(url, root, name)
    if sha256 is not None and found != sha256:
        target.unlink(missing_ok=True)
        raise SourceError(
            f"{url}: its bytes differ from those the catalog hashed (sha256 {sha256[:16]}...): "
            f"the object changed during the run; run again"
        )
    _record(root, url, tag, found)
    return target, found


def _download(url: str, root: Path, name: str) -> tuple[str, Path]:
    """Fetch ``url`` into the cache, hashing it on the way; returns (sha256, cached path)."""
    fs, path = _filesystem(url)
    digest = hashlib.sha256()
    try:
        handle, name_tmp = tempfile.mkstemp(dir=root, prefix=".fetch-")
    except OSError as exc:  # a read-only or foreign cache: its cached copies are still used
        raise SourceError(
            f"{root}: cannot write to the cache of fetched sources ({exc.strerror}), so {url} "
            f"cannot be fetched; make the folder writable or set PATCHPACK_CACHE to a writable "
            f"folder"
        ) from exc
    os.close(handle)
    tmp = Path(name_tmp)
    try:
        with open(tmp, "wb") as local, fs.open(path, "rb") as remote:
            while block := remote.read(BLOCK):
                digest.update(block)
                local.write(block)
        found = digest.hexdigest()
        target = root / found / name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
    except BaseException as exc:  # nothing half-fetched stays in the cache, Ctrl-C included
        tmp.unlink(missing_ok=True)
        if isinstance(exc, Exception):
            raise SourceError(
                f"{url}: cannot fetch the source ({type(exc).__name__}: {exc}); check the URL, "
                f"the credentials and the free space in {root}"
            ) from exc
        raise
    remember_sha256(target, found)
    return found, target


def _index(root: Path, url: str) -> Path:
    return root / ".index" / f"{hashlib.sha256(url.encode()).hexdigest()}.json"


def _recorded(root: Path, url: str, tag: str | None) -> str | None:
    """The sha256 fetched for ``url`` at version ``tag`` before, if any."""
    if tag is None:
        return None
    try:
        entry = json.loads(_index(root, url).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(entry, dict) and entry.get("tag") == tag and isinstance(entry.get("sha256"), str):
        return str(entry["sha256"])
    return None


def _record(root: Path, url: str, tag: str | None, sha256: str) -> None:
    if tag is None:
        return
    with contextlib.suppress(OSError):  # only a shortcut for the next run: losing it costs a fetch
        write_json_atomic(_index(root, url), {"sha256": sha256, "tag": tag, "url": url})


@contextlib.contextmanager
def mirrored(url: str) -> Iterator[Path]:
    """A temporary local folder of links to the cached copies of every file under ``url``.

    Errors raised within name the URL, not the temporary folder.
    """
    base = url.rstrip("/")
    tree = Path(tempfile.mkdtemp(prefix="patchpack-sources-"))
    try:
        for item in list_files(url):
            cached, sha256 = fetch(f"{base}/{item.relative}", tag=item.tag)
            link = tree / item.relative
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(cached)
            remember_sha256(link, sha256)
        try:
            yield tree
        except SourceError as exc:
            raise SourceError(str(exc).replace(str(tree), base)) from exc
    finally:
        shutil.rmtree(tree, ignore_errors=True)


def with_urls(sources: list[SourceImage], url: str, tree: Path) -> list[SourceImage]:
    """``sources`` catalogued from the mirror ``tree`` of ``url``, each knowing its own URL."""
    base = url.rstrip("/")
    return [
        replace(source, url=f"{base}/{source.path.relative_to(tree).as_posix()}")
        for source in sources
    ]


def local_copy(source: SourceImage) -> SourceImage:
    """``source`` readable here: as it is, or, for a source at a URL that this machine lacks, its
    copy in this machine's cache (fetched when missing or not the catalog's bytes)."""
    if source.url is None or source.path.is_file():
        return source
    cached, _ = fetch(source.url, sha256=source.sha256)
    return replace(source, path=cached)
