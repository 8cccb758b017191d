"""Nothing lost, nothing read from outside, no tracebacks: concurrent writers, killed swaps, full disks,
hostile manifests and forged shards. Each test reproduces a failure seen before the fix."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from patchpack.audit.info import info
from patchpack.audit.verify import verify
from patchpack.dataset import outdir, shards, work
from patchpack.dataset.card import make_card
from patchpack.dataset.extract import extract
from patchpack.dataset.manifest import ShardEntry, fingerprint, load_manifest
from patchpack.dataset.shards import read_shard, write_shard
from patchpack.engine import output
from patchpack.engine.output import DatasetChanged, exclusive_writer
from patchpack.errors import IntegrityError, OutputError
from patchpack.training.loader import open_dataset
from support.commands import PATCHPACK, file_digests, run_patchpack
from support.images import make_folder, small_params, write_params


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder with images, params.yaml and an extracted dataset at ``out``."""
    make_folder(tmp_path / "images")
    write_params(tmp_path / "params.yaml", tmp_path / "images")
    done = run_patchpack("extract", "--out", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return tmp_path


def one_line_error(result: subprocess.CompletedProcess[str], verb: str = "extract") -> str:
    """The error line of a failed command: exit 2, exactly one line on stderr, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"patchpack {verb}: error: "), result.stderr
    return lines[0]


# --- 1. one writer at a time; readers never report a half-swapped dataset -------------------------


def test_a_second_writer_stops_naming_the_first(project: Path) -> None:
    before = file_digests(project / "out")
    with exclusive_writer((project / "out").resolve()):
        second = run_patchpack("extract", "--out", "out", cwd=project)
    line = one_line_error(second)
    assert f"another extract (pid {os.getpid()}) is writing out" in line
    assert file_digests(project / "out") == before


def test_two_extracts_at_once_leave_one_valid_dataset(project: Path) -> None:
    """Two real processes race for the same --out: each finishes or stops cleanly, never both crash."""
    write_params(project / "other.yaml", project / "images", extract={"per_image": 40})
    commands = [
        [*PATCHPACK, "extract", "--out", "out"],
        [*PATCHPACK, "extract", "--out", "out", "--params", "other.yaml"],
    ]
    running = [
        subprocess.Popen(c, cwd=project, stderr=subprocess.PIPE, text=True) for c in commands
    ]
    results = [(p.wait(timeout=120), p.communicate()[1]) for p in running]
    for code, stderr in results:
        assert code == 0 or (code == 2 and "another extract (pid" in stderr), stderr
    assert any(code == 0 for code, _ in results)
    assert verify(project / "out").ok
    assert not list(project.glob(".out.partial-*")) and not list(project.glob(".out.swap-*"))


def test_a_reader_during_a_swap_says_run_again(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """verify used to report 'different pixels' when an extract swapped the folder under it."""
    extract(small_params(project / "images", extract={"per_image": 40}), out=project / "other")
    original = read_shard
    swapped: list[bool] = []

    def read_then_swap(path: Path, layout: object = None) -> object:
        if not swapped:  # the first shard is read from the old folder, the rest from the new one
            swapped.append(True)
            output.swap_in(project / "other", project / "out")
        return original(path, layout)  # type: ignore[arg-type]

    monkeypatch.setattr("patchpack.audit.verify.read_shard", read_then_swap)
    with pytest.raises(
        DatasetChanged, match=r"changed while it was being read.*run the command again"
    ):
        verify(project / "out")


def test_the_loader_holds_the_shards_it_opened(project: Path) -> None:
    """An extract that replaces the folder mid-epoch cannot mix its shards into an open dataset."""
    with open_dataset(project / "out") as dataset:
        before = [labels for _, labels in dataset.split("train").batches(16, shuffle=False)]
        extract(small_params(project / "images", extract={"per_image": 40}), out=project / "out")
        after = [labels for _, labels in dataset.split("train").batches(16, shuffle=False)]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


# --- 2. a killed swap never leaves the output without a dataset -----------------------------------

KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from patchpack.engine import output
    from patchpack.dataset.extract import extract
    from support.images import small_params

    step, mode = int(sys.argv[1]), sys.argv[2]
    real_rename, real_exchange, calls = os.rename, output.exchange, []

    def die_at(name):
        calls.append(name)
        if len(calls) == step:
            os.kill(os.getpid(), signal.SIGKILL)

    def rename(a, b):
        die_at("rename")
        real_rename(a, b)

    def exchange(a, b):
        die_at("exchange")
        done = mode == "exchange" and real_exchange(a, b)
        die_at("after-exchange")
        return done

    output.os.rename = rename
    output.exchange = exchange
    extract(small_params(Path("images"), extract={"per_image": 40}), out=Path("out"))
    """
)


