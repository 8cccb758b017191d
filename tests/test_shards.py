from __future__ import annotations

import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from patchpack.dataset.io import file_sha256
from patchpack.dataset.shards import (
    ShardData,
    ShardReader,
    read_shard,
    shard_name,
    write_shard,
)
from patchpack.errors import ConfigError, IntegrityError


def sample(n: int = 40, seed: int = 0) -> ShardData:
    rng = np.random.default_rng(seed)
    return ShardData(
        images=rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8),
        labels=(np.arange(n) % 3).astype(np.int32),
        sources=("a/1.png", "b/2.png"),
        source_index=(np.arange(n) >= n // 2).astype(np.int32),
        patch_index=np.arange(n, dtype=np.int32),
        coords=rng.integers(0, 100, (n, 2)).astype(np.int32),
        attrs={
            "class_names": '["a","b","c"]',
            "format_version": 1,
            "split": "train",
            "patch_size": 8,
            "channels": 3,
        },
    )


def test_shard_names_are_zero_padded() -> None:
    assert shard_name(3) == "shard-00003.h5"


@pytest.mark.parametrize(("compression", "level"), [("zstd", 3), ("gzip", 4), ("none", 0)])
def test_round_trip(tmp_path: Path, compression: str, level: int) -> None:
    data = sample()
    write_shard(tmp_path / "s.h5", data, chunk_patches=16, compression=compression, level=level)
    back = read_shard(tmp_path / "s.h5")
    for name in ("images", "labels", "source_index", "patch_index", "coords"):
        assert np.array_equal(getattr(back, name), getattr(data, name)), name
    assert back.sources == data.sources and back.attrs == data.attrs
    assert back.content_sha256() == data.content_sha256()
    assert back.patch_digests() == data.patch_digests()


def test_unknown_compression(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown compression 'lz4'"):
        write_shard(tmp_path / "s.h5", sample(), chunk_patches=16, compression="lz4", level=1)
    assert list(tmp_path.iterdir()) == []


def test_bytes_do_not_depend_on_the_clock(tmp_path: Path) -> None:
    """HDF5 stores object timestamps unless told not to; a write a second later must not differ."""
    write_shard(tmp_path / "a.h5", sample(), chunk_patches=16, compression="zstd", level=3)
    time.sleep(1.1)
    write_shard(tmp_path / "b.h5", sample(), chunk_patches=16, compression="zstd", level=3)
    assert file_sha256(tmp_path / "a.h5") == file_sha256(tmp_path / "b.h5")


def pinned(package: str) -> str:
    """The version constraints.txt pins for ``package``."""
    for line in (Path(__file__).parents[1] / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if name.strip().lower() == package:
            return version.strip()
    raise LookupError(package)


@pytest.mark.skipif(
    h5py.__version__ != pinned("h5py"),
    reason="documents the HDF5 of the pinned h5py (constraints.txt); other builds may differ",
)
@pytest.mark.parametrize(
    ("file_options", "dataset_options"),
    [
        ({}, {"track_times": True}),
        ({"track_order": True}, {}),
        ({"libver": ("v110", "latest")}, {}),
    ],
    ids=["track_times", "track_order", "libver_v110"],
)
def test_the_clock_check_catches_hdf5_timestamp_traps(
    tmp_path: Path, file_options: dict[str, object], dataset_options: dict[str, object]
) -> None:
    """Control for the test above: each HDF5 trap patchpack avoids does change bytes a second later.

    This documents the behaviour of the pinned h5py/HDF5 only, so it runs only on that version.
    """
    for name in ("a.h5", "b.h5"):
        with h5py.File(tmp_path / name, "w", **file_options) as h5:
            h5.create_dataset("x", data=np.arange(4), **dataset_options)
        time.sleep(1.1)
    assert file_sha256(tmp_path / "a.h5") != file_sha256(tmp_path / "b.h5")


def test_content_hash_sees_every_array() -> None:
    base = sample()
    for name in ("images", "labels", "source_index", "patch_index", "coords"):
        changed = getattr(base, name).copy()
        changed.flat[0] += 1
        assert (
            ShardData(**{**base.__dict__, name: changed}).content_sha256() != base.content_sha256()
        ), name
    renamed = ShardData(**{**base.__dict__, "sources": ("a/1.png", "b/3.png")})
    assert renamed.content_sha256() != base.content_sha256()


def test_reader_reads_ranges_and_rows(tmp_path: Path) -> None:
    data = sample()
    write_shard(tmp_path / "s.h5", data, chunk_patches=16, compression="zstd", level=3)
    with ShardReader(tmp_path / "s.h5") as reader:
        assert len(reader) == 40 and reader.class_names == ["a", "b", "c"]
        images, labels = reader.read(10, 20)
        assert np.array_equal(images, data.images[10:20]) and np.array_equal(
            labels, data.labels[10:20]
        )
        rows = [31, 2, 2, 17]
        images, labels = reader.take(rows)
        assert np.array_equal(images, data.images[rows]) and np.array_equal(
            labels, data.labels[rows]
        )


def test_unreadable_shard(tmp_path: Path) -> None:
    (tmp_path / "s.h5").write_bytes(b"not hdf5")
    with pytest.raises(IntegrityError, match=r"s.h5: unreadable shard"):
        read_shard(tmp_path / "s.h5")
    with pytest.raises(IntegrityError, match=r"s.h5: unreadable shard"):
        ShardReader(tmp_path / "s.h5")


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    broken = ShardData(**{**sample().__dict__, "images": np.zeros((40, 8, 8, 3), dtype=object)})
    with pytest.raises(TypeError):
        write_shard(tmp_path / "s.h5", broken, chunk_patches=16, compression="zstd", level=3)
    assert list(tmp_path.iterdir()) == []
