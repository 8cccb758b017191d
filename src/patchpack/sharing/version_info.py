"""Which committed version a dataset folder holds, derived from its bytes (``patchpack info``).

The folder is hashed as DVC hashes a directory, and that md5 is looked up in ``dvc.lock``, and in
the ``.dvc`` file that ``dvc add`` writes beside the folder, at every tag (newest first), HEAD and
the recent commits that changed ``dvc.lock`` or a ``.dvc`` file, read with one ``git cat-file
--batch``; or in the import ``.dvc`` file beside the folder. No marker file is read that could
name a version the bytes are not. A folder holding only files of one version's
listing (what ``pull --split`` leaves) is named as part of that version.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from patchpack.errors import RemoteError
from patchpack.params import SPLITS
from patchpack.sharing.dvcconfig import find_root
from patchpack.sharing.dvchash import committed_listing, entries_md5, file_md5, hashed_entries
from patchpack.sharing.versions import committed_outs, git

DVC_IGNORED = (".git", ".hg", ".dvc")  # what DVC leaves out of a folder with no .dvcignore
RECENT_COMMITS = 200  # commits that changed dvc.lock or a .dvc file, searched after the tags


def _candidates(root: Path) -> list[tuple[str, str]]:
    """``(name, commit)`` to search: every tag (newest first), then HEAD, then the recent commits
    that changed ``dvc.lock`` or a ``.dvc`` file."""
    tags = git(
        root,
        "for-each-ref",
        "--sort=-creatordate",
        "--format=%(refname:short) %(objectname) %(*objectname)",
        "refs/tags",
        check=False,
    ).stdout.splitlines()
    found = []
    for line in tags:
        name, obj, *peeled = line.split()
        found.append((name, peeled[0] if peeled else obj))
    log = git(
        root,
        "log",
        f"-n{RECENT_COMMITS}",
        "--format=%H",
        "HEAD",
        "--",
        "dvc.lock",
        "*.dvc",
        check=False,
    ).stdout.split()
    head = git(root, "rev-parse", "--verify", "--quiet", "HEAD", check=False).stdout.strip()
    found += [("HEAD", head)] if head else []
    return found + [(commit[:10], commit) for commit in log]


def _blobs(root: Path, wanted: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """``(commit, path) -> text`` of each file that exists at that commit, read in one
    ``git cat-file --batch`` (fast for many commits)."""
    unique = list(dict.fromkeys(wanted))
    if not unique:
        return {}
    proc = subprocess.run(
        ["git", "cat-file", "--batch"],
        cwd=root,
        input="".join(f"{commit}:{path}\n" for commit, path in unique).encode(),
        capture_output=True,
        check=False,
    )
    texts, data, pos = {}, proc.stdout, 0
    for key in unique:
        end = data.find(b"\n", pos)
        if end < 0:
            break
        header = data[pos:end].split()
        pos = end + 1
        if len(header) == 3 and header[2].isdigit():  # "<sha> <type> <size>", then its bytes
            size = int(header[2])
            if header[1] == b"blob":
                texts[key] = data[pos : pos + size].decode("utf-8", "replace")
            pos += size + 1  # a tree where a file was looked for is skipped, not read as one
    return texts


def folder_version(folder: Path, root: Path | None = None) -> str:
    """Which committed version ``folder`` holds, in words, derived from its bytes: its DVC md5
    looked up in ``dvc.lock`` and in the folder's ``dvc add`` file at every tag, HEAD and the
    recent commits that changed them (or in the import ``.dvc`` file beside it); a folder holding
    only files of one version's listing (a ``pull --split``) is named as part of it.

    ``root`` is the git and DVC project to search (default: the one holding ``folder``, else the
    working directory's).
    """
    folder = Path(folder)
    try:
        root = root or _project(folder)
    except RemoteError:
        return "not in a DVC project: no versions to compare with"
    entries = _entries(folder, root)
    md5 = entries_md5(entries)
    imported = _imported_version(folder, md5)
    if imported is not None:
        return imported
    try:
        if git(root, "rev-parse", "--git-dir", check=False).returncode != 0:
            return f"not in a git repository ({root}): no versions to compare with"
        committed = _committed(root, _dvcfile(folder, root))
    except RemoteError as exc:  # git is not installed
        return str(exc)
    for names, commit, outs in committed:
        path = next((p for p, value in outs.items() if value == md5), None)
        if path is not None:
            where = f"{path} records it" if path.endswith(".dvc") else f"{path} in its dvc.lock"
            return f"{_label(names, commit)} (commit {commit[:10]}: {where}, md5 {md5})"
    return _part_of(root, entries, committed) or (
        f"not a committed version (md5 {md5} is in no dvc.lock or .dvc file at a tag or recent "
        f"commit)"
    )


def _dvcfile(folder: Path, root: Path) -> str | None:
    """The path in the repository of the ``.dvc`` file that ``dvc add`` writes for ``folder``."""
    try:
        relative = folder.resolve().relative_to(root.resolve())
    except ValueError:
        return None
    return f"{relative.as_posix()}.dvc" if relative.parts else None


def _committed(
    root: Path, dvcfile: str | None = None
) -> list[tuple[list[str], str, dict[str, str]]]:
    """``(names, commit, path -> md5)`` for every commit searched, in :func:`_candidates` order:
    the outputs of its ``dvc.lock``, and the output of ``dvcfile`` (a ``dvc add``) where given."""
    candidates = _candidates(root)
    # git names a commit's files from the top of the repository, which may hold the project lower
    prefix = git(root, "rev-parse", "--show-prefix", check=False).stdout.strip()
    commits = [commit for _, commit in candidates]
    files = [(commit, f"{prefix}dvc.lock") for commit in commits]
    files += [(commit, f"{prefix}{dvcfile}") for commit in commits] if dvcfile else []
    texts = _blobs(root, files)
    by_commit: dict[str, list[str]] = {}
    for name, commit in candidates:
        names = by_commit.setdefault(commit, [])
        names += [] if name in names else [name]
    found = []
    for commit, names in by_commit.items():
        outs = committed_outs(texts.get((commit, f"{prefix}dvc.lock")))
        if dvcfile:  # named by the .dvc file, which the message says records it
            added = committed_outs(texts.get((commit, f"{prefix}{dvcfile}")), dvcfile)
            if added:
                outs[dvcfile] = next(iter(added.values()))
        found.append((names, commit, outs))
    return found


def _label(names: list[str], commit: str) -> str:
    return ", ".join([name for name in names if name != commit[:10]] or [commit[:10]])


def _part_of(
    root: Path,
    entries: list[tuple[str, str]],
    committed: list[tuple[list[str], str, dict[str, str]]],
) -> str | None:
    """The version whose listing (in the DVC cache, checked against its md5) holds every file of
    the folder, with those bytes: what ``pull --split`` leaves."""
    from patchpack.dataset.manifest import dvc_cache_objects

    cache, seen = dvc_cache_objects(root), {}
    for names, commit, outs in committed:
        for path, value in outs.items():
            if value not in seen:
                seen[value] = committed_listing(cache, value)
            listing = seen[value]
            if entries and listing and all(listing.get(rel) == md5 for rel, md5 in entries):
                splits = sorted({rel.split("/")[0] for rel, _ in entries} & set(SPLITS))
                return (
                    f"part of {_label(names, commit)} (commit {commit[:10]}: {len(entries)} of "
                    f"the {len(listing)} files of {path}, splits {', '.join(splits) or 'none'}; "
                    f"`patchpack verify --split` checks them)"
                )
    return None


def _entries(folder: Path, root: Path) -> list[tuple[str, str]]:
    """:func:`patchpack.sharing.dvchash.hashed_entries`, without loading DVC when no
    ``.dvcignore`` on the way from ``root`` to (or inside) ``folder`` holds a pattern: the files are
    then exactly those outside DVC's default ignores (``.git``, ``.hg``, ``.dvc``)."""
    folder, root = folder.resolve(), root.resolve()
    above = [root, *(p for p in folder.parents if p.is_relative_to(root) and p != root), folder]
    found, rules = [], [d / ".dvcignore" for d in above]
    for top, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in DVC_IGNORED)
        rules += [Path(top, ".dvcignore")] if ".dvcignore" in names else []
        found += [Path(top, name) for name in names]
    if any(_has_patterns(rule) for rule in rules):
        return hashed_entries(folder, root)
    return sorted((path.relative_to(folder).as_posix(), file_md5(path)) for path in found)


def _has_patterns(rule: Path) -> bool:
    try:
        lines = rule.read_text(encoding="utf-8").splitlines()
    except OSError:
        return False
    return any(line.strip() and not line.lstrip().startswith("#") for line in lines)


def _imported_version(folder: Path, md5: str) -> str | None:
    """The registry's rev, when ``folder.dvc`` imports it and records the md5 the bytes have."""
    folder = folder.resolve()  # "." has no name to put ".dvc" after
    dvcfile = folder.with_name(f"{folder.name}.dvc")
    try:
        data = yaml.safe_load(dvcfile.read_text(encoding="utf-8")) or {}
        repo, (out,) = data["deps"][0]["repo"], data["outs"]
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError, ValueError):
        return None
    if not isinstance(repo, dict) or not isinstance(out, dict) or out.get("md5") != md5:
        return None
    rev, lock = repo.get("rev") or "the default branch", str(repo.get("rev_lock", ""))
    return f"{rev} of {repo.get('url')} (commit {lock[:10]}, as {dvcfile.name} imports it)"


def _project(folder: Path) -> Path:
    try:
        return find_root(folder.resolve().parent)
    except RemoteError:
        return find_root(Path.cwd())