@pytest.mark.parametrize(
    ("mode", "step"),
    [("exchange", 1), ("exchange", 2), ("exchange", 3), ("fallback", 4), ("fallback", 5)],
    ids=["before-swap", "before-exchange", "after-exchange", "fallback-aside", "fallback-in"],
)
def test_a_kill_at_any_step_of_the_swap_leaves_a_dataset(
    project: Path, mode: str, step: int
) -> None:
    old = load_manifest(project / "out").fingerprint
    new = extract(small_params(project / "images", extract={"per_image": 40}), out=project / "ref")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, str(step), mode], cwd=project, env=env, check=False
    )
    assert killed.returncode == -9  # the kill happened at that step
    report = verify(project / "out")  # recovers a dataset a two-rename swap left aside
    assert report.ok, report.render()
    assert load_manifest(project / "out").fingerprint in (old, new.fingerprint)
    again = run_patchpack("extract", "--out", "out", "--params", "p40.yaml", cwd=_p40(project))
    assert again.returncode == 0, again.stderr
    assert file_digests(project / "out") == file_digests(project / "ref")
    assert sorted(p.name for p in project.iterdir() if p.name.startswith(".out")) == [".out.lock"]


def _p40(project: Path) -> Path:
    write_params(project / "p40.yaml", project / "images", extract={"per_image": 40})
    return project


def test_recovery_restores_an_output_left_aside(project: Path) -> None:
    os.rename(project / "out", project / ".out.old-12345")
    assert run_patchpack("info", "out", cwd=project).returncode == 0
    assert (project / "out" / "manifest.json").is_file()
    assert not (project / ".out.old-12345").exists()


# --- 3. full disks, size limits and unwritable outputs are one line, the old dataset intact -------


def test_file_size_limit_is_one_line_and_keeps_the_dataset(project: Path) -> None:
    """HDF5 used to segfault (exit -11) when a write failed; shards are now built in memory."""
    before = file_digests(project / "out")
    write_params(project / "p40.yaml", project / "images", extract={"per_image": 40})

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    result = subprocess.run(
        [*PATCHPACK, "extract", "--out", "out", "--params", "p40.yaml"],
        cwd=project,
        capture_output=True,
        text=True,
        preexec_fn=limit,
        check=False,
    )
    assert "file size limit reached" in one_line_error(result)
    assert file_digests(project / "out") == before


