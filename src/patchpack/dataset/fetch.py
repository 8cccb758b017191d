"""Sources at a URL: ``source.dir: s3://bucket/slides`` (any fsspec file system that can list).

The catalog lists the URL (sorted, hidden names left out), fetches every file once into a local,
content-addressed cache (``<cache>/<sha256>/<name>``, hashed while it is fetched) and catalogs a
folder of links to the cached files: ids are the files' paths relative to the URL, so a dataset
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
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

from patchpack.dataset.sources import SourceImage, remember_sha256
from patchpack.errors import SourceError

BLOCK = 8 * 2**20


def is_url(text: str) -> bool:
    """Whether ``text`` names a location through a file system protocol (``s3://...``)."""
    scheme, sep, _ = str(text).partition("://")
    return bool(sep) and scheme.isidentifier() and scheme != "file"


def cache_root() -> Path:
    """Where fetched sources are kept on this machine."""
    if os.environ.get("PATCHPACK_CACHE"):
        return Path(os.environ["PATCHPACK_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "patchpack" / "sources"


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


def list_files(url: str) -> list[str]:
    """The files under ``url``, as sorted POSIX paths relative to it (hidden names left out)."""
    fs, root = _filesystem(url)
    try:
        found = fs.find(root)
    except Exception as exc:  # each protocol raises its own errors (no bucket, no credentials ...)
        raise SourceError(
            f"{url}: cannot list the sources ({type(exc).__name__}: {exc}); check the URL and the "
            f"credentials (for S3: AWS_* variables, FSSPEC_S3_ENDPOINT_URL for another server)"
        ) from exc
    relative = []
    for path in found:
        name = str(path)[len(root) :].lstrip("/")
        if name and not any(part.startswith(".") for part in PurePosixPath(name).parts):
            relative.append(name)
    if not relative:
        raise SourceError(f"{url}: no files there; check source.dir")
    return sorted(relative)


def fetch(url: str, *, sha256: str | None = None) -> tuple[Path, str]:
    """The cached copy of the file at ``url`` and its sha256, fetched when not cached yet.

    With ``sha256`` (a worker's check) a cached copy is used as it is, and a fetched one that does
    not match fails in one line; without it (the catalog) the file is always fetched and hashed.
    """
    name = PurePosixPath(url.split("://", 1)[1]).name or "source"
    if sha256 is not None:
        cached = cache_root() / sha256 / name
        if cached.is_file():
            return cached, sha256
    fs, path = _filesystem(url)
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=root, prefix=".fetch-", delete=False) as tmp:
        try:
            with fs.open(path, "rb") as remote:
                while block := remote.read(BLOCK):
                    digest.update(block)
                    tmp.write(block)
        except Exception as exc:  # the protocol's own errors, or a full disk here
            Path(tmp.name).unlink(missing_ok=True)
            raise SourceError(
                f"{url}: cannot fetch the source ({type(exc).__name__}: {exc}); check the URL, "
                f"the credentials and the free space in {root}"
            ) from exc
    found = digest.hexdigest()
    if sha256 is not None and found != sha256:
        Path(tmp.name).unlink(missing_ok=True)
        raise SourceError(
            f"{url}: its bytes differ from those the catalog hashed (sha256 {sha256[:16]}...): "
            f"the object changed during the run; run again"
        )
    target = root / found / name
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp.name, target)
    remember_sha256(target, found)
    return target, found


@contextlib.contextmanager
def mirrored(url: str) -> Iterator[Path]:
    """A temporary local folder of links to the cached copies of every file under ``url``."""
    tree = Path(tempfile.mkdtemp(prefix="patchpack-sources-"))
    try:
        for relative in list_files(url):
            cached, sha256 = fetch(f"{url.rstrip('/')}/{relative}")
            link = tree / relative
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(cached)
            remember_sha256(link, sha256)
        yield tree
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
    copy fetched into this machine's cache (checked against the catalog's sha256)."""
    if source.url is None or source.path.is_file():
        return source
    cached, _ = fetch(source.url, sha256=source.sha256)
    return replace(source, path=cached)
