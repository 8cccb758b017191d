"""``patchpack pull``: get the committed dataset from the DVC remote, or rebuild it, and prove it.

1. Find what git committed for the dataset folder: its stage and hash in ``dvc.lock`` (or a
   ``.dvc`` file).
2. Probe the default remote (credentials, endpoint, bucket, list, read; no write) and run
   ``dvc pull``. When the remote cannot be used, say why in one line and offer ``--rebuild``.
3. With ``--rebuild``, run ``dvc repro STAGE`` instead; a rebuild whose hash differs from the
   committed ``dvc.lock`` fails.
4. Hash the folder's bytes as DVC hashes a directory, compare that md5 with the committed
   ``dvc.lock`` (DVC does not re-hash what it downloads, and ``dvc status`` trusts its own state, so
   neither can prove it), and run ``patchpack verify``.

A partner never gets exit 0 on data that was not verified: the result is ``True`` only when the
folder matches the committed hash and every shard matches its manifest.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from patchpack.dataset.manifest import dvc_cache_objects
from patchpack.errors import PatchpackError, RemoteError
from patchpack.sharing.dvcconfig import find_root, load_remote, run_dvc
from patchpack.sharing.dvchash import (
    committed_listing,
    differences,
    entries_md5,
    hashed_entries,
)
from patchpack.sharing.remote import check_remote


@dataclass(frozen=True)
class Tracked:
    """A DVC-tracked folder: its path in the project, the stage (or .dvc file) and committed md5."""

    path: str
    stage: str | None
    dvcfile: str | None
    md5: str | None
    size: int | None = None  # bytes, as DVC recorded them

    @property
    def target(self) -> str:
        """What to name on ``dvc status`` / ``dvc repro``: the stage, else the .dvc file."""
        return self.stage or self.dvcfile or self.path


def tracked_output(root: Path, data: Path) -> Tracked:
    """Find ``data`` (absolute, or relative to the working directory) among the outputs recorded in
    ``root/dvc.lock`` or in ``data.dvc``.

    Raises
    ------
    RemoteError
        When DVC does not track ``data``.
    """
    absolute = data if data.is_absolute() else (Path.cwd() / data)
    try:
        rel = absolute.resolve().relative_to(root).as_posix()
    except ValueError:
        raise RemoteError(f"{data}: not inside the DVC project {root}") from None
    lock = root / "dvc.lock"
    if lock.exists():
        stages = (yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages", {})
        for name, stage in sorted(stages.items()):
            for out in stage.get("outs", []):
                if out.get("path") == rel:
                    return Tracked(rel, name, None, out.get("md5"), _size(out))
    dvcfile = root / f"{rel}.dvc"
    if dvcfile.exists():
        outs = (yaml.safe_load(dvcfile.read_text(encoding="utf-8")) or {}).get("outs", [])
        md5 = outs[0].get("md5") if outs else None
        return Tracked(rel, None, f"{rel}.dvc", md5, _size(outs[0]) if outs else None)
    raise RemoteError(
        f"{rel}: DVC does not track it (not an output in dvc.lock, no {rel}.dvc); "
        f"pass --data with the dataset folder, or run `dvc repro` and commit dvc.lock"
    )


def _size(out: dict[str, object]) -> int | None:
    size = out.get("size")
    return size if isinstance(size, int) and size >= 0 else None


def check_space(root: Path, tracked: Tracked) -> None:
    """Refuse a pull that cannot fit: DVC would fail half-way with a misleading message.

    Raises
    ------
    RemoteError
        When the disk holding the project has less free space than the dataset's size.
    """
    if not tracked.size:
        return
    free = shutil.disk_usage(root).free
    if free < tracked.size:
        raise RemoteError(
            f"{root}: no space for {tracked.path}: it takes {tracked.size / 1e6:,.1f} MB, only "
            f"{free / 1e6:,.1f} MB are free there; free space and run `patchpack pull` again"
        )


def _pull_failure(tracked: Tracked, root: Path, proc: subprocess.CompletedProcess[str]) -> str:
    """Why ``dvc pull`` failed, in one line: the real cause when DVC buries it."""
    text = proc.stderr + proc.stdout
    free = shutil.disk_usage(root).free
    # DVC reports a disk that filled up during checkout as missing files: tell it by the space left
    full = tracked.size is not None and free < tracked.size
    if full or "No space left on device" in text or "[Errno 28]" in text:
        return (
            f"{root}: no space left on the device while pulling {tracked.path} "
            f"({free / 1e6:,.1f} MB free now); free space and run `patchpack pull` again"
        )
    lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
    return f"`dvc pull {tracked.path}` failed: {' '.join(lines[-2:]) or proc.returncode}"


def locked_md5(root: Path, tracked: Tracked) -> str | None:
    """The md5 that ``dvc.lock`` (or the .dvc file) records now for ``tracked``."""
    try:
        return tracked_output(root, root / tracked.path).md5
    except RemoteError:
        return None


def folder_state(root: Path, tracked: Tracked, committed: str | None = None) -> str | None:
    """``None`` when the folder's bytes hash to the md5 that DVC recorded (``committed``, else what
    ``dvc.lock`` or the ``.dvc`` file says now), else one line saying how it differs.

    The md5 is computed here from every byte (:func:`patchpack.sharing.dvchash.dir_md5`): DVC's own
    status trusts its state database and cache, which a remote or a rewritten file can fool.
    """
    want = committed if committed is not None else tracked.md5
    folder = root / tracked.path
    if not folder.is_dir():
        return f"{tracked.path} is missing"
    entries = hashed_entries(folder, root)
    got = entries_md5(entries)
    if want is None or got == want:
        return None
    listing = committed_listing(dvc_cache_objects(root), want)
    which = (
        differences(entries, listing)
        if listing is not None
        else "the committed listing is not in the DVC cache, or does not hash to its name"
    )
    return f"{tracked.path} hashes to md5 {got}, but dvc.lock records {want} ({which})"


def remote_problem(root: Path, echo: Callable[[str], None]) -> str | None:
    """Why the default remote cannot serve a pull, in one line; ``None`` when it can."""
    try:
        spec = load_remote(root)
    except RemoteError as exc:
        return str(exc)
    if not spec.is_s3 and re.match(r"^\w+://", spec.url):
        return None  # not an S3 or local remote: patchpack cannot probe it, DVC will say
    report = check_remote(spec, write=False)
    echo(report.render())
    return None if report.ok else report.failures[0].detail


def pull(
    data: Path,
    *,
    root: Path = Path("."),
    rebuild: bool = False,
    echo: Callable[[str], None] = print,
) -> bool:
    """Pull ``data`` from the default DVC remote (or rebuild it) and verify it.

    ``data`` is relative to ``root``, the project folder (or a folder inside it).

    Returns ``True`` only when the folder matches the committed hash and passes ``verify``.

    Raises
    ------
    RemoteError
        When the remote cannot be used and ``rebuild`` is false (the message offers ``--rebuild``).
    PatchpackError
        When the rebuild itself fails (e.g. the source images are missing).
    """
    from patchpack.audit.verify import verify

    start = Path(root)
    root = find_root(start)
    tracked = tracked_output(root, data if data.is_absolute() else start / data)
    committed = tracked.md5
    problem = remote_problem(root, echo)
    if problem is None:
        check_space(root, tracked)
        proc = run_dvc(["pull", tracked.path], root, check=False)
        if proc.returncode == 0:
            echo(f"pulled {tracked.path} from the DVC remote")
        elif "no space left" in (problem := _pull_failure(tracked, root, proc)):
            raise RemoteError(problem)
    if problem is not None:
        how = (
            f"`dvc repro {tracked.stage}`"
            if tracked.stage
            else "nothing (it was added with `dvc add`)"
        )
        if not rebuild or tracked.stage is None:
            raise RemoteError(
                f"{problem} -- to rebuild {tracked.path} locally instead, run `patchpack pull --rebuild` "
                f"(runs {how}; needs the source images)"
            )
        echo(f"remote unavailable: {problem}")
        echo(f"rebuilding {tracked.path} locally with {how}")
        proc = run_dvc(["repro", tracked.stage], root, check=False)
        if proc.returncode != 0:
            lines = [
                line.strip() for line in (proc.stderr + proc.stdout).splitlines() if line.strip()
            ]
            raise PatchpackError(
                f"rebuild failed: `dvc repro {tracked.stage}` exited {proc.returncode}: "
                f"{lines[-1] if lines else ''}; check that the stage's source images are present"
            )
        rebuilt = locked_md5(root, tracked)
        if committed is not None and rebuilt != committed:
            echo(
                f"FAIL rebuilt {tracked.path} has md5 {rebuilt}, the committed dvc.lock says {committed}: "
                f"not the partner's dataset (see `git diff dvc.lock`; `git checkout dvc.lock` restores it)"
            )
            return False
        echo(f"rebuilt {tracked.path}: md5 {rebuilt} equals the committed dvc.lock")
    state = folder_state(root, tracked, committed)
    if state is not None:
        echo(
            f"FAIL {state}: not the committed dataset (the remote served other bytes, or the "
            f"folder was changed); do not use it"
        )
        return False
    echo(f"{tracked.path} hashes to the md5 {committed} that dvc.lock records")
    report = verify(root / tracked.path)
    echo(report.render())
    return report.ok


def committed_state(data: Path) -> tuple[str | None, str]:
    """Compare the dataset folder ``data`` with the hash git committed for it (dvc.lock or .dvc).

    Returns ``(problem, note)``: ``problem`` is ``None`` when the folder is the committed one, or when
    no DVC project tracks it (the note then says the comparison was not made). Forged manifests and
    shards can be made self-consistent; the md5 in the committed dvc.lock cannot be, short of a commit.
    """
    try:
        root = find_root(data.parent if data.is_absolute() else Path.cwd() / data.parent)
        tracked = tracked_output(root, data)
    except RemoteError:
        return None, "not compared with dvc.lock: the folder is not a DVC-tracked output"
    if tracked.md5 is None:
        return None, f"not compared with dvc.lock: no hash recorded for {tracked.path} yet"
    state = folder_state(root, tracked)
    if state is not None:
        return (
            f"{state}, so it is not the committed dataset: `patchpack pull` (or `dvc checkout`) "
            f"restores it; after a deliberate change, `dvc commit {tracked.target}` records it"
        ), ""
    return None, f"{tracked.path} hashes to the md5 {tracked.md5} that dvc.lock records"
