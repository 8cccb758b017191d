from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from patchpack.errors import IntegrityError
from patchpack.training.keras_adapter import ShardSequence
from patchpack.training.loader import BatchOptions, open_dataset, plan_epoch
from support.datasets import make_dataset, patch_ids

TRAIN = 40 + 25 + 31


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("loader") / "patches")


def epoch_ids(folder: Path, **kwargs: object) -> list[np.ndarray]:
    with open_dataset(folder) as data:
        return [patch_ids(images) for images, _ in data.split("train").batches(**kwargs)]  # type: ignore[arg-type]


def test_metadata(dataset: Path) -> None:
    with open_dataset(dataset) as data:
        assert data.class_names == ["class_0", "class_1", "class_2"]
        assert data.input_shape == (32, 32, 1)
        assert [len(data.split(name)) for name in ("train", "val", "test")] == [TRAIN, 20, 21]
        assert data.split("train").num_batches(16) == 6


@pytest.mark.parametrize("workers", [0, 3])
@pytest.mark.parametrize("batch_size", [1, 7, 16, 200])
def test_every_patch_exactly_once_per_epoch(dataset: Path, workers: int, batch_size: int) -> None:
    batches = epoch_ids(dataset, batch_size=batch_size, seed=5, epoch=2, workers=workers)

    ids = np.concatenate(batches)
    assert sorted(ids.tolist()) == list(range(TRAIN))
    assert [len(b) for b in batches[:-1]] == [batch_size] * (len(batches) - 1)
    assert len(batches[-1]) == TRAIN - batch_size * (len(batches) - 1)  # the partial last batch


def test_order_is_a_function_of_seed_and_epoch_only(dataset: Path) -> None:
    first = np.concatenate(epoch_ids(dataset, batch_size=16, seed=1, epoch=0, workers=0))
    again = np.concatenate(epoch_ids(dataset, batch_size=10, seed=1, epoch=0, workers=4))
    next_epoch = np.concatenate(epoch_ids(dataset, batch_size=16, seed=1, epoch=1))
    other_seed = np.concatenate(epoch_ids(dataset, batch_size=16, seed=2, epoch=0))

    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, next_epoch)
    assert not np.array_equal(first, other_seed)
    assert not np.array_equal(first, np.arange(TRAIN))


def test_labels_travel_with_their_patches(dataset: Path) -> None:
    with open_dataset(dataset) as data:
        canonical = data.split("train").labels()
        for images, labels in data.split("train").batches(batch_size=16, seed=3):
            assert labels.dtype == np.int32 and images.dtype == np.uint8
            assert images.shape[1:] == (32, 32, 1)
            # make_dataset numbers patches shard by shard, so the serial number finds the label
            np.testing.assert_array_equal(labels, canonical[patch_ids(images)])


def test_unshuffled_is_canonical_order(dataset: Path) -> None:
    ids = np.concatenate(epoch_ids(dataset, batch_size=16, shuffle=False))
    np.testing.assert_array_equal(ids, np.arange(TRAIN))


def test_shuffle_mixes_shards_within_a_batch(dataset: Path) -> None:
    ids = epoch_ids(dataset, batch_size=32, seed=0, shuffle_buffer=32)
    shard_of = np.searchsorted([40, 65], ids[0], side="right")
    assert len(set(shard_of.tolist())) >= 2


def test_pydataset_moves_to_the_next_epoch(dataset: Path) -> None:
    with open_dataset(dataset) as data:
        sequence = ShardSequence(data.split("train"), BatchOptions(16, seed=7, workers=2))
        epoch0 = np.concatenate([patch_ids(sequence[i][0]) for i in range(len(sequence))])
        sequence.on_epoch_end()
        epoch1 = np.concatenate([patch_ids(sequence[i][0]) for i in range(len(sequence))])
        expected = epoch_ids(dataset, batch_size=16, seed=7, epoch=1)

        assert len(sequence) == 6
        assert sorted(epoch0.tolist()) == sorted(epoch1.tolist()) == list(range(TRAIN))
        np.testing.assert_array_equal(epoch1, np.concatenate(expected))
        assert not np.array_equal(epoch0, epoch1)
        with pytest.raises(IndexError):
            sequence[len(sequence)]


def test_plan_windows_follow_chunks() -> None:
    plan = plan_epoch([10, 5], seed=0, epoch=0, window=4, shuffle_buffer=8)

    windows = sorted(w for group in plan.groups for w in group)
    assert windows == [(0, 0, 4), (0, 4, 8), (0, 8, 10), (1, 0, 4), (1, 4, 5)]
    assert [len(group) for group in plan.groups] == [2, 2, 1]
    assert sorted(plan.order()) == [(0, r) for r in range(10)] + [(1, r) for r in range(5)]


def test_missing_dataset_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(IntegrityError, match=r"no manifest.*patchpack extract"):
        open_dataset(tmp_path / "nowhere")


def test_missing_shard_is_an_integrity_error(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path / "patches")
    (folder / "train" / "shard-00001.h5").unlink()

    # every shard is opened up front, so a missing one is found before any batch is served
    with pytest.raises(IntegrityError, match=r"shard-00001\.h5: shard is missing"):
        open_dataset(folder)
