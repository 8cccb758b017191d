from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from support.commands import run_patchpack
from support.images import make_folder, write_params

run = run_patchpack


@pytest.fixture
def project(tmp_path: Path) -> Path:
    make_folder(tmp_path / "images")
    write_params(tmp_path / "params.yaml", tmp_path / "images")
    return tmp_path


def test_extract_verify_info_preview(project: Path) -> None:
    extracted = run("extract", "--out", "data/patches", cwd=project)
    assert extracted.returncode == 0, extracted.stderr
    assert "patches to data/patches" in extracted.stdout
    assert extracted.stderr == ""  # no progress bar when not on a terminal
    verified = run("verify", cwd=project)
    assert verified.returncode == 0 and "OK" in verified.stdout
    assert run("info", cwd=project).stdout.startswith("class")
    preview = run("preview", "--out", "sheet.png", "--per-class", "3", cwd=project)
    assert preview.returncode == 0, preview.stderr
    with Image.open(project / "sheet.png") as sheet:
        assert sheet.size[0] > 3 * 3 * 64 and sheet.size[1] > 3 * 64
    (project / "data/patches/val/shard-00000.h5").write_bytes(b"garbage")
    failed = run("verify", cwd=project)
    assert failed.returncode == 1 and "val/shard-00000.h5: truncated or corrupt" in failed.stdout


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (
            lambda p: None,
            ["extract", "--source", "nowhere"],
            "nowhere: source folder does not exist",
        ),
        (
            lambda p: (p / "images" / "class_9").mkdir(),
            ["extract"],
            "class_9: class folder is empty",
        ),
        (
            lambda p: (p / "params.yaml").write_text("extract: {patch_sise: 3}\n"),
            ["extract"],
            "unknown key 'extract.patch_sise'",
        ),
        (
            lambda p: (p / "params.yaml").write_text("shards: {compression: lz4}\n"),
            ["extract"],
            "shards.compression must be one of",
        ),
        (
            lambda p: (p / "params.yaml").write_text(
                "split: {fractions: {train: 0.8, val: 0.2, test: 0.2}}\n"
            ),
            ["extract"],
            "split.fractions must sum to 1",
        ),
        (
            lambda p: (p / "params.yaml").write_text(
                f"source: {{dir: {p / 'images'}}}\nextract: {{patch_size: 500}}\nsplit: {{block_size: 500}}\n"
            ),
            ["extract"],
            "smaller than split.block_size=500",
        ),
        (lambda p: None, ["extract", "--params", "missing.yaml"], "no such params file"),
        (lambda p: None, ["info"], "no manifest"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    project: Path, setup: object, args: list[str], message: str
) -> None:
    setup(project)  # type: ignore[operator]
    result = (
        run(*args, "--out", "data/patches", cwd=project)
        if args[0] == "extract"
        else run(*args, cwd=project)
    )
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"patchpack {args[0]}: error: "), result.stderr
    assert message in lines[0]
    assert not (project / "data" / "patches").exists()


def test_verify_without_dataset_exits_1(project: Path) -> None:
    result = run("verify", "absent", cwd=project)
    assert result.returncode == 1 and "no manifest" in result.stdout
