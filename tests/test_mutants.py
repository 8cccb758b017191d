"""Fast behavioural checks of rules that the slower end-to-end tests do not pin down on their own.

Each test calls one pure function (or a small object built in memory) and states what the rule it
guards must do: per-image seeding, seeded split assignment, shard boundaries, the ROI threshold,
majority labels, the shard label range, the loader's epoch order, the Dask environment check and
the leakage audit. None reads a dataset from disk.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from patchpack.audit.leakage import audit_leakage
from patchpack.dataset.labels import RasterLabels, majority
from patchpack.dataset.manifest import Manifest
from patchpack.dataset.plan import Draw, ImagePlan, Rect, cut_shards, draw_coords, plan_images
from patchpack.dataset.shards import ShardData, ShardLayout, ShardMismatch
from patchpack.dataset.sources import SourceImage, SourceRecord
from patchpack.dataset.tissue import Roi, RoiMask
from patchpack.engine.executors import DaskExecutor
from patchpack.errors import ClusterError
from patchpack.params import DatasetParams, ExtractParams, LabelParams, SplitParams
from patchpack.training.loader import plan_epoch


def fake(source_id: str, label: int = 0, size: tuple[int, int] = (64, 64)) -> SourceImage:
    """A catalog entry with no file behind it: planning never reads pixels."""
    return SourceImage(source_id, label, f"c{label}", Path(source_id), size[1], size[0], "0" * 64)


# --- per-image seeds (plan.image_rng) ------------------------------------------------------------


def coords_for(source_id: str, seed: int = 7) -> np.ndarray:
    """Random corners of 32 patches of 8x8 in a 100x100 image, from the image's own stream."""
    draw = Draw("train", 32, 0, (Rect(0, 100, 0, 100),), 1)
    plan = ImagePlan(source=fake(source_id, size=(100, 100)), draws=(draw,))
    coords, _ = draw_coords(plan, draw, seed=seed, patch_size=8)
    return coords


def test_images_with_different_ids_draw_different_coordinates() -> None:
    assert np.array_equal(coords_for("a/one.png"), coords_for("a/one.png"))
    assert not np.array_equal(coords_for("a/one.png"), coords_for("a/two.png"))
    assert not np.array_equal(coords_for("a/one.png"), coords_for("b/one.png"))


# --- image-mode split assignment (plan.splits._image_splits) -------------------------------------


def image_mode_assignment(seed: int) -> dict[str, str]:
    sources = [fake(f"c0/img_{k:02d}.png") for k in range(20)]
    extract = ExtractParams(patch_size=16, per_image=1, min_std=0.0)
    split = SplitParams(mode="image", fractions=(0.6, 0.2, 0.2))
    plans = plan_images(sources, seed=seed, extract=extract, split=split)
    return {plan.source.id: plan.draws[0].split for plan in plans}


def test_the_seed_decides_which_images_go_to_which_split() -> None:
    first, second = image_mode_assignment(1), image_mode_assignment(2)
    assert image_mode_assignment(1) == first
    for assignment in (first, second):
        split_sizes = {
            name: list(assignment.values()).count(name) for name in ("train", "val", "test")
        }
        assert split_sizes == {"train": 12, "val": 4, "test": 4}
    assert first != second


# --- shard boundaries (plan.layout._closes) ------------------------------------------------------


