"""patchpack's permutation and the PyTorch adapter: one (seed, epoch), one order, in every loader."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from patchpack.errors import ConfigError, IntegrityError, NotPulledError
from patchpack.training.keras_adapter import ShardSequence
from patchpack.training.loader import BatchOptions, open_split
from patchpack.training.order import GROUP_STREAM, WINDOW_STREAM, permutation
from support.datasets import make_dataset, patch_ids

torch = pytest.importorskip("torch")
from patchpack.torch import EpochSampler, PatchLoader, ShardBatches, dataloader  # noqa: E402
from patchpack.training.torch_adapter import batches_per_key  # noqa: E402  (both need torch)

TRAIN = 40 + 25 + 31
# chunks of 8 rows, groups of 16 patches: windows and groups are both shuffled
OPTIONS = BatchOptions(12, seed=3, shuffle_buffer=16)

# The first patches of epochs 0 and 1 (seed 3) of make_dataset(seed=0)'s train split: the first 12
# hex digits of each patch's sha256. A change of the order (or of the permutation) fails here.
GOLDEN = {
    0: ["de93948174a4", "37a913f8ba4d", "40518e44e139", "8890bcb97370"],
    1: ["b8be387bdecb", "79e0bde914c3", "768fc91c10a7", "af417f04efec"],
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("torch") / "patches", seed=0)


def digests(images: np.ndarray) -> list[str]:
    return [hashlib.sha256(patch.tobytes()).hexdigest()[:12] for patch in images]


def keras_epochs(folder: Path, epochs: int, options: BatchOptions = OPTIONS) -> list[list[str]]:
    """The patch digests of each epoch as the Keras adapter delivers them."""
    split = open_split(folder, "train")
    try:
        sequence = ShardSequence(split, options)
        result = []
        for _ in range(epochs):
            result.append([d for i in range(len(sequence)) for d in digests(sequence[i][0])])
            sequence.on_epoch_end()
        return result
    finally:
        split.close()


def torch_epochs(
    folder: Path, epochs: int, workers: int, options: BatchOptions = OPTIONS
) -> list[list[str]]:
    loader = dataloader(
        folder,
        "train",
        batch_size=options.batch_size,
        seed=options.seed,
        shuffle_buffer=options.shuffle_buffer,
        num_workers=workers,
    )
    assert len(loader) == math.ceil(TRAIN / options.batch_size)
    result = []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        batches = [(images.numpy(), labels) for images, labels in loader]
        assert all(labels.dtype == torch.int64 for _, labels in batches)
        result.append([d for images, _ in batches for d in digests(images)])
    return result


# --- the permutation -------------------------------------------------------------------------


def reference_permutation(n: int, stream: int, seed: int, epoch: int, group: int) -> list[int]:
    """The documented algorithm, written out in plain Python (no numpy sort)."""
    key = (
        b"patchpack-permutation-1\0"
        + json.dumps([stream, seed, epoch, group]).replace(" ", "").encode()
    )
    data = hashlib.shake_256(key).digest(8 * n)
    words = [int.from_bytes(data[8 * i : 8 * i + 8], "little") for i in range(n)]
    return sorted(range(n), key=lambda i: (words[i], i))


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 64, 257, 1000])
@pytest.mark.parametrize("key", [(0, 0, 0, 0), (1, 5, 2, 9), (0, -3, 10**12, 0)])
def test_the_permutation_is_a_permutation_by_the_documented_algorithm(
    n: int, key: tuple[int, int, int, int]
) -> None:
    stream, seed, epoch, group = key
    perm = permutation(n, stream=stream, seed=seed, epoch=epoch, group=group)

    assert perm.dtype == np.int64 and perm.shape == (n,)
    assert sorted(perm.tolist()) == list(range(n))
    assert perm.tolist() == reference_permutation(n, stream, seed, epoch, group)


def test_the_permutation_differs_by_epoch_seed_stream_and_group() -> None:
    base = permutation(50, stream=WINDOW_STREAM, seed=0, epoch=0).tolist()
    others = [
        permutation(50, stream=WINDOW_STREAM, seed=0, epoch=1),
        permutation(50, stream=WINDOW_STREAM, seed=1, epoch=0),
        permutation(50, stream=GROUP_STREAM, seed=0, epoch=0),
        permutation(50, stream=WINDOW_STREAM, seed=0, epoch=0, group=1),
    ]
    assert all(other.tolist() != base for other in others)
    epochs = {tuple(permutation(50, stream=0, seed=0, epoch=e).tolist()) for e in range(20)}
    assert len(epochs) == 20


def test_the_permutation_has_a_golden_value() -> None:
    assert permutation(10, stream=0, seed=0, epoch=0).tolist() == [8, 9, 0, 6, 4, 3, 2, 5, 7, 1]


def test_a_negative_size_is_refused() -> None:
    with pytest.raises(ValueError, match=r"n must be 0 or more \(received -1\)"):
        permutation(-1, stream=0, seed=0, epoch=0)


# --- the PyTorch adapter ---------------------------------------------------------------------


# more workers than this machine has cores is fine for a check of the order
@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
@pytest.mark.parametrize("workers", [0, 2, 4])
def test_dataloaders_deliver_the_keras_adapters_order(dataset: Path, workers: int) -> None:
    expected = keras_epochs(dataset, 2)
    got = torch_epochs(dataset, 2, workers)

    assert got == expected
    assert got[0] != got[1]
    assert sorted(got[0]) == sorted(got[1])  # every patch once per epoch
    assert len(got[0]) == TRAIN


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
@pytest.mark.parametrize("workers", [2, 3])
def test_workers_serving_runs_of_batches_keep_the_order(dataset: Path, workers: int) -> None:
    # groups of 48 patches, batches of 4: each key is a run of 3 (2 workers) or 2 (3 workers)
    options = BatchOptions(4, seed=11, shuffle_buffer=48)
    assert (
        batches_per_key(ShardBatches(dataset, "train", options), workers) == {2: 3, 3: 2}[workers]
    )
    assert torch_epochs(dataset, 2, workers, options) == keras_epochs(dataset, 2, options)


def test_the_first_patches_are_golden(dataset: Path) -> None:
    got = torch_epochs(dataset, 2, 0)
    assert {epoch: got[epoch][:4] for epoch in (0, 1)} == GOLDEN


def test_labels_travel_with_their_patches(dataset: Path) -> None:
    split = open_split(dataset, "train")
    canonical = split.labels()
    split.close()
    for images, labels in dataloader(dataset, batch_size=10, seed=1, num_workers=2):
        np.testing.assert_array_equal(labels.numpy(), canonical[patch_ids(images.numpy())])
        assert images.dtype == torch.uint8 and tuple(images.shape[1:]) == (32, 32, 1)


def test_a_batch_by_index_and_by_key(dataset: Path) -> None:
    batches = ShardBatches(dataset, "val", BatchOptions(8, seed=0, epoch=2))

    assert len(batches) == 3  # 20 patches
    images, labels = batches[1]
    assert images.dtype == np.uint8 and labels.dtype == np.int64 and images.shape == (8, 32, 32, 1)
    np.testing.assert_array_equal(images, batches[(2, 1)][0])
    assert not np.array_equal(batches[(2, 0)][0], batches[(3, 0)][0])
    with pytest.raises(IndexError, match=r"batch 3 out of range \(0..2\)"):
        batches[3]
    batches.close()


def test_workers_forked_after_the_parent_read_open_their_own_files(dataset: Path) -> None:
    batches = ShardBatches(dataset, "train", BatchOptions(12, seed=3, shuffle_buffer=16))
    in_parent = [digests(batches[i][0]) for i in range(len(batches))]  # files open here
    loader = PatchLoader(batches, batch_size=None, sampler=EpochSampler(batches), num_workers=2)

    assert [digests(images.numpy()) for images, _ in loader] == in_parent
    assert batches[0][0].tobytes() == batches[(0, 0)][0].tobytes()
    batches.close()


def test_spawned_workers_get_the_recipe_not_open_files(dataset: Path) -> None:
    loader = dataloader(dataset, "val", batch_size=8, seed=2, num_workers=2)
    spawned = dataloader(
        dataset, "val", batch_size=8, seed=2, num_workers=2, multiprocessing_context="spawn"
    )
    spawned.dataset[0]  # now this process holds open HDF5 files, which cannot be pickled

    assert [digests(i.numpy()) for i, _ in spawned] == [digests(i.numpy()) for i, _ in loader]


def test_the_loader_options_it_sets_itself_are_refused(dataset: Path) -> None:
    with pytest.raises(TypeError, match=r"sets sampler itself"):
        dataloader(dataset, batch_size=8, sampler=[0])


# --- bad input -------------------------------------------------------------------------------


def test_a_split_that_was_not_pulled(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path / "patches")
    shutil.rmtree(folder / "test")

    with pytest.raises(NotPulledError, match=r"the test split is not pulled .*patchpack pull"):
        dataloader(folder, "test", batch_size=4)
    assert len(dataloader(folder, "train", batch_size=4)) == 24  # the pulled splits still read


def test_an_unknown_split_and_a_missing_dataset(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown split 'tran'; choose one of train"):
        dataloader(tmp_path, "tran", batch_size=4)
    with pytest.raises(IntegrityError, match=r"no manifest"):
        dataloader(tmp_path / "nowhere", "train", batch_size=4)


def test_a_shard_of_an_unknown_format_version(tmp_path: Path) -> None:
    import h5py

    folder = make_dataset(tmp_path / "patches")
    with h5py.File(folder / "train" / "shard-00000.h5", "r+") as h5:
        h5.attrs["format_version"] = 99
    with pytest.raises(IntegrityError, match=r"shard-00000\.h5: attribute format_version is 99"):
        dataloader(folder, "train", batch_size=4)

    # a dataset written by a newer patchpack: its manifest names a format this one cannot read
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    manifest["format_version"] = 99
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(IntegrityError, match=r"format version 99, this patchpack reads"):
        dataloader(folder, "train", batch_size=4)
