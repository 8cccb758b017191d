"""Named versions: the dataset as git committed it at a rev (a tag such as ``v1``).

A version is a git rev whose ``dvc.lock`` (or ``.dvc`` file) records the dataset folder's ``.dir``
md5. ``patchpack pull --rev v1`` names that listing on the project's DVC remote, fetches its objects
(each checked against its md5, as :mod:`patchpack.sharing.splits` does) into a folder of its own
(``data/patches-v1`` by default, never over a folder holding other data), checks the folder's md5
against the rev's ``dvc.lock`` and runs ``verify``. Which version a folder holds is
:mod:`patchpack.sharing.version_info`'s question, answered from the folder's bytes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from patchpack.dataset.card import CARD_FILES
from patchpack.errors import RemoteError
from patchpack.params import SPLITS
from patchpack.sharing.dvcconfig import find_root
from patchpack.sharing.dvchash import entries_md5, file_md5, hashed_entries
from patchpack.sharing.pull import remote_problem
from patchpack.sharing.splits import _fetch, _keep_listing

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_FETCHING = re.compile(r"^\..+\.fetch-\d+$")  # RemoteObjects.download's temporary name


@dataclass(frozen=True)
class Version:
    """The dataset folder ``path`` as committed at ``rev`` (resolved to ``commit``): its md5."""

    rev: str
    commit: str
    path: str
    md5: str


def git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``git ARGS`` in ``root`` (no pager, no prompt).

    Raises
    ------
    RemoteError
        When git is not installed.
    """
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat"}
    try:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=check, env=env
        )
    except FileNotFoundError:
        raise RemoteError("git is not installed: versions are git tags; install git") from None


def resolve_rev(root: Path, rev: str) -> str:
    """The commit that ``rev`` (a tag, branch or commit) names in the git repository at ``root``.

    Raises
    ------
    RemoteError
        When ``root`` is not a git repository or ``rev`` names no commit there.
    """
    if rev.startswith("-") or not rev.strip():
        raise RemoteError(f"--rev {rev!r}: not a git rev; name a tag, branch or commit")
    proc = git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
    if proc.returncode == 0:
        return proc.stdout.strip()
    if git(root, "rev-parse", "--git-dir", check=False).returncode != 0:
        raise RemoteError(f"{root}: not a git repository, so it has no versions; `git init` one")
    tags = git(root, "tag", "--list", check=False).stdout.split()
    known = ", ".join(tags[-8:]) or "none yet"
    raise RemoteError(
        f"--rev {rev}: no such tag, branch or commit in {root} (tags: {known}); "
        f"`git fetch --tags` gets the owner's tags, `git tag` lists them"
    )


