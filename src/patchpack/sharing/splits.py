"""``patchpack pull --split``: one split (or a few) straight from the remote's objects, verified.

DVC's own partial pull of a directory output has regressed several times (DVC issues 10199,
10069, 6124), and making each split its own DVC output would change every committed ``dvc.lock``.
So the objects a split needs are fetched here from the remote's content-addressed layout: the
committed ``.dir`` hash names the listing, the listing names each file's object, and each object is
checked against its md5 before it reaches the folder (see :mod:`patchpack.sharing.objects`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from patchpack.dataset.card import CARD_FILES
from patchpack.dataset.manifest import dvc_cache_objects
from patchpack.errors import IntegrityError, RemoteError
from patchpack.params import SPLITS
from patchpack.sharing.dvcconfig import find_root
from patchpack.sharing.dvchash import committed_listing, file_md5
from patchpack.sharing.pull import Tracked, remote_problem, tracked_output


def pull_splits(
    data: Path,
    splits: list[str],
    *,
    root: Path = Path("."),
    echo: Callable[[str], None] = print,
) -> bool:
    """Fetch the manifest, the dataset card (when the dataset has one) and the shards of ``splits``
    only, straight from the remote's objects, and verify exactly those; the other splits are
    reported as not pulled.

    DVC's own partial pull of a directory output has regressed several times, so the objects are
    named here: the committed ``.dir`` hash names the listing (checked against that hash, then kept
    in the DVC cache for ``verify --split``), the listing names each file's object, and every object
    is checked against its md5 before it reaches the folder. Files already there with the right md5
    are not fetched again, so pulling another split later adds it.

    Raises
    ------
    RemoteError
        When the remote cannot be used, lacks an object, or no hash is committed for ``data``.
    IntegrityError
        When the remote serves an object whose bytes do not hash to its name.
    """
    from patchpack.audit.verify import verify
    from patchpack.dataset.manifest import load_manifest
    from patchpack.sharing.objects import RemoteObjects

    start = Path(root)
    root = find_root(start)
    tracked = tracked_output(root, data if data.is_absolute() else start / data)
    if tracked.md5 is None or not tracked.md5.endswith(".dir"):
        raise RemoteError(
            f"{tracked.path}: dvc.lock records no folder hash for it yet; the owner runs "
            f"`dvc repro` and commits dvc.lock"
        )
    problem = remote_problem(root, echo)
    if problem is not None:
        raise RemoteError(
            f"{problem} -- `patchpack pull --rebuild` rebuilds the whole dataset instead"
        )
    folder = root / tracked.path
    with RemoteObjects(root) as remote:
        raw, listing = remote.listing(tracked.md5)
        _keep_listing(root, tracked.md5, raw)
        files = _fetch(remote, listing, folder, ["manifest.json"])
        manifest = load_manifest(folder)
        wanted = [entry.path for split in splits for entry in manifest.shards_for(split)]
        wanted += sorted(record.roi for record in manifest.sources if record.roi)
        wanted += [name for name in CARD_FILES if name in listing]  # older datasets have none
        files += _fetch(remote, listing, folder, wanted)
        received = remote.received
    others = [split for split in SPLITS if split not in splits]
    echo(
        f"pulled {', '.join(splits)} of {tracked.path} from the DVC remote: {files} files fetched, "
        f"{received:,} bytes; {', '.join(others) or 'no other split'} not pulled"
    )
    report = verify(folder, splits=tuple(splits))
    problem, note = split_state(root, tracked, tuple(splits))
    (report.problems if problem else report.notes).append(problem or note)
    echo(report.render())
    return report.ok


def _keep_listing(root: Path, md5: str, raw: bytes) -> None:
    """Keep the (checked) listing in the DVC cache, where DVC keeps it too."""
    cache = dvc_cache_objects(root)
    if cache is None:
        return
    value = md5.removesuffix(".dir")
    path = cache / "md5" / value[:2] / f"{value[2:]}.dir"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(raw)
        tmp.replace(path)


def _fetch(remote: Any, listing: dict[str, str], folder: Path, wanted: list[str]) -> int:
    """Fetch each of ``wanted`` (paths in the folder) unless it is already there with its md5."""
    fetched = 0
    for relpath in wanted:
        md5 = listing.get(relpath)
        if md5 is None:
            raise IntegrityError(
                f"{relpath}: the manifest names it but the committed listing does not; the "
                f"dataset was committed damaged: ask the owner to extract and commit again"
            )
        target = folder / relpath
        if target.is_file() and not target.is_symlink() and file_md5(target) == md5:
            continue
        remote.download(md5, target)
        fetched += 1
    return fetched


def split_state(root: Path, tracked: Tracked, splits: tuple[str, ...]) -> tuple[str | None, str]:
    """Compare the files of ``splits`` (and the manifest and masks) with the committed listing.

    Returns ``(problem, note)`` as :func:`committed_state` does; the listing must be in the DVC
    cache and hash to the committed md5 (``patchpack pull --split`` keeps it there).
    """
    from patchpack.dataset.manifest import load_manifest

    if tracked.md5 is None:
        return None, f"not compared with dvc.lock: no hash recorded for {tracked.path} yet"
    listing = committed_listing(dvc_cache_objects(root), tracked.md5)
    if listing is None:
        return (
            f"{tracked.path}: the committed listing {tracked.md5} is not in the DVC cache, so the "
            f"pulled splits cannot be compared with dvc.lock: run `patchpack pull --split ...`"
        ), ""
    folder = root / tracked.path
    manifest = load_manifest(folder)
    paths = ["manifest.json", *(e.path for s in splits for e in manifest.shards_for(s))]
    paths += [record.roi for record in manifest.sources if record.roi]
    paths += [name for name in CARD_FILES if name in listing]
    for relpath in paths:
        path = folder / relpath
        want = listing.get(relpath)
        got = file_md5(path) if path.is_file() else None
        if want is None or got != want:
            return (
                f"{tracked.path}/{relpath} is not the committed file (md5 {got or 'missing'}, "
                f"dvc.lock's listing says {want or 'no such file'}): `patchpack pull --split` "
                f"restores it"
            ), ""
    return None, (
        f"the {', '.join(splits)} files of {tracked.path} are those of the listing {tracked.md5} "
        f"that dvc.lock records"
    )


def committed_split_state(data: Path, splits: tuple[str, ...]) -> tuple[str | None, str]:
    """:func:`split_state` for the folder ``data``, found in its DVC project (``verify --split``)."""
    try:
        root = find_root(data.parent if data.is_absolute() else Path.cwd() / data.parent)
        tracked = tracked_output(root, data)
    except RemoteError:
        return None, "not compared with dvc.lock: the folder is not a DVC-tracked output"
    return split_state(root, tracked, splits)
