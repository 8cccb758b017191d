from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from patchpack.dataset.plan import (
    block_grid,
    cut_shards,
    largest_remainder,
    plan_images,
    region_splits,
    sample_image,
    split_counts,
)
from patchpack.dataset.sources import SourceImage
from patchpack.errors import ConfigError, SourceError
from patchpack.params import SPLITS, ExtractParams, SplitParams
from support.images import small_params


def fake(source_id: str, label: int = 0, size: tuple[int, int] = (200, 300)) -> SourceImage:
    return SourceImage(source_id, label, f"c{label}", Path(source_id), size[1], size[0], "0" * 64)


EXTRACT = ExtractParams(patch_size=16, per_image=50, per_class=None, min_std=0.0)  # no pixels here
REGION = SplitParams(mode="region", fractions=(0.6, 0.2, 0.2), block_size=32)


def coords_of(
    sources: list[SourceImage], split: SplitParams = REGION, seed: int = 1
) -> dict[str, dict[str, list[list[int]]]]:
    plans = plan_images(sources, seed=seed, extract=EXTRACT, split=split)
    return {
        plan.source.id: {
            name: rows[1].tolist()
            for name, rows in sample_image(plan, seed=seed, extract=EXTRACT, split=split).items()
        }
        for plan in plans
    }


def test_largest_remainder_is_exact() -> None:
    assert largest_remainder(10, [0.7, 0.15, 0.15]) == [7, 2, 1]
    assert largest_remainder(3, [1, 1, 1]) == [1, 1, 1]
    assert sum(largest_remainder(1001, [0.33, 0.33, 0.34])) == 1001
    assert largest_remainder(5, [0, 0, 0]) == [0, 0, 0]


def test_an_image_patches_ignore_other_images_and_listing_order() -> None:
    alone = coords_of([fake("b/x.png")])
    crowd = coords_of([fake("a/0.png"), fake("b/x.png", 1), fake("c/9.png", 2)])
    assert alone["b/x.png"] == crowd["b/x.png"]
    reordered = coords_of([fake("c/9.png", 2), fake("b/x.png", 1), fake("a/0.png")])
    assert reordered == crowd


def test_seed_changes_patches() -> None:
    assert coords_of([fake("a.png")], seed=1) != coords_of([fake("a.png")], seed=2)


def test_draws_are_prefix_stable() -> None:
    more = replace(EXTRACT, per_image=500)
    plan_small = plan_images([fake("a.png")], seed=3, extract=EXTRACT, split=REGION)[0]
    plan_big = plan_images([fake("a.png")], seed=3, extract=more, split=REGION)[0]
    small = sample_image(plan_small, seed=3, extract=EXTRACT, split=REGION)["train"][1]
    big = sample_image(plan_big, seed=3, extract=more, split=REGION)["train"][1]
    assert np.array_equal(big[: len(small)], small)


def test_patches_do_not_depend_on_pythonhashseed(tmp_path: Path) -> None:
    code = (
        "from test_plan import coords_of, fake; import json, hashlib;"
        "print(hashlib.sha256(json.dumps(coords_of([fake('a/1.png'), fake('b/2.png', 1)])).encode()).hexdigest())"
    )
    digests = set()
    for hashseed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hashseed, "PYTHONPATH": str(Path(__file__).parent)}
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        digests.add(result.stdout.strip())
    assert len(digests) == 1


def test_region_mode_keeps_each_patch_inside_one_block_of_its_split() -> None:
    source = fake("a.png", size=(200, 300))
    blocks = region_splits(source, seed=1, split=REGION)
    assert sorted(len(blocks[name]) for name in SPLITS) == sorted(
        largest_remainder(6 * 9, REGION.fractions)
    )
    rows = coords_of([source])["a.png"]
    for name in SPLITS:
        for y, x in rows[name]:
            inside = [
                b
                for b in blocks[name]
                if b.y0 <= y and y + 16 <= b.y1 and b.x0 <= x and x + 16 <= b.x1
            ]
            assert inside, (name, y, x)
    assert [len(rows[name]) for name in SPLITS] == [30, 10, 10]


def test_block_grid_covers_the_image_exactly() -> None:
    grid = block_grid(100, 70, 32)
    assert len(grid) == 3 * 2
    area = sum((b.y1 - b.y0) * (b.x1 - b.x0) for b in grid)
    assert area == 100 * 70
    assert min(b.y1 - b.y0 for b in grid) >= 32 and min(b.x1 - b.x0 for b in grid) >= 32


def test_image_mode_puts_each_image_in_one_split_with_exact_counts() -> None:
    sources = [fake(f"c{k}/{j:02d}.png", k) for k in range(2) for j in range(10)]
    split = SplitParams(mode="image", fractions=(0.6, 0.2, 0.2), block_size=32)
    plans = plan_images(sources, seed=5, extract=EXTRACT, split=split)
    per_class = {k: [p.draws[0].split for p in plans if p.source.label == k] for k in range(2)}
    for names in per_class.values():
        assert [names.count(name) for name in SPLITS] == [6, 2, 2]
    # adding an image to class 0 leaves every class-1 assignment alone
    grown = plan_images([*sources, fake("c0/99.png", 0)], seed=5, extract=EXTRACT, split=split)
    assert [p.draws[0].split for p in grown if p.source.label == 1] == per_class[1]


def test_patch_mode_counts() -> None:
    split = SplitParams(mode="patch", fractions=(0.6, 0.2, 0.2), block_size=32)
    rows = coords_of([fake("a.png")], split=split)["a.png"]
    assert [len(rows[name]) for name in SPLITS] == [30, 10, 10]