def boundary_hash(split: str, source_id: str) -> float:
    """The documented rule's hash, in [0, 1): sha256 of ``shard-boundary:<split>:<id>``, 63 bits."""
    digest = hashlib.sha256(f"shard-boundary:{split}:{source_id}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 1) / 2**63


def test_a_shard_closes_after_exactly_the_images_whose_hash_falls_below_n_over_target() -> None:
    n, target = 10, 100  # 12 images of 10 patches stay below the cap (2 * target): hashes decide
    candidates = [f"c0/slide_{k:03d}.png" for k in range(200)]
    closing = [c for c in candidates if boundary_hash("train", c) < n / target][:3]
    staying = [c for c in candidates if boundary_hash("train", c) >= n / target][:9]
    ids = sorted(closing + staying)
    counts = [{"train": n, "val": 0, "test": 0} for _ in ids]

    specs = cut_shards(counts, ids, target=target)

    expected, group = [], []
    for image, source_id in enumerate(ids):
        group.append(image)
        if source_id in closing:
            expected.append(group)
            group = []
    if group:
        expected.append(group)
    got = [[piece.image for piece in spec.pieces] for spec in specs if spec.split == "train"]
    assert got == expected
    assert len(got) >= 3  # the rule did cut somewhere
    assert [spec.index for spec in specs if spec.split == "train"] == list(range(len(got)))


# --- region of interest (tissue.Roi.keep) --------------------------------------------------------


def test_a_patch_with_exactly_the_minimum_fraction_in_the_roi_is_kept() -> None:
    mask = np.zeros((8, 8), bool)
    mask[:, :4] = True  # the left half
    roi = Roi(png=RoiMask(mask, 1.0).png(), downsample=1.0, min_fraction=0.5)
    ys = np.array([0, 0, 0, 0])
    xs = np.array([0, 2, 3, 4])  # 4x4 patches: 4/4, 2/4, 1/4 and 0/4 inside
    assert roi.keep(ys, xs, 4, 1.0).tolist() == [True, True, False, False]


# --- majority labels (labels.majority) -----------------------------------------------------------


def test_a_majority_tie_gives_no_label() -> None:
    shares = np.array(
        [
            [0.5, 0.5, 0.0],  # two classes tie
            [0.4, 0.4, 0.2],  # a tie above the minimum
            [1 / 3, 1 / 3, 1 / 3],  # three-way tie
            [0.6, 0.4, 0.0],  # a clear winner
            [0.0, 0.3, 0.3],  # a tie at the minimum
        ]
    )
    assert majority(shares, 0.3).tolist() == [-1, -1, -1, 0, -1]


def test_a_raster_patch_split_evenly_between_two_classes_gets_no_majority_label() -> None:
    values = np.zeros((8, 8), np.uint8)
    values[:, :4], values[:, 4:] = 1, 2  # class 1 on the left, class 2 on the right
    labeller = RasterLabels(
        Path("mask.png"),
        values,
        1.0,
        ("left", "right"),
        LabelParams(origin="mask", classes=("left", "right"), rule="majority", min_fraction=0.25),
    )
    ys, xs = np.array([0, 0, 0]), np.array([0, 2, 3])
    # 4x4 patches: all left; half and half (a tie); one column left, three right
    assert labeller.labels(ys, xs, 4, 1.0).tolist() == [0, -1, 1]


# --- shard label range (shards.ShardLayout.check_values) -----------------------------------------


def layout() -> ShardLayout:
    return ShardLayout(
        patches=3, patch_size=4, channels=1, split="train", class_names=("a", "b", "c")
    )


def test_a_label_equal_to_the_class_count_is_refused() -> None:
    index = np.zeros(3, np.int32)
    layout().check_values(np.array([0, 1, 2], np.int32), index, 1, Path("s.h5"))
    with pytest.raises(ShardMismatch, match=r"labels run from 0 to 3, but there are 3 classes"):
        layout().check_values(np.array([0, 1, 3], np.int32), index, 1, Path("s.h5"))
    with pytest.raises(ShardMismatch, match=r"labels run from -1 to 2"):
        layout().check_values(np.array([-1, 1, 2], np.int32), index, 1, Path("s.h5"))


# --- the loader's epoch order (loader.plan_epoch) ------------------------------------------------


def test_the_window_order_changes_from_one_epoch_to_the_next() -> None:
    def windows(epoch: int) -> list[tuple[int, int, int]]:
        plan = plan_epoch([64, 64, 64], seed=5, epoch=epoch, window=8, shuffle_buffer=8)
        return [tuple(w) for group in plan.groups for w in group]

    assert windows(0) == windows(0)
    assert sorted(windows(0)) == sorted(windows(1))  # the same windows, every one once
    assert windows(0) != windows(1)
    assert windows(1) != windows(2)


def test_the_order_within_a_group_changes_from_one_epoch_to_the_next() -> None:
    def order(epoch: int) -> list[tuple[int, int]]:
        return plan_epoch([64], seed=5, epoch=epoch, window=64, shuffle_buffer=64).order()

    assert order(0) == order(0)
    assert sorted(order(0)) == sorted(order(1)) == [(0, row) for row in range(64)]
    assert order(0) != order(1)


# --- the Dask environment check (engine.executors.DaskExecutor.check_environment) ----------------


class FakeClient:
    """What DaskExecutor needs of a ``distributed.Client``: workers that report an environment."""

    def __init__(self, reports: Mapping[str, Mapping[str, str]]) -> None:
        self.reports = reports

    def get_executor(self, **options: Any) -> object:
        return object()

    def run(self, function: Callable[[], Mapping[str, str]]) -> dict[str, Mapping[str, str]]:
        return dict(self.reports)


LOCAL = {"numpy": "2.1.0", "h5py": "3.12.1"}


def test_the_environment_check_refuses_a_cluster_where_only_the_second_worker_differs() -> None:
    reports = {
        "tcp://10.0.0.1:4000": dict(LOCAL),
        "tcp://10.0.0.2:4000": {**LOCAL, "h5py": "3.11.0"},
    }
    executor = DaskExecutor(FakeClient(reports))
    with pytest.raises(ClusterError, match=r"worker tcp://10\.0\.0\.2:4000 has h5py 3\.11\.0"):
        executor.check_environment(LOCAL, accept=False, report=lambda: LOCAL)
    notes = executor.check_environment(LOCAL, accept=True, report=lambda: LOCAL)
    assert notes == ["worker tcp://10.0.0.2:4000 has h5py 3.11.0, this machine 3.12.1"]


def test_the_environment_check_passes_when_every_worker_matches() -> None:
    reports = {f"tcp://10.0.0.{k}:4000": dict(LOCAL) for k in (1, 2, 3)}
    executor = DaskExecutor(FakeClient(reports))
    assert executor.check_environment(LOCAL, accept=False, report=lambda: LOCAL) == []


# --- the leakage audit (audit.leakage.audit_leakage) ---------------------------------------------

SIZE = 8
SOURCE = "c0/slide.png"


def shard(split: str, corners: list[tuple[int, int]]) -> ShardData:
    n = len(corners)
    return ShardData(
        images=np.zeros((n, SIZE, SIZE, 1), np.uint8),
        labels=np.zeros(n, np.int32),
        sources=(SOURCE,),
        source_index=np.zeros(n, np.int32),
        patch_index=np.arange(n, dtype=np.int32),
        coords=np.array(corners, np.int32).reshape(n, 2),
        attrs={"split": split},
    )


def region_manifest() -> Manifest:
    params = DatasetParams(
        seed=0,
        extract=ExtractParams(patch_size=SIZE, per_image=3, min_std=0.0),
        split=SplitParams(mode="region", fractions=(0.6, 0.2, 0.2), block_size=16),
    )
    record = SourceRecord(id=SOURCE, class_name="c0", width=512, height=512, sha256="0" * 64)
    return Manifest.create(
        class_names=("c0",), params=params, sources=[record], counts={}, shards=[], environment={}
    )


FAR = {"train": (0, 0), "val": (0, 200), "test": (200, 0)}  # well apart: no leak between them


@pytest.mark.parametrize(
    ("first", "second"), [("train", "val"), ("train", "test"), ("val", "test")]
)
def test_the_audit_finds_a_shared_pixel_between_any_two_splits(first: str, second: str) -> None:
    corners = {name: [corner] for name, corner in FAR.items()}
    assert audit_leakage(region_manifest(), [shard(name, c) for name, c in corners.items()]) == []
    y, x = FAR[first]
    corners[second].append((y + SIZE - 1, x + SIZE - 1))  # shares the first's bottom-right pixel
    problems = audit_leakage(region_manifest(), [shard(name, c) for name, c in corners.items()])
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"leakage: source {SOURCE}: ")
    assert {first, second} <= set(problems[0].replace(" patch", "").split())


@pytest.mark.parametrize(
    ("offset", "leaks"),
    [
        pytest.param((SIZE - 1, 0), True, id="last-row-shared"),
        pytest.param((0, SIZE - 1), True, id="last-column-shared"),
        pytest.param((SIZE - 1, SIZE - 1), True, id="corner-pixel-shared"),
        pytest.param((SIZE, 0), False, id="touching-below"),
        pytest.param((0, SIZE), False, id="touching-right"),
        pytest.param((SIZE, SIZE), False, id="touching-diagonally"),
        pytest.param((SIZE - 1, SIZE), False, id="rows-shared-columns-apart"),
    ],
)
def test_squares_share_a_pixel_exactly_when_both_corners_are_less_than_a_side_apart(
    offset: tuple[int, int], leaks: bool
) -> None:
    dy, dx = offset
    shards = [shard("train", [(40, 40)]), shard("val", [(40 + dy, 40 + dx)])]
    assert bool(audit_leakage(region_manifest(), shards)) is leaks
    flipped = [shard("train", [(40 + dy, 40 + dx)]), shard("val", [(40, 40)])]
    assert bool(audit_leakage(region_manifest(), flipped)) is leaks
