"""``patchpack import``: a dataset from another repository (a data registry) brought in with
``dvc import``, then proved to be the registry's committed version.

``dvc import REPO data/patches --rev v1`` downloads the folder from the registry's DVC remote and
writes an import ``.dvc`` file that records the registry's url, the rev and the commit it resolved
to (``rev_lock``); ``dvc update --rev v2`` moves it to another rev. With ``--split``, DVC's
granular import brings the manifest and each split's folder as imports of their own (one ``.dvc``
file each, inside the output folder). Either way the result is checked here from its bytes: the
whole folder's md5 against the registry's ``dvc.lock`` at that rev, or each pulled file against
the registry's listing (fetched from its remote and checked against that md5), then ``verify``.
DVC records the md5 of what it downloads but does not re-hash it, so its word is not taken.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from patchpack.dataset.card import CARD_FILES
from patchpack.errors import IntegrityError, RemoteError
from patchpack.sharing.dvcconfig import find_root, run_dvc
from patchpack.sharing.versions import committed_outs, describe, folder_problem, listing_problem

MAX_LISTING_BYTES = 256 << 20


@dataclass(frozen=True)
class Registry:
    """The dataset folder ``path`` of the registry ``url`` at ``rev`` (``commit``): its md5 and,
    for a split import, its listing (``relpath -> md5``)."""

    url: str
    rev: str | None
    commit: str
    path: str
    md5: str
    listing: dict[str, str] | None = None

    @property
    def named(self) -> str:
        return f"{self.url} at {self.rev or 'its default branch'} ({self.commit[:10]})"


def registry_url(repo: str) -> str:
    """An existing local folder as an absolute path (``dvc update`` runs from anywhere), a URL as
    it is."""
    path = Path(repo).expanduser()
    return str(path.resolve()) if "://" not in repo and path.exists() else repo


@contextlib.contextmanager
def _opened(url: str, rev: str | None) -> Iterator[Any]:
    """The registry at ``rev``, opened with DVC's API (a URL is cloned to a temporary folder).

    Raises
    ------
    RemoteError
        When ``url`` is not a git repository, ``rev`` is unknown there, or it is no DVC project.
    """
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo
    from dvc.scm import CloneError, RevError

    try:
        with Repo.open(url, rev=rev, subrepos=False, uninitialized=False) as repo:
            yield repo
    except CloneError:
        raise RemoteError(
            f"{url}: not a git repository (git cannot clone it); name the registry's git "
            f"folder or URL, the one its owner pushes tags to"
        ) from None
    except RevError:
        raise RemoteError(
            f"--rev {rev}: no such tag, branch or commit in {url}; `git ls-remote --tags {url}` "
            f"lists its tags"
        ) from None
    except NotDvcRepoError:
        raise RemoteError(
            f"{url}: a git repository but not a DVC project at {rev or 'its default branch'} "
            f"(no .dvc folder); a registry is a project that tracks its dataset with DVC"
        ) from None


def _text(repo: Any, path: str) -> str | None:
    try:
        with repo.fs.open(path, "r", encoding="utf-8") as handle:
            return str(handle.read())
    except (FileNotFoundError, IsADirectoryError):
        return None


def find_registry(repo: str, rev: str | None, path: str, *, listing: bool) -> Registry:
    """The dataset ``path`` of ``repo`` at ``rev``, as its ``dvc.lock`` (or ``path.dvc``) records it.

    Raises
    ------
    RemoteError
        When ``repo`` cannot be used (see :func:`_opened`) or records no dataset folder ``path``.
    """
    url = registry_url(repo)
    with _opened(url, rev) as opened:
        commit = str(opened.get_rev())
        outs = committed_outs(_text(opened, "dvc.lock"))
        outs |= committed_outs(_text(opened, f"{path}.dvc"), f"{path}.dvc")
        md5 = outs.get(path)
        if md5 is None or not md5.endswith(".dir"):
            folders = ", ".join(sorted(p for p, m in outs.items() if m.endswith(".dir"))) or "none"
            raise RemoteError(
                f"{url} at {rev or 'its default branch'}: dvc.lock records no dataset folder "
                f"{path} (folders it records: {folders}); pass --data with one of them"
            )
        found = _listing(opened, md5) if listing else None
    return Registry(url, rev, commit, path, md5, found)


def _listing(repo: Any, md5: str) -> dict[str, str]:
    """The registry's ``.dir`` object ``md5`` from its DVC remote, refused unless it hashes to
    ``md5``."""
    from dvc.exceptions import DvcException

    try:
        odb = repo.cloud.get_remote_odb(None, command="patchpack import")
        with odb.fs.open(odb.oid_to_path(md5), "rb") as handle:
            data = handle.read(MAX_LISTING_BYTES + 1)
    except (DvcException, OSError) as exc:
        raise RemoteError(
            f"the registry's DVC remote cannot serve the listing {md5} ({describe(exc)}); "
            f"check its remote with `patchpack remote check` in a clone of it"
        ) from exc
    got = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if got != md5.removesuffix(".dir"):
        raise IntegrityError(
            f"the registry's remote served bytes with md5 {got} for the listing {md5}: the remote "
            f"is damaged or not the owner's; nothing was kept"
        )
    try:
        return {str(item["relpath"]): str(item["md5"]) for item in json.loads(data)}
    except (ValueError, TypeError, KeyError) as exc:
        raise IntegrityError(
            f"the registry's listing {md5} is not a DVC directory listing ({type(exc).__name__}); "
            f"the registry's remote is damaged: ask its owner to `dvc push` again"
        ) from None


def _import_record(dvcfile: Path) -> dict[str, Any] | None:
    """The ``repo`` section of an import ``.dvc`` file (url, rev, rev_lock), else ``None``."""
    try:
        data = yaml.safe_load(dvcfile.read_text(encoding="utf-8")) or {}
        repo = data["deps"][0]["repo"]
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError):
        return None
    return repo if isinstance(repo, dict) else None


def _prepare_out(out: Path, parts: list[str]) -> None:
    """Refuse an ``--out`` that holds data which is not an earlier import of this dataset; make
    room for a new one (an empty folder is removed for ``dvc import``, a split import's folder is
    created)."""
    if out.exists() and not out.is_dir():
        raise RemoteError(f"--out {out}: a file is there; name a new folder")
    whole = _import_record(out.with_name(f"{out.name}.dvc")) is not None
    ours = {".gitignore"} | {name for part in parts for name in (part, f"{part}.dvc")}
    if out.is_dir() and not (whole and not parts):
        for entry in sorted(out.iterdir()):
            if entry.name not in ours:
                raise RemoteError(
                    f"--out {out} holds other data ({entry.name} is not an import of this "
                    f"dataset); nothing was changed: name a new folder with --out, or move that "
                    f"one away"
                )
    if parts:
        out.mkdir(parents=True, exist_ok=True)
    elif not whole:
        out.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            out.rmdir()  # empty (checked above): `dvc import` makes it


def _targets(out: Path, parts: list[str]) -> list[tuple[str, Path]]:
    """``(path in the registry's folder, where it goes)``: the folder, or its parts."""
    if not parts:
        return [("", out)]
    return [(part, out / part) for part in parts]


def import_dataset(
    repo: str,
    *,
    rev: str | None = None,
    data: str = "data/patches",
    splits: tuple[str, ...] = (),
    out: Path | None = None,
    root: Path = Path("."),
    echo: Callable[[str], None] = print,
) -> bool:
    """``dvc import`` the dataset ``data`` of ``repo`` at ``rev`` into ``out`` (default: its folder
    name, as ``dvc import`` does), or ``dvc update --rev`` an earlier import there; then verify it.

    With ``splits``, only the manifest, those splits' folders and the tissue masks are imported.

    Returns ``True`` only when the folder (or every pulled file) is the registry's committed version
    at ``rev`` and passes ``verify``.

    Raises
    ------
    RemoteError
        When this folder is no DVC project, the registry cannot be used, records no such dataset,
        ``out`` holds other data, or DVC fails.
    """
    start = Path(root)
    root = find_root(start)
    data = data.strip("/")
    registry = find_registry(repo, rev, data, listing=bool(splits))
    out = (start / (out or Path(Path(data).name))).resolve()
    parts = _parts(registry, splits)
    _prepare_out(out, parts)
    for part, target in _targets(out, parts):
        _import_or_update(root, registry, part, target, echo)
    return _check(root, out, registry, splits, echo)


def _parts(registry: Registry, splits: tuple[str, ...]) -> list[str]:
    """For a split import: the manifest, each split's folder and the masks' folder, as the
    registry's listing has them."""
    if not splits:
        return []
    listing = registry.listing or {}
    folders = {relpath.split("/", 1)[0] for relpath in listing if "/" in relpath}
    missing = [split for split in splits if split not in folders]
    if missing:
        raise RemoteError(
            f"--split {missing[0]}: the dataset {registry.path} of {registry.named} has no such "
            f"split (it has: {', '.join(sorted(folders - {'roi'})) or 'none'})"
        )
    cards = [name for name in CARD_FILES if name in listing]  # older datasets have none
    return ["manifest.json", *cards, *splits, *(["roi"] if "roi" in folders else [])]


def _import_or_update(
    root: Path, registry: Registry, part: str, target: Path, echo: Callable[[str], None]
) -> None:
    dvcfile = target.with_name(f"{target.name}.dvc")
    source = f"{registry.path}/{part}" if part else registry.path
    record = _import_record(dvcfile) if dvcfile.is_file() else None
    where = os.path.relpath(target, root)
    if record is None:
        args = ["import", registry.url, source, "-o", os.fspath(target)]
        args += ["--rev", registry.rev] if registry.rev else []
        _dvc(args, root, where)
        echo(f"imported {source} of {registry.named} into {where} ({where}.dvc records it)")
        return
    if registry_url(str(record.get("url", ""))) != registry.url:
        raise RemoteError(
            f"{where}.dvc imports from {record.get('url')}, not {registry.url}; name another "
            f"--out, or `dvc remove {where}.dvc` first"
        )
    args = ["update", os.fspath(dvcfile)]
    args += ["--rev", registry.rev] if registry.rev else []
    before = record.get("rev_lock")
    _dvc(args, root, where)
    after = (_import_record(dvcfile) or {}).get("rev_lock")
    moved = "already at" if before == after else f"updated from {str(before)[:10]} to"
    echo(f"{where}: {moved} {registry.named}")


def _dvc(args: list[str], root: Path, where: str) -> None:
    proc = run_dvc(args, root, check=False)
    if proc.returncode != 0:
        lines = [line.strip() for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        detail = next(
            (line for line in lines if line.startswith("ERROR")), lines[-1] if lines else ""
        )
        raise RemoteError(f"`dvc {args[0]}` of {where} failed: {detail}")


def _check(
    root: Path, out: Path, registry: Registry, splits: tuple[str, ...], echo: Callable[[str], None]
) -> bool:
    """The imported folder against the registry's ``dvc.lock`` at the rev, then ``verify``."""
    from patchpack.audit.verify import verify

    report = verify(out, splits=splits or None)
    if splits:
        problem = listing_problem(out, registry.listing or {}, splits)
    else:
        problem = folder_problem(out, root, registry.md5)
    at = f"{registry.path} at {registry.rev or registry.commit[:10]} in {registry.url}"
    if problem:
        report.problems.append(
            f"{problem} for {at}: not the registry's dataset (`patchpack import` again restores it)"
        )
    else:
        what = f"the {', '.join(splits)} files of " if splits else ""
        report.notes.append(
            f"{what}{out.name} match the md5 {registry.md5} that dvc.lock records for {at}"
        )
    echo(report.render())
    return report.ok