def test_per_class_quota_is_shared_by_the_class_images() -> None:
    sources = [fake("a/1.png"), fake("a/2.png"), fake("a/3.png"), fake("b/1.png", 1)]
    extract = ExtractParams(patch_size=16, per_image=None, per_class=100, min_std=0.0)
    plans = plan_images(sources, seed=1, extract=extract, split=REGION)
    assert [sum(p.count(n) for n in SPLITS) for p in plans] == [34, 33, 33, 100]


def test_too_small_image_and_block_below_patch() -> None:
    with pytest.raises(SourceError, match=r"smaller than split.block_size=32"):
        plan_images([fake("a.png", size=(20, 300))], seed=1, extract=EXTRACT, split=REGION)
    with pytest.raises(SourceError, match=r"smaller than extract.patch_size=16"):
        plan_images(
            [fake("a.png", size=(10, 10))],
            seed=1,
            extract=EXTRACT,
            split=replace(REGION, mode="image"),
        )
    with pytest.raises(
        ConfigError, match=r"split.block_size \(8\) must be at least extract.patch_size \(16\)"
    ):
        plan_images([fake("a.png")], seed=1, extract=EXTRACT, split=replace(REGION, block_size=8))


def test_rejection_without_enough_texture_fails_clearly() -> None:
    source = fake("flat.png", size=(64, 64))
    extract = replace(EXTRACT, per_image=5, min_std=1.0, max_tries=3)
    plan = plan_images([source], seed=1, extract=extract, split=REGION)[0]
    flat = np.zeros((64, 64, 1), np.uint8)
    with pytest.raises(
        SourceError,
        match=r"flat.png: only 0 of 3 train patches have pixel std >= extract.min_std=1",
    ):
        sample_image(plan, seed=1, extract=extract, split=REGION, pixels=flat)


def test_rejection_skips_blank_patches() -> None:
    pixels = np.zeros((64, 64, 1), np.uint8)
    pixels[:, 32:] = np.random.default_rng(0).integers(0, 255, (64, 32, 1))
    source = fake("half.png", size=(64, 64))
    extract = replace(EXTRACT, per_image=40, min_std=5.0)
    split = replace(REGION, mode="image")
    plan = plan_images([source], seed=1, extract=extract, split=split)[0]
    ((_, coords, _),) = sample_image(
        plan, seed=1, extract=extract, split=split, pixels=pixels
    ).values()
    assert len(coords) == 40 and (coords[:, 1] + 16 > 32).all()


def test_adding_one_image_changes_few_shards() -> None:
    ids = [f"c{k}/{j:03d}.png" for k in range(3) for j in range(40)]
    sources = [fake(i, int(i[1])) for i in ids]
    params = small_params(Path("unused"))
    plans = plan_images(sources, seed=1, extract=params.extract, split=params.split)
    counts = split_counts(plans, mode="region", fractions=params.split.fractions)

    def groups(
        id_list: list[str], count_list: list[dict[str, int]]
    ) -> set[tuple[tuple[str, int, int], ...]]:
        specs = cut_shards(count_list, id_list, target=params.shards.target_patches)
        return {
            tuple((id_list[p.image], p.start, p.stop) for p in spec.pieces)
            for spec in specs
            if spec.split == "train"
        }

    before = groups(ids, counts)
    grown = sorted([*ids, "c1/020b.png"])
    grown_counts = [counts[0]] * len(grown)
    after = groups(grown, grown_counts)
    assert len(before) >= 10
    assert len(after - before) <= 2, (len(before), len(after - before))


def test_more_patches_than_positions_is_refused_before_drawing() -> None:
    source = fake("brick/brick.png", size=(40, 40))  # 25 x 25 = 625 positions for 16x16
    image = replace(REGION, mode="image")
    plan_images([source], seed=1, extract=replace(EXTRACT, per_image=625), split=image)
    with pytest.raises(
        SourceError,
        match=r"^brick/brick.png: 626 patches of 16x16 asked for the train split, but it has only "
        r"625 distinct positions there; lower extract.per_image$",
    ):
        plan_images([source], seed=1, extract=replace(EXTRACT, per_image=626), split=image)


def test_region_mode_counts_the_positions_of_each_split_blocks() -> None:
    source = fake("a.png", size=(64, 64))  # 2 x 2 blocks of 32: train 2, val 1, test 1
    blocks = region_splits(source, seed=1, split=REGION)
    assert [len(blocks[name]) for name in SPLITS] == [2, 1, 1]
    # 870 patches: train 522 <= 2 * 17 * 17 = 578, val 174 <= 289, test 174 <= 289
    plan_images([source], seed=1, extract=replace(EXTRACT, per_image=870), split=REGION)
    with pytest.raises(
        SourceError,
        match=r"a.png: 300 patches of 16x16 asked for the val split, but it has only 289 "
        r"distinct positions there; lower extract.per_image",
    ):
        plan_images(
            [source],
            seed=1,
            extract=replace(EXTRACT, per_image=1000),
            split=replace(REGION, fractions=(0.4, 0.3, 0.3)),
        )


def test_patch_mode_and_per_class_name_their_own_knob() -> None:
    source = fake("a.png", size=(20, 20))  # 5 x 5 = 25 positions
    with pytest.raises(
        SourceError,
        match=r"a.png: 26 patches of 16x16 asked, but it has only 25 distinct positions; "
        r"lower extract.per_image",
    ):
        plan_images(
            [source],
            seed=1,
            extract=replace(EXTRACT, per_image=26),
            split=replace(REGION, mode="patch"),
        )
    per_class = replace(EXTRACT, per_image=None, per_class=26)
    with pytest.raises(SourceError, match=r"only 25 distinct positions; lower extract.per_class"):
        plan_images([source], seed=1, extract=per_class, split=replace(REGION, mode="patch"))
