"""A folder's DVC hash, computed here from its bytes: the verdict never rests on DVC's state.

DVC records a tracked folder in ``dvc.lock`` (or a ``.dvc`` file) as the md5 of its ``.dir``
listing: a JSON list of ``{"md5": <md5 of the file's bytes>, "relpath": <POSIX path in the folder>}``,
sorted by ``relpath``, encoded with ``json.dumps(..., sort_keys=True)``; the hash is that text's md5
with ``.dir`` appended. Files that ``.dvcignore`` (or DVC's defaults: ``.git``, ``.hg``, ``.dvc``)
ignore are left out, as DVC leaves them out.

DVC itself reuses md5s memoised by file size and mtime in its state database, and does not re-hash
what it downloads from a remote, so neither ``dvc status`` nor a pulled cache proves which bytes a
folder holds. :func:`dir_md5` reads every byte. The listing of files is DVC's own (its ignore filter),
so the two can only disagree on bytes, which is the point.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from patchpack.dataset.card import CARD_FILES
from patchpack.errors import RemoteError


def file_md5(path: Path, block: int = 1 << 20) -> str:
    """md5 of a file's bytes (DVC 3's ``hash: md5``), read in 1 MiB blocks; links are followed."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def listing(folder: Path, root: Path) -> list[str]:
    """The files DVC would track in ``folder`` (inside the project ``root``), as sorted POSIX paths
    relative to ``folder``; what ``.dvcignore`` ignores is left out."""
    from dvc.fs import LocalFileSystem
    from dvc.ignore import DvcIgnoreFilter

    fs = LocalFileSystem()
    ignore = DvcIgnoreFilter(fs, os.fspath(root))
    found = []
    base = os.fspath(folder)
    for top, _dirs, files in ignore.walk(fs, base):
        for name in files:
            found.append(Path(os.path.relpath(os.path.join(top, name), base)).as_posix())
    return sorted(found)


def dir_listing_bytes(entries: list[tuple[str, str]]) -> bytes:
    """The ``.dir`` object DVC stores for ``(relpath, md5)`` entries (sorted here)."""
    items = [{"md5": md5, "relpath": relpath} for relpath, md5 in sorted(entries)]
    return json.dumps(items, sort_keys=True).encode("utf-8")


def hashed_entries(folder: Path, root: Path) -> list[tuple[str, str]]:
    """``(relpath, md5)`` of every file DVC tracks in ``folder``, hashed from its bytes.

    Raises
    ------
    RemoteError
        When a file cannot be read (the message names it).
    """
    folder = Path(folder)
    entries = []
    for relpath in listing(folder, Path(root)):
        try:
            entries.append((relpath, file_md5(folder / relpath)))
        except OSError as exc:
            raise RemoteError(
                f"{folder / relpath}: cannot read it to hash the folder ({exc.strerror}); "
                f"check its permissions, or `patchpack pull` to restore it"
            ) from exc
    return entries


def entries_md5(entries: list[tuple[str, str]]) -> str:
    """The DVC directory hash (``<md5>.dir``) of ``(relpath, md5)`` entries."""
    return hashlib.md5(dir_listing_bytes(entries), usedforsecurity=False).hexdigest() + ".dir"


def dir_md5(folder: Path, root: Path) -> str:
    """The md5 DVC records for ``folder`` (``<md5>.dir``), computed from every byte it holds."""
    return entries_md5(hashed_entries(folder, root))


def committed_listing(cache_objects: Path | None, md5: str) -> dict[str, str] | None:
    """The ``relpath -> md5`` listing that the ``.dir`` hash ``md5`` names, read from the DVC cache
    only when that object's bytes hash to ``md5`` (a pulled listing may be forged); else ``None``."""
    if cache_objects is None or not md5.endswith(".dir"):
        return None
    value = md5.removesuffix(".dir")
    path = cache_objects / "md5" / value[:2] / (value[2:] + ".dir")
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if hashlib.md5(data, usedforsecurity=False).hexdigest() != value:
        return None
    try:
        items = json.loads(data)
        return {str(item["relpath"]): str(item["md5"]) for item in items}
    except (ValueError, TypeError, KeyError):
        return None


def differences(ours: list[tuple[str, str]], committed: dict[str, str], limit: int = 3) -> str:
    """The files that differ between a folder's entries and the committed listing, in words."""
    have = dict(ours)
    changed = sorted(
        (path for path in have.keys() & committed.keys() if have[path] != committed[path]),
        key=lambda path: (path in CARD_FILES, path),  # the card follows what it describes
    )
    missing = sorted(committed.keys() - have.keys())
    extra = sorted(have.keys() - committed.keys())
    parts = []
    for words, paths in (("differ", changed), ("missing", missing), ("not committed", extra)):
        if paths:
            shown = ", ".join(paths[:limit]) + (
                f" and {len(paths) - limit} more" if len(paths) > limit else ""
            )
            parts.append(f"{words}: {shown}")
    return "; ".join(parts)
