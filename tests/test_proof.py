"""The proof never lies: the leakage audit at pyramid levels, and no exit 0 on empty splits."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from patchpack.audit.leakage import _overlap
from patchpack.audit.verify import verify
from patchpack.dataset.extract import extract
from patchpack.dataset.manifest import ShardEntry, fingerprint, load_manifest
from patchpack.dataset.shards import read_shard, write_shard
from patchpack.params import params_from_dict
from support.slides import tissue_image, write_pyramid


def _forge(dataset: Path, index: int, **changes: object) -> None:
    """Change one shard's provenance and re-record every hash, so only the audit can object."""
    manifest = load_manifest(dataset)
    entry = manifest.shards[index]
    data = read_shard(dataset / entry.path)
    changed = dataclasses.replace(data, **changes)  # type: ignore[arg-type]
    write_shard(dataset / entry.path, changed, chunk_patches=16, compression="zstd", level=3)
    shards = list(manifest.shards)
    shards[index] = ShardEntry.of(entry.path, entry.split, dataset / entry.path, changed)
    dataclasses.replace(
        manifest, shards=tuple(shards), fingerprint=fingerprint(manifest.class_names, shards)
    ).write(dataset)


@pytest.mark.parametrize("downsample", [1.0, 2.0, 4.0])
def test_overlap_is_judged_at_the_sampled_level(downsample: float) -> None:
    size = 32
    a = np.array([[0, 0]])
    side = int(size * downsample)  # level-0 pixels a patch covers
    for dy, dx, shares in [
        (side - int(downsample), 0, True),  # one level pixel of overlap
        (side, 0, False),  # touching
        (side - int(downsample), side - int(downsample), True),
        (0, side, False),
        (size, 0, downsample > 1),  # overlaps only at level-0 scale
    ]:
        b = np.array([[dy, dx]])
        assert (_overlap(a, b, size, downsample) is not None) == shares, (dy, dx, downsample)
        assert (_overlap(b, a, size, downsample) is not None) == shares


def test_overlap_reports_the_pair_that_overlaps() -> None:
    a = np.array([[0, 0], [500, 500], [1000, 0]])
    b = np.array([[5000, 5000], [1010, 20]])
    assert _overlap(a, b, 32, 1.0, chunk=1) == ((1000, 0), (1010, 20))


@pytest.fixture
def level1_dataset(tmp_path: Path) -> Path:
    """Region-split patches of 32x32 cut at level 1 (downsample 2) of two small pyramids."""
    for name, seed in (("a", 0), ("b", 1)):
        write_pyramid(tmp_path / "slides" / name / f"{name}.tif", tissue_image(512, 640, seed))
    params = params_from_dict(
        {
            "base": {"seed": 3},
            "source": {"dir": str(tmp_path / "slides"), "channels": 3, "level": 1},
            "extract": {"patch_size": 32, "per_image": 40, "min_std": 0.0},
            "split": {"mode": "region", "block_size": 64},
            "shards": {"target_patches": 32, "chunk_patches": 16},
        }
    )
    extract(params, out=tmp_path / "data")
    return tmp_path / "data"


def test_leak_that_overlaps_only_at_level0_scale_is_found(level1_dataset: Path) -> None:
    dataset = level1_dataset
    manifest = load_manifest(dataset)
    assert {record.downsample for record in manifest.sources} == {2.0}
    assert verify(dataset).ok
    train = read_shard(dataset / manifest.shards_for("train")[0].path)
    index = next(i for i, e in enumerate(manifest.shards) if e.split == "test")
    test = read_shard(dataset / manifest.shards[index].path)
    row = next(r for r in range(len(test)) if test.source_of(r) == train.source_of(0))
    coords = test.coords.copy()
    # 40 level-0 pixels below a train patch: apart by more than patch_size, but a level-1 patch
    # covers 64 level-0 pixels, so the two share pixels
    coords[row] = train.coords[0] + np.array([40, 0])
    _forge(dataset, index, coords=coords.astype(np.int32))
    problems = verify(dataset).problems
    assert any(
        p.startswith(f"leakage: source {train.source_of(0)}: ")
        and "train patch" in p
        and "test patch" in p
        for p in problems
    ), problems
