from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from patchpack.audit.info import info
from patchpack.audit.rebuild import verify_rebuild
from patchpack.audit.verify import verify
from patchpack.dataset.extract import extract
from patchpack.dataset.manifest import ShardEntry, fingerprint, load_manifest
from patchpack.dataset.shards import read_shard, write_shard
from support.images import small_params


@pytest.fixture
def dataset(images: Path, tmp_path: Path) -> Path:
    extract(small_params(images), out=tmp_path / "data")
    return tmp_path / "data"


def failures(folder: Path, **kwargs: bool) -> list[str]:
    report = verify(folder, **kwargs)
    assert report.ok == (not report.problems)
    return report.problems


def test_clean_dataset_passes(dataset: Path) -> None:
    report = verify(dataset)
    assert report.ok, report.render()
    assert "no pixel of any source in two splits" in report.render()


def test_every_single_flipped_byte_is_caught(dataset: Path) -> None:
    for entry in load_manifest(dataset).shards:
        path = dataset / entry.path
        original = path.read_bytes()
        for offset in sorted(
            {
                0,
                1,
                100,
                len(original) // 3,
                len(original) // 2,
                len(original) - 1,
                *range(0, len(original), max(1, len(original) // 12)),
            }
        ):
            damaged = bytearray(original)
            damaged[offset] ^= 0x10
            path.write_bytes(bytes(damaged))
            problems = failures(dataset)
            assert problems and problems[0].startswith(entry.path), (entry.path, offset)
        path.write_bytes(original)
    assert verify(dataset).ok


def test_different_pixels_names_the_first_patch(dataset: Path) -> None:
    entry = load_manifest(dataset).shards[0]
    data = read_shard(dataset / entry.path)
    images = data.images.copy()
    images[5, 3, 3, 0] ^= 0xFF
    changed = type(data)(**{**data.__dict__, "images": images})
    write_shard(dataset / entry.path, changed, chunk_patches=16, compression="zstd", level=3)
    (problem,) = failures(dataset)
    y, x = data.coords[5]
    assert problem == (
        f"{entry.path}: different pixels: first differing patch is row 5 (patch "
        f"{data.patch_index[5]} of {data.source_of(5)} at y={y}, x={x}, as the damaged shard records them)"
    )


def test_same_pixels_different_bytes(dataset: Path) -> None:
    entry = load_manifest(dataset).shards[1]
    write_shard(
        dataset / entry.path,
        read_shard(dataset / entry.path),
        chunk_patches=16,
        compression="gzip",
        level=4,
    )
    (problem,) = failures(dataset)
    assert "same pixels, different bytes" in problem and "--pixels-only" in problem
    assert failures(dataset, allow_container_diff=True) == []


def test_missing_extra_and_truncated_shards(dataset: Path) -> None:
    shards = load_manifest(dataset).shards
    (dataset / shards[0].path).unlink()
    shutil.copy(dataset / shards[1].path, dataset / "train" / "shard-09999.h5")
    third = dataset / shards[2].path
    third.write_bytes(third.read_bytes()[:500])
    problems = failures(dataset)
    assert any(p.startswith(f"{shards[0].path}: missing") for p in problems)
    assert any(
        p.startswith("train/shard-09999.h5: extra file not in the manifest") for p in problems
    )
    assert any(p.startswith(f"{shards[2].path}: truncated or corrupt (500 bytes") for p in problems)


def test_missing_manifest_means_incomplete(dataset: Path) -> None:
    (dataset / "manifest.json").unlink()
    (problem,) = failures(dataset)
    assert "no manifest, so the dataset is incomplete or absent" in problem


def _rewrite_shard(dataset: Path, index: int, **changes: object) -> None:
    """Change one shard's provenance and re-record every hash, so only the leakage audit can object."""
    manifest = load_manifest(dataset)
    entry = manifest.shards[index]
    data = read_shard(dataset / entry.path)
    changed = dataclasses.replace(data, **changes)  # type: ignore[arg-type]
    write_shard(dataset / entry.path, changed, chunk_patches=16, compression="zstd", level=3)
    shards = list(manifest.shards)
    shards[index] = ShardEntry.of(entry.path, entry.split, dataset / entry.path, changed)
    forged = dataclasses.replace(
        manifest,
        shards=tuple(shards),
        fingerprint=fingerprint(manifest.class_names, shards, manifest.params.to_dict()),
    )
    forged.write(dataset)


def test_region_leak_is_found(dataset: Path) -> None:
    manifest = load_manifest(dataset)
    train = read_shard(dataset / manifest.shards_for("train")[0].path)
    index = next(i for i, e in enumerate(manifest.shards) if e.split == "val")
    val = read_shard(dataset / manifest.shards[index].path)
    row = next(r for r in range(len(val)) if val.source_of(r) == train.source_of(0))
    coords = val.coords.copy()
    coords[row] = train.coords[0] + 3  # overlaps a train patch of the same source
    _rewrite_shard(dataset, index, coords=coords.astype(np.int32))
    problems = failures(dataset)
    assert any(
        p.startswith(f"leakage: source {train.source_of(0)}: train patch at") for p in problems
    ), problems


def test_image_mode_leak_is_found(tmp_path: Path) -> None:
    from support.images import make_folder

    images = make_folder(tmp_path / "images", classes=2, per_class=5)
    params = small_params(images, split={"mode": "image"})
    extract(params, out=tmp_path / "data")
    report = verify(tmp_path / "data")
    assert report.ok and "no source image in two splits" in report.render()
    # Inject a leak: a val shard claims its first source is an image the train split holds.
    manifest = load_manifest(tmp_path / "data")
    train_source = read_shard(tmp_path / "data" / manifest.shards_for("train")[0].path).sources[0]
    index = next(i for i, e in enumerate(manifest.shards) if e.split == "val")
    val = read_shard(tmp_path / "data" / manifest.shards[index].path)
    _rewrite_shard(tmp_path / "data", index, sources=(train_source, *val.sources[1:]))
    problems = failures(tmp_path / "data")
    assert f"leakage: source {train_source} has patches in train, val" in problems, problems


def test_patch_mode_is_reported_as_leaky(images: Path, tmp_path: Path) -> None:
    extract(small_params(images, split={"mode": "patch"}), out=tmp_path / "data")
    report = verify(tmp_path / "data")
    assert report.ok and "leaky by design" in report.render()


def test_rebuild_matches_and_detects_changed_sources(dataset: Path, images: Path) -> None:
    params = small_params(images)
    report = verify_rebuild(dataset, params)
    assert report.ok, report.render()
    assert "rebuild reproduces fingerprint" in report.render()
    path = images / "class_1" / "img_0.png"
    from PIL import Image

    flipped = np.asarray(Image.open(path))[::-1]
    Image.fromarray(flipped).save(path)
    report = verify_rebuild(dataset, params)
    assert not report.ok
    assert any("rebuild gives different pixels" in p for p in report.problems)
    assert not list(dataset.parent.glob(".rebuild-*"))


def test_info_table(dataset: Path) -> None:
    text = info(dataset)
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert text.splitlines()[0].split() == ["class", "train", "val", "test"]
    assert "class_0" in text and manifest["fingerprint"] in text and "ratio" in text
    total = text.splitlines()[5].split()
    assert total == [
        "total",
        *(str(manifest["counts"][s]["total"]) for s in ("train", "val", "test")),
    ]
