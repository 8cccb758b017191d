"""`patchpack index`: one row per patch as CSV or Parquet, read back with pandas and checked row by
row against the shards; an unknown format, Parquet without pyarrow and a folder that is not a
dataset are one line and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchpack.cli import main
from patchpack.dataset.card import COLUMNS, INDEX_NAME
from patchpack.dataset.extract import extract
from patchpack.dataset.manifest import load_manifest
from patchpack.dataset.shards import read_shard
from support.commands import run_patchpack
from support.images import small_params

pd = pytest.importorskip("pandas")


@pytest.fixture
def dataset(images: Path, tmp_path: Path) -> Path:
    extract(small_params(images), out=tmp_path / "data")
    return tmp_path / "data"


def check_against_shards(index: object, folder: Path) -> None:
    """Every row of ``index`` (a DataFrame) is the patch its shard holds at that row, and every
    patch of every shard has its row, in the manifest's order."""
    manifest = load_manifest(folder)
    frame = index  # a pandas DataFrame
    assert list(frame.columns) == list(COLUMNS)  # type: ignore[attr-defined]
    assert len(frame) == sum(entry.patches for entry in manifest.shards)  # type: ignore[arg-type]
    start = 0
    for entry in manifest.shards:
        data = read_shard(folder / entry.path, manifest.layout(entry))
        rows = frame.iloc[start : start + entry.patches]  # type: ignore[attr-defined]
        start += entry.patches
        assert (rows["split"] == entry.split).all() and (rows["shard"] == entry.path).all()
        assert rows["row"].tolist() == list(range(entry.patches))
        assert rows["label"].tolist() == data.labels.tolist()
        assert rows["class_name"].tolist() == [manifest.class_names[k] for k in data.labels]
        assert rows["source_id"].tolist() == data.source_rows()
        assert rows["patch_index"].tolist() == data.patch_index.tolist()
        assert rows["level"].tolist() == data.levels.tolist()
        assert rows["y"].tolist() == data.coords[:, 0].tolist()
        assert rows["x"].tolist() == data.coords[:, 1].tolist()
        assert rows["digest"].tolist() == data.patch_digests()


def test_the_csv_index_holds_every_patch_of_the_shards(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "patches.csv"
    assert main(["index", str(dataset), "--format", "csv", "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    frame = pd.read_csv(out, dtype={"digest": str})
    check_against_shards(frame, dataset)
    assert out.read_bytes() == (dataset / INDEX_NAME).read_bytes()  # what extract wrote


def test_the_parquet_index_holds_every_patch_of_the_shards(dataset: Path, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    out = tmp_path / "patches.parquet"
    assert main(["index", str(dataset), "--format", "parquet", "--out", str(out)]) == 0
    frame = pd.read_parquet(out)
    check_against_shards(frame, dataset)
    assert str(frame["label"].dtype) == "int32" and str(frame["y"].dtype) == "int32"


def test_the_index_defaults_to_index_csv_here(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert main(["index", str(dataset)]) == 0
    assert (here / "index.csv").read_bytes() == (dataset / INDEX_NAME).read_bytes()


def test_an_unknown_format_is_one_line_exit_2(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.json"
    assert main(["index", str(dataset), "--format", "json", "--out", str(out)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "unknown index format 'json'; choose one of csv, parquet" in line
    assert not out.exists()


def test_a_damaged_shard_fails_the_index_and_leaves_no_file(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = load_manifest(dataset).shards[-1]
    (dataset / entry.path).write_bytes(b"not hdf5")
    out = tmp_path / "patches.csv"
    assert main(["index", str(dataset), "--out", str(out)]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert entry.path in line
    assert not out.exists() and list(tmp_path.glob(".patches*")) == []


def test_parquet_without_pyarrow_says_what_to_install(dataset: Path, tmp_path: Path) -> None:
    blocked = str(Path(__file__).parent / "support" / "blocked")
    done = run_patchpack(
        "index",
        str(dataset),
        "--format",
        "parquet",
        cwd=tmp_path,
        env={"PYTHONPATH": blocked, "PATCHPACK_TEST_BLOCK": "pyarrow"},
    )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "pyarrow is not installed" in line and "pip install -e '.[index]'" in line
    assert not (tmp_path / "index.parquet").exists()
    # csv needs no pyarrow
    done = run_patchpack(
        "index",
        str(dataset),
        cwd=tmp_path,
        env={"PYTHONPATH": blocked, "PATCHPACK_TEST_BLOCK": "pyarrow"},
    )
    assert done.returncode == 0, done.stderr


def test_an_index_inside_the_dataset_folder_is_refused(
    dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = dataset / "train" / "index.parquet"
    assert main(["index", str(dataset), "--format", "parquet", "--out", str(out)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "is inside the dataset folder" in line and not out.exists()