def test_a_full_disk_is_one_line_and_keeps_the_dataset(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = file_digests(project / "out")

    def full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(work, "write_bytes_atomic", full)
    with pytest.raises(OutputError, match="no space left on the device; free space"):
        extract(small_params(project / "images", extract={"per_image": 40}), out=project / "out")
    assert file_digests(project / "out") == before


def test_free_space_is_checked_before_starting(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = shutil.disk_usage(project)
    monkeypatch.setattr(outdir.shutil, "disk_usage", lambda path: usage._replace(free=1000))
    with pytest.raises(OutputError, match=r"needs at least .* MB .* only 0 MB are free"):
        extract(small_params(project / "images", extract={"per_image": 40}), out=project / "out")
    assert not list(project.glob(".out.partial-*"))


def test_an_unwritable_output_is_one_line(project: Path) -> None:
    (project / "a-file").write_text("not a folder")
    line = one_line_error(run_patchpack("extract", "--out", "a-file/patches", cwd=project))
    assert "a-file" in line and "choose a writable --out" in line


@pytest.mark.parametrize(
    ("out", "message"),
    [
        (".", "is the current folder or holds it"),
        ("images/patches", "is inside the source folder"),
        ("..", "is the current folder or holds it"),
    ],
)
def test_outputs_that_would_destroy_data_are_refused(project: Path, out: str, message: str) -> None:
    assert message in one_line_error(run_patchpack("extract", "--out", out, cwd=project))


# --- 4-6. a pulled dataset is someone else's: validate everything before trusting it -------------


def _edit_manifest(folder: Path, edit: object) -> None:
    path = folder / "manifest.json"
    raw = json.loads(path.read_text())
    edit(raw)  # type: ignore[operator]
    path.write_text(json.dumps(raw))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda m: m["shards"][0].update(path="../../x.h5"),
            r"shards\[0\].path must be a string like",
        ),
        (lambda m: m["shards"][0].update(path="/etc/passwd"), r"shards\[0\].path must be"),
        (lambda m: m.pop("counts"), r"manifest.counts is missing"),
        (lambda m: m.update(extra=1), r"manifest.extra is not a manifest key"),
        (lambda m: m["shards"][0].update(patches="40"), r"shards\[0\].patches must be an integer"),
        (
            lambda m: m["shards"][0].update(patches=10**12),
            r"shards\[0\].patches must be an integer",
        ),
        (lambda m: m["params"]["extract"].update(patch_size=10**9), r"extract.patch_size"),
        (lambda m: m.update(class_names="abc"), r"class_names must be a list of strings"),
    ],
    ids=[
        "traversal",
        "absolute",
        "missing-key",
        "extra-key",
        "wrong-type",
        "huge-count",
        "huge-patch",
        "class-names",
    ],
)
def test_malformed_manifests_fail_in_one_line(project: Path, edit: object, message: str) -> None:
    _edit_manifest(project / "out", edit)
    with pytest.raises(IntegrityError, match=message):
        load_manifest(project / "out")
    report = verify(project / "out")
    assert not report.ok and len(report.problems) == 1
    for verb in ("info", "preview"):
        assert "manifest" in one_line_error(run_patchpack(verb, "out", cwd=project), verb)
    with pytest.raises(IntegrityError, match=message):
        open_dataset(project / "out")