def committed_outs(text: str | None, dvcfile: str | None = None) -> dict[str, str]:
    """``path -> md5`` of every output that a ``dvc.lock`` (or, with ``dvcfile``, a ``.dvc`` file
    at that path) records; paths are relative to the project folder."""
    try:
        data = yaml.load(text or "", Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    except yaml.YAMLError:
        return {}
    if not isinstance(data, dict):
        return {}
    found: dict[str, str] = {}
    if dvcfile is None:
        stages = data.get("stages")
        outs = [
            out
            for stage in (stages.values() if isinstance(stages, dict) else [])
            if isinstance(stage, dict) and isinstance(stage.get("outs"), list)
            for out in stage["outs"]
        ]
        base = ""
    else:
        outs, base = data.get("outs") or [], os.path.dirname(dvcfile)
    for out in outs:
        if isinstance(out, dict) and out.get("path") and out.get("md5"):
            found[Path(base, str(out["path"])).as_posix()] = str(out["md5"])
    return found


def _show(root: Path, commit: str, path: str) -> str | None:
    proc = git(root, "show", f"{commit}:{path}", check=False)
    return proc.stdout if proc.returncode == 0 else None


def committed_at(root: Path, rev: str, path: str) -> Version:
    """The dataset folder ``path`` as git committed it at ``rev``.

    Raises
    ------
    RemoteError
        When ``rev`` is unknown, or its ``dvc.lock`` (and ``path.dvc``) record no folder ``path``.
    """
    commit = resolve_rev(root, rev)
    outs = committed_outs(_show(root, commit, "dvc.lock"))
    outs |= committed_outs(_show(root, commit, f"{path}.dvc"), f"{path}.dvc")
    md5 = outs.get(path)
    if md5 is None or not md5.endswith(".dir"):
        folders = ", ".join(sorted(p for p, m in outs.items() if m.endswith(".dir"))) or "none"
        raise RemoteError(
            f"--rev {rev}: dvc.lock at {commit[:10]} records no dataset folder {path} "
            f"(folders it records: {folders}); pass --data with one of them, or another --rev"
        )
    return Version(rev, commit, path, md5)


def default_out(root: Path, path: str, rev: str) -> Path:
    """Where ``pull --rev`` puts a version by default: beside the dataset, ``data/patches-v1``."""
    return root / f"{path}-{_SAFE.sub('-', rev).strip('-.') or 'rev'}"


def _files(folder: Path) -> Iterator[tuple[str, Path]]:
    for top, _dirs, names in os.walk(folder):
        for name in names:
            full = Path(top, name)
            yield full.relative_to(folder).as_posix(), full


def check_out(out: Path, listing: dict[str, str], rev: str) -> None:
    """Refuse an ``--out`` folder that holds anything but files of this version's listing.

    Raises
    ------
    RemoteError
        When ``out`` is a file, or holds a file the listing lacks or has with another md5.
    """
    if out.exists() and not out.is_dir():
        raise RemoteError(f"--out {out}: a file is there; name a new folder")
    if not out.exists():
        return
    for relpath, full in _files(out):
        if _FETCHING.match(full.name):
            full.unlink()  # an object a killed pull was fetching, never renamed into place
        elif full.is_symlink() or listing.get(relpath) != file_md5(full):
            raise RemoteError(
                f"--out {out} holds other data ({relpath} is not a file of {rev}); nothing "
                f"was changed: name a new folder with --out, or move that one away"
            )


def _wanted(folder: Path, listing: dict[str, str], splits: tuple[str, ...]) -> list[str]:
    from patchpack.dataset.manifest import load_manifest

    if not splits:
        return sorted(listing)
    manifest = load_manifest(folder)
    wanted = [entry.path for split in splits for entry in manifest.shards_for(split)]
    wanted += sorted(record.roi for record in manifest.sources if record.roi)
    return wanted + [name for name in CARD_FILES if name in listing]  # as pull --split does


def pull_rev(
    data: Path,
    rev: str,
    *,
    splits: tuple[str, ...] = (),
    out: Path | None = None,
    root: Path = Path("."),
    echo: Callable[[str], None] = print,
) -> bool:
    """Fetch the dataset folder ``data`` as committed at ``rev`` (the splits named, or all) from the
    project's default DVC remote into ``out`` (default :func:`default_out`), and verify it.

    The folder's files are checked against the rev's listing (the whole folder's md5 against the
    rev's ``dvc.lock`` when every split is pulled), then ``verify`` runs. A new folder is filled
    beside ``out`` and renamed into place when complete; an ``out`` already holding part of this
    version is completed in place; one holding other data is refused, untouched.

    Returns ``True`` only when the folder is the committed version and passes ``verify``.

    Raises
    ------
    RemoteError
        When ``rev`` is unknown, records no such dataset, ``out`` holds other data, or the remote
        cannot serve the objects.
    IntegrityError
        When the remote serves an object whose bytes do not hash to its name.
    """
    from patchpack.sharing.objects import RemoteObjects

    start = Path(root)
    root = find_root(start)
    absolute = data if data.is_absolute() else start / data
    try:
        rel = absolute.resolve().relative_to(root).as_posix()
    except ValueError:
        raise RemoteError(f"{data}: not inside the DVC project {root}") from None
    version = committed_at(root, rev, rel)
    out = (start / out).resolve() if out is not None else default_out(root, rel, rev)
    problem = remote_problem(root, echo)
    if problem is not None:
        raise RemoteError(f"{problem} -- `patchpack pull --rev` needs the remote")
    with RemoteObjects(root) as remote:
        raw, listing = remote.listing(version.md5)
        _keep_listing(root, version.md5, raw)
        check_out(out, listing, rev)
        work = out if out.is_dir() else out.with_name(f".{out.name}.partial-{os.getpid()}")
        try:
            files = _fetch(remote, listing, work, ["manifest.json"])
            files += _fetch(remote, listing, work, _wanted(work, listing, splits))
            if work != out:
                work.replace(out)
        finally:
            if work != out:
                shutil.rmtree(work, ignore_errors=True)
        received = remote.received
    which = f"{', '.join(splits)} of " if splits else ""
    echo(
        f"pulled {which}{rel} at {rev} ({version.commit[:10]}) into {_shown(out, start)}: "
        f"{files} files fetched, {received:,} bytes"
    )
    return _check(root, out, version, listing, splits, echo)


def _shown(path: Path, start: Path) -> str:
    try:
        return path.relative_to(start.resolve()).as_posix()
    except ValueError:
        return str(path)


def _check(
    root: Path,
    out: Path,
    version: Version,
    listing: dict[str, str],
    splits: tuple[str, ...],
    echo: Callable[[str], None],
) -> bool:
    """The folder against the rev's listing (its md5 is the one in the rev's ``dvc.lock``), then
    ``verify``."""
    from patchpack.audit.verify import verify

    report = verify(out, splits=splits or None)
    if splits:
        problem = listing_problem(out, listing, splits)
        note = f"the {', '.join(splits)} files of {out.name} are those of the listing that dvc.lock records"
    else:
        problem = folder_problem(out, root, version.md5)
        note = f"{out.name} hashes to the md5 {version.md5} that dvc.lock records"
    (report.problems if problem else report.notes).append(
        f"{problem} at {version.rev}" if problem else f"{note} at {version.rev}"
    )
    echo(report.render())
    return report.ok


def folder_problem(folder: Path, root: Path, md5: str) -> str | None:
    """``None`` when ``folder``'s bytes hash (as DVC hashes a directory) to ``md5``, else how not."""
    entries = hashed_entries(folder, root)
    got = entries_md5(entries)
    if got == md5:
        return None
    return f"{folder.name} hashes to md5 {got}, not the {md5} that dvc.lock records"


def listing_problem(folder: Path, listing: dict[str, str], splits: tuple[str, ...]) -> str | None:
    """``None`` when the manifest, the shards of ``splits``, the masks and the card files in
    ``folder`` have the md5s of the (checked) ``listing``, else the first that does not."""
    from patchpack.dataset.manifest import load_manifest

    manifest = load_manifest(folder)
    paths = ["manifest.json", *(e.path for s in splits for e in manifest.shards_for(s))]
    paths += [record.roi for record in manifest.sources if record.roi]
    paths += [name for name in CARD_FILES if name in listing]
    for relpath in paths:
        path = folder / relpath
        got = file_md5(path) if path.is_file() else None
        if got is None or got != listing.get(relpath):
            return (
                f"{folder.name}/{relpath} is not the committed file (md5 {got or 'missing'}, the "
                f"listing says {listing.get(relpath) or 'no such file'})"
            )
    return None


def split_names(values: list[str] | None) -> tuple[str, ...]:
    """``--split`` values, each checked against the splits a dataset has, duplicates dropped.

    Raises
    ------
    RemoteError
        When a value names no split.
    """
    for value in values or ():
        if value not in SPLITS:
            raise RemoteError(
                f"--split {value}: the dataset has no such split; choose from {', '.join(SPLITS)}"
            )
    return tuple(dict.fromkeys(values or ()))


def describe(exc: Any) -> str:
    """The last line of a DVC error, for one-line messages."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
