"""docs/frameworks.md keeps its promises: every recipe (PyTorch, Hugging Face, h5py, the HDF5 tools)
is at most ten lines and runs on a freshly extracted (zstd) dataset, and `patchpack plugin-path`
prints the folder the HDF5 tools need."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from patchpack.cli import main
from patchpack.dataset.extract import extract
from support.images import make_folder, small_params

PAGE = Path(__file__).resolve().parents[1] / "docs" / "frameworks.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)


def recipe(title: str, language: str) -> str:
    """The one ``language`` block under ``## title`` of docs/frameworks.md."""
    text = PAGE.read_text(encoding="utf-8")
    part = text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    blocks = [body for lang, body in FENCE.findall(part) if lang == language]
    assert len(blocks) == 1, f"{title}: expected one {language} block, found {len(blocks)}"
    assert len(blocks[0].splitlines()) <= 10, f"{title}: a recipe is ten lines at most"
    return blocks[0]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a small extracted dataset at ``data/patches`` (zstd shards)."""
    root = tmp_path_factory.mktemp("frameworks")
    extract(small_params(make_folder(root / "images")), out=root / "data" / "patches")
    return root


def run_recipe(title: str, project: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    monkeypatch.chdir(project)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    exec(compile(recipe(title, "python"), f"docs/frameworks.md ({title})", "exec"), namespace)
    return namespace


def test_every_recipe_is_ten_lines_at_most() -> None:
    for title, language in [
        ("PyTorch", "python"),
        ("Hugging Face datasets", "python"),
        ("h5py", "python"),
        ("HDF5 command-line tools", "bash"),
    ]:
        assert recipe(title, language).strip()


def test_the_pytorch_recipe(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    namespace = run_recipe("PyTorch", project, monkeypatch)
    x, labels = namespace["x"], namespace["labels"]
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32
    assert tuple(x.shape[1:]) == (1, 16, 16) and float(x.max()) <= 1.0
    assert isinstance(labels, torch.Tensor) and labels.dtype == torch.int64


def test_the_hugging_face_recipe(
    project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may reach the internet
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from patchpack import open_dataset

    namespace = run_recipe("Hugging Face datasets", project, monkeypatch)
    ds, batch = namespace["ds"], namespace["batch"]
    assert isinstance(batch, dict)
    with open_dataset(project / "data" / "patches") as data:
        train = data.split("train")
        expected_images, expected_labels = next(train.batches(64, shuffle=False, workers=0))
        names = data.class_names
        sizes = [len(data.split(split)) for split in ("train", "val", "test")]
    images = batch["images"]
    assert isinstance(images, np.ndarray) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, expected_images)
    assert list(batch["labels"]) == expected_labels.tolist()
    features = ds["train"].features  # type: ignore[index]
    assert features["labels"].names == names
    assert [len(ds[split]) for split in ("train", "val", "test")] == sizes  # type: ignore[index]


def test_the_h5py_recipe(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace = run_recipe("h5py", project, monkeypatch)
    images = namespace["images"]
    assert isinstance(images, np.ndarray) and images.dtype == np.uint8
    assert len(images) == namespace["rows"] == 16  # shards.chunk_patches of the small params
    assert namespace["names"] == ["class_0", "class_1", "class_2"]
    assert "uint8 (16, 16, 16, 1) ['class_" in capsys.readouterr().out


def test_class_names_of_reads_format_2_and_format_3() -> None:
    from patchpack.dataset.shards import class_names_of

    assert class_names_of('["a", "b"]') == ["a", "b"]  # format 2: one JSON string
    assert class_names_of(np.array([b"a", b"b"], dtype=object)) == ["a", "b"]  # format 3
    assert class_names_of("not json") is None


def test_plugin_path_prints_hdf5plugins_folder(capsys: pytest.CaptureFixture[str]) -> None:
    import hdf5plugin

    assert main(["plugin-path"]) == 0
    printed = capsys.readouterr().out
    assert printed == f"{hdf5plugin.PLUGIN_PATH}\n"
    assert any(Path(printed.strip()).glob("*zstd*")), "the zstd filter lives there"


@pytest.mark.skipif(shutil.which("h5dump") is None, reason="needs the HDF5 tools (hdf5-tools)")
def test_the_hdf5_tools_recipe(project: Path) -> None:
    shard = project / "data" / "patches" / "train" / "shard-00000.h5"
    pixels = "h5dump -d images -c 1,1,4,1 data/patches/train/shard-00000.h5"
    script = recipe("HDF5 command-line tools", "bash")
    assert pixels in script
    env = {k: v for k, v in os.environ.items() if k != "HDF5_PLUGIN_PATH"}
    env["PATH"] = f"{Path(shutil.which('patchpack') or 'patchpack').parent}:{env['PATH']}"
    run = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    import h5py

    with h5py.File(shard, "r") as h5:
        first = h5["images"][0, 0, :4, 0].tolist()
    values = [int(v) for v in re.findall(r"\(0,0,\d,0\): (\d+)", run.stdout)]
    assert values == first, run.stdout
    assert "class_0" in run.stdout and "images" in run.stdout

    # without the plugin path h5dump shows no pixels at all, and still exits 0: why the recipe
    # sets it
    bare = subprocess.run(
        ["bash", "-c", pixels], cwd=project, env=env, capture_output=True, text=True
    )
    assert bare.returncode == 0 and re.findall(r"\(0,0,\d,0\): (\d+)", bare.stdout) == []
