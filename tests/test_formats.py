"""Format 3 and the formats before it: what changed, and that a format 2 dataset still reads and verifies.

``tests/data/format2`` is a real dataset written by patchpack 0.1.0 (format 2): two classes of two
64x64 grayscale crops, 8 patches of 16x16 each, chunks of 4 rows.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

import patchpack.dataset.extract
from patchpack import open_dataset
from patchpack.audit.rebuild import verify_rebuild
from patchpack.audit.verify import verify
from patchpack.dataset.extract import extract
from patchpack.dataset.manifest import load_manifest
from patchpack.dataset.plan import SEGMENT, Draw, ImagePlan, Rect, draw_coords, sample_image
from patchpack.dataset.shards import FORMAT_VERSION, ShardReader, read_shard
from patchpack.dataset.sources import SourceImage
from patchpack.dataset.work import Job, plan_tasks
from patchpack.errors import ConfigError
from patchpack.params import CHUNK_BYTES, ShardParams, chunk_rows, params_from_dict
from support.commands import file_digests, run_patchpack
from support.images import make_folder, small_params, small_raw
from support.slides import tissue_image, write_pyramid

FORMAT2 = Path(__file__).parent / "data" / "format2"


@pytest.fixture
def format2(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FORMAT2, tmp_path / "format2"))


# --- format 2 still reads and verifies ------------------------------------------------------------


def test_a_format_2_dataset_reads_and_verifies(format2: Path) -> None:
    manifest = load_manifest(format2)
    assert manifest.format_version == 2 and manifest.class_names == ("brick", "grass")
    assert manifest.params.shards.chunk_patches == 4
    report = verify(format2)
    assert report.ok, report.problems
    with ShardReader(format2 / manifest.shards[0].path, manifest.layout(manifest.shards[0])) as r:
        assert r.class_names == ["brick", "grass"]  # stored as one JSON string in format 2
    dataset = open_dataset(format2)
    images, labels = next(iter(dataset.split("train").batches(8, seed=1, epoch=0)))
    assert images.shape == (8, 16, 16, 1) and set(labels.tolist()) <= {0, 1}


def test_a_damaged_format_2_shard_is_still_caught(format2: Path) -> None:
    path = format2 / "train" / "shard-00000.h5"
    data = bytearray(path.read_bytes())
    data[-200:-100] = bytes(100)
    path.write_bytes(bytes(data))
    report = verify(format2)
    assert not report.ok and any("train/shard-00000.h5" in p for p in report.problems)


def test_rebuilding_a_format_2_dataset_says_which_patchpack_wrote_it(format2: Path) -> None:
    with pytest.raises(ConfigError, match=r"written in format 2 by patchpack 0\.1\.0"):
        verify_rebuild(format2, params_from_dict(small_raw(format2)))
    done = run_patchpack("verify", str(format2), "--rebuild", cwd=format2.parent)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_an_unknown_format_version_is_one_line(format2: Path) -> None:
    path = format2 / "manifest.json"
    raw = json.loads(path.read_text())
    raw["format_version"] = 9
    path.write_text(json.dumps(raw))
    done = run_patchpack("verify", str(format2), "--no-lock", cwd=format2.parent)
    assert done.returncode != 0
    assert "format version 9, this patchpack reads 2 and 3" in done.stdout + done.stderr


# --- what format 3 writes ---------------------------------------------------------------------------


def test_class_names_is_a_list_of_strings(images: Path, tmp_path: Path) -> None:
    manifest = extract(small_params(images), out=tmp_path / "out")
    assert manifest.format_version == FORMAT_VERSION == 3
    with h5py.File(tmp_path / "out" / manifest.shards[0].path) as h5:
        stored = h5.attrs["class_names"]
        assert isinstance(stored, np.ndarray) and stored.dtype.kind == "O"
        assert [str(name) for name in stored] == list(manifest.class_names)
        assert h5.attrs["format_version"] == 3


def test_chunks_hold_about_a_mebibyte_unless_a_row_count_is_set(tmp_path: Path) -> None:
    assert chunk_rows(None, 32 * 32) == 256  # small patches: capped at 256 rows
    assert chunk_rows(None, 128 * 128 * 3) == CHUNK_BYTES // (128 * 128 * 3) == 21
    assert chunk_rows(None, 1024 * 1024 * 3) == 1  # one patch larger than the target
    assert chunk_rows(16, 128 * 128 * 3) == 16 == ShardParams(chunk_patches=16).chunk_rows(5)
    folder = make_folder(tmp_path / "rgb", classes=2, per_class=2, size=(200, 200), channels=3)
    raw = small_raw(folder)
    raw["source"]["channels"] = 3
    raw = {
        **raw,
        "extract": {**raw["extract"], "patch_size": 96, "per_image": 30},
        "split": {"mode": "image", "fractions": {"train": 0.5, "val": 0.0, "test": 0.5}},
        "shards": {**raw["shards"], "target_patches": 60, "chunk_patches": None},
    }
    manifest = extract(params_from_dict(raw), out=tmp_path / "out")
    with h5py.File(tmp_path / "out" / manifest.shards[0].path) as h5:
        assert h5["images"].chunks == (CHUNK_BYTES // (96 * 96 * 3), 96, 96, 3)


def test_the_fingerprint_covers_the_params(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    extract(small_params(images), out=out)
    assert verify(out).ok
    path = out / "manifest.json"
    raw = json.loads(path.read_text())
    raw["params"]["seed"] = raw["params"]["seed"] + 1  # the shards are untouched
    path.write_text(json.dumps(raw, indent=1, sort_keys=True))
    report = verify(out)
    assert not report.ok
    assert any("fingerprint" in p and "params" in p for p in report.problems), report.problems


# --- one slide across workers -------------------------------------------------------------------------


def _plan(count: int) -> tuple[ImagePlan, Draw]:
    source = SourceImage(
        id="a.png",
        label=0,
        class_name="a",
        path=Path("a.png"),
        width=400,
        height=300,
        sha256="0" * 64,
    )
    draw = Draw("train", count, 0, (Rect(0, 300, 0, 400),), 1)
    return ImagePlan(source=source, draws=(draw,)), draw


def test_each_segment_of_a_draw_is_drawn_on_its_own() -> None:
    plan, draw = _plan(3 * SEGMENT + 17)
    whole, _ = draw_coords(plan, draw, seed=5, patch_size=16)
    assert len(whole) == draw.count
    for number in (0, 2, 3):
        part, _ = draw_coords(plan, draw, seed=5, patch_size=16, segments=range(number, number + 1))
        np.testing.assert_array_equal(part, whole[number * SEGMENT : (number + 1) * SEGMENT])
    # the first patches do not depend on the count, and segments differ from each other
    fewer, _ = draw_coords(plan, _plan(SEGMENT + 5)[1], seed=5, patch_size=16)
    np.testing.assert_array_equal(fewer, whole[: SEGMENT + 5])
    assert not np.array_equal(whole[:SEGMENT], whole[SEGMENT : 2 * SEGMENT])


def test_sample_image_gives_one_segment(images: Path) -> None:
    params = small_params(images, extract={"per_image": 300})
    plan, _ = _plan(300)
    rows = sample_image(plan, seed=2, extract=params.extract, split=params.split, only="train")
    one = sample_image(
        plan, seed=2, extract=params.extract, split=params.split, only="train", segment=1
    )["train"]
    np.testing.assert_array_equal(one.coords, rows["train"].coords[SEGMENT : 2 * SEGMENT])
    np.testing.assert_array_equal(one.patch_index, np.arange(SEGMENT, 2 * SEGMENT))


@pytest.fixture
def one_slide(tmp_path: Path) -> Path:
    write_pyramid(tmp_path / "slides" / "a" / "one.tif", tissue_image(768, 768))
    return tmp_path / "slides"


def test_the_shards_of_one_slide_spread_over_workers_in_the_same_bytes(
    one_slide: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = {
        "base": {"seed": 3},
        "source": {"dir": str(one_slide), "channels": 3},
        "extract": {"patch_size": 32, "per_image": 600, "min_std": 1.0, "roi": "tissue"},
        "split": {"mode": "region", "block_size": 96},
        "shards": {"target_patches": 64},
    }
    seen: list[int] = []

    def recording(jobs: list[Job], workers: int, **options: bool) -> list:  # type: ignore[type-arg]
        tasks = plan_tasks(jobs, workers, **options)
        assert len({p.image for job in jobs for p in job.spec.pieces}) == 1
        seen.append(len(tasks))
        return tasks

    monkeypatch.setattr(patchpack.dataset.extract, "plan_tasks", recording)
    extract(params_from_dict(raw), out=tmp_path / "in-process", workers=2)
    assert seen and seen[0] >= 4  # one image, yet many tasks: each shard draws its own segments
    (tmp_path / "params.yaml").write_text(json.dumps(raw))
    for name, workers in (("a", "1"), ("b", "2"), ("c", "3")):
        done = run_patchpack("extract", "--out", name, "--workers", workers, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    reference = file_digests(tmp_path / "a")
    assert file_digests(tmp_path / "b") == reference == file_digests(tmp_path / "c")
    assert file_digests(tmp_path / "in-process") == reference
    for entry in load_manifest(tmp_path / "a").shards:
        assert len(read_shard(tmp_path / "a" / entry.path)) == entry.patches