def test_deeply_nested_json_is_not_a_recursion_error(project: Path) -> None:
    (project / "out" / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(IntegrityError, match="not valid JSON"):
        load_manifest(project / "out")
    assert "not valid JSON" in one_line_error(run_patchpack("info", "out", cwd=project), "info")


def test_a_shard_symlinked_outside_the_folder_is_refused(project: Path) -> None:
    entry = load_manifest(project / "out").shards[0]
    outside = project / "elsewhere.h5"
    shutil.copyfile(project / "out" / entry.path, outside)
    (project / "out" / entry.path).unlink()
    (project / "out" / entry.path).symlink_to(outside)
    report = verify(project / "out")
    assert not report.ok
    assert any(
        p.startswith(entry.path) and "outside the dataset folder" in p for p in report.problems
    )
    with pytest.raises(IntegrityError, match="outside the dataset folder"):
        open_dataset(project / "out")


def _forge(
    folder: Path, index: int, data: shards.ShardData, *, entry: bool, fingerprint_too: bool
) -> None:
    """Replace shard ``index`` by ``data`` and re-record as many hashes as a forger would."""
    manifest = load_manifest(folder)
    old = manifest.shards[index]
    write_shard(folder / old.path, data, chunk_patches=16, compression="zstd", level=3)
    entries = list(manifest.shards)
    new = ShardEntry.of(old.path, old.split, folder / old.path, data)
    entries[index] = new if entry else dataclasses.replace(old, sha256=new.sha256)
    forged = dataclasses.replace(manifest, shards=tuple(entries))
    if fingerprint_too:
        again = fingerprint(manifest.class_names, entries, manifest.params.to_dict())
        forged = dataclasses.replace(forged, fingerprint=again)
    forged.write(folder)
    if fingerprint_too:  # a thorough forger writes the card to match, when the shard reads
        with contextlib.suppress(IntegrityError):
            make_card(folder)


def _brighter(folder: Path) -> shards.ShardData:
    data = read_shard(folder / load_manifest(folder).shards[0].path)
    return dataclasses.replace(data, images=np.ascontiguousarray(255 - data.images))


def test_a_shard_edited_with_its_file_hash_is_caught(project: Path) -> None:
    _forge(project / "out", 0, _brighter(project / "out"), entry=False, fingerprint_too=False)
    problems = verify(project / "out").problems
    assert any("different pixels" in p for p in problems), problems


def test_a_shard_edited_with_all_its_hashes_is_caught(project: Path) -> None:
    _forge(project / "out", 0, _brighter(project / "out"), entry=True, fingerprint_too=False)
    problems = verify(project / "out").problems
    assert any("fingerprint" in p and "the manifest was edited" in p for p in problems), problems


@pytest.mark.slow
def test_a_fully_forged_dataset_does_not_match_dvc_lock(project: Path) -> None:
    """Shard, entry and fingerprint all forged: only the committed md5 can tell, and verify asks it."""
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "add", "-q", "out"]):
        subprocess.run(command, cwd=project, env=env, check=True, capture_output=True)
    assert run_patchpack("verify", "out", cwd=project).returncode == 0
    _forge(project / "out", 0, _brighter(project / "out"), entry=True, fingerprint_too=True)
    assert verify(project / "out").ok  # self-consistent: the files alone cannot tell
    result = run_patchpack("verify", "out", cwd=project)
    assert result.returncode == 1
    assert "FAIL out hashes to md5" in result.stdout and "but dvc.lock records" in result.stdout
    assert "(differ: manifest.json, train/shard-00000.h5, README.md and 2 more)" in result.stdout
    assert run_patchpack("verify", "out", "--no-lock", cwd=project).returncode == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: dataclasses.replace(d, labels=d.labels + 50), r"labels run from \d+ to \d+, but there are 3 classes"),
        (lambda d: dataclasses.replace(d, images=d.images.astype(np.float32)), r"images is float32"),
        (lambda d: dataclasses.replace(d, labels=d.labels[:-1], images=d.images[:-1], source_index=d.source_index[:-1], patch_index=d.patch_index[:-1], coords=d.coords[:-1], levels=d.levels[:-1]), r"images is uint8 of shape \(\d+, 16, 16, 1\), the manifest says"),
        (lambda d: dataclasses.replace(d, attrs={**d.attrs, "split": "test"}), r"attribute split is 'test'"),
    ],
    ids=["labels-out-of-range", "float-images", "short-shard", "wrong-split"],
)  # fmt: skip
def test_shards_that_do_not_fit_the_manifest_are_refused(
    project: Path, change: object, message: str
) -> None:
    folder = project / "out"
    first = load_manifest(folder).shards[0]
    changed = change(read_shard(folder / first.path))  # type: ignore[operator]
    # a forger re-records every hash; a short shard keeps its old entry (else the counts object)
    complete = len(changed) == first.patches
    _forge(folder, 0, changed, entry=complete, fingerprint_too=complete)
    problems = verify(folder).problems
    assert len(problems) == 1 and problems[0].startswith(first.path)
    assert re.search(message, problems[0]), problems
    with pytest.raises(IntegrityError, match=message):
        open_dataset(folder)


@pytest.mark.parametrize("kind", ["external", "soft"])
def test_a_shard_whose_data_lives_elsewhere_is_refused(project: Path, kind: str) -> None:
    """A link in a shard would make the loader read another file; it is refused before any read."""
    import h5py

    folder = project / "out"
    path = folder / load_manifest(folder).shards[0].path
    outside = project / "outside.h5"
    with h5py.File(path, "r") as src, h5py.File(outside, "w") as dst:
        src.copy("images", dst)
    with h5py.File(path, "a") as h5:
        if kind == "soft":
            h5.copy("images", "elsewhere")
        del h5["images"]
        link = h5py.ExternalLink(str(outside), "images") if kind == "external" else None
        h5["images"] = link if link is not None else h5py.SoftLink("/elsewhere")
    with pytest.raises(IntegrityError, match="images is a link, not data stored in the shard"):
        open_dataset(folder)
    assert not verify(folder).ok


# --- 8. names are printed on one line ------------------------------------------------------------


def test_a_file_name_with_a_newline_gives_one_line(project: Path) -> None:
    (project / "images" / "class_0" / "bad\nname.txt").write_text("x")
    line = one_line_error(run_patchpack("extract", "--out", "out", cwd=project))
    assert "bad\\nname.txt" in line


def test_info_still_works_on_a_clean_dataset(project: Path) -> None:
    assert "fingerprint" in info(project / "out")
