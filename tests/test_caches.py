"""A slide's tile and window caches: sized to what a shard needs, within ``source.cache_mb``, and
never a change to the bytes."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from patchpack.dataset import work
from patchpack.dataset.extract import extract
from patchpack.dataset.readers import TiffReader
from patchpack.params import params_from_dict
from support.commands import file_digests
from support.slides import tissue_image, write_pyramid

LIMIT = 100_000_000


@pytest.fixture
def slides(tmp_path: Path) -> Path:
    """Two classes, one zlib-tiled pyramid each, tiles of 64x64."""
    write_pyramid(tmp_path / "slides" / "a" / "one.tif", tissue_image(512, 640))
    write_pyramid(tmp_path / "slides" / "b" / "two.tif", tissue_image(512, 640, seed=1))
    return tmp_path / "slides"


def _params(slides: Path, cache_mb: int = 256, per_image: int = 120):  # type: ignore[no-untyped-def]
    return params_from_dict(
        {
            "base": {"seed": 3},
            "source": {"dir": str(slides), "channels": 3, "cache_mb": cache_mb},
            "extract": {"patch_size": 48, "per_image": per_image, "min_std": 20.0, "roi": "tissue"},
            "split": {"mode": "region", "block_size": 64},
            "shards": {"target_patches": 64, "chunk_patches": 16},
        }
    )


def _count_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[collections.Counter, collections.Counter]:  # type: ignore[type-arg]
    """Count each window read and each tile decoded, by position."""
    windows: collections.Counter = collections.Counter()  # type: ignore[type-arg]
    tiles: collections.Counter = collections.Counter()  # type: ignore[type-arg]
    read, decode = TiffReader.read, TiffReader._decode

    def counted_read(self: TiffReader, level: int, y: int, x: int, h: int, w: int):  # type: ignore[no-untyped-def]
        windows[(self.path.name, level, y, x)] += 1
        return read(self, level, y, x, h, w)

    def counted_decode(self: TiffReader, table, level: int, index: int):  # type: ignore[no-untyped-def]
        tiles[(self.path.name, level, index)] += 1
        return decode(self, table, level, index)

    monkeypatch.setattr(TiffReader, "read", counted_read)
    monkeypatch.setattr(TiffReader, "_decode", counted_decode)
    return windows, tiles


def test_every_window_and_tile_is_decoded_once_when_the_defaults_are_tiny(
    slides: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Default caches far below a shard's working set are resized to it: no window is read twice,
    and while a shard is cut no tile is decoded twice (a cache read in the order it was filled
    would miss every time)."""
    monkeypatch.setattr(work.Windows, "KEEP_BYTES", 1)
    monkeypatch.setattr(TiffReader, "TILE_CACHE_BYTES", 1)
    windows, tiles = _count_reads(monkeypatch)
    per_shard: collections.Counter = collections.Counter()  # type: ignore[type-arg]
    sized = work.Windows.size_for

    def next_shard(self: work.Windows, windows: int, size: int, channels: int, budget: int) -> None:
        per_shard.update({(len(starts), key): n for key, n in tiles.items()})
        tiles.clear()
        starts.append(windows)
        sized(self, windows, size, channels, budget)

    starts: list[int] = []
    monkeypatch.setattr(work.Windows, "size_for", next_shard)
    manifest = extract(_params(slides), out=tmp_path / "out")
    per_shard.update({(len(starts), key): n for key, n in tiles.items()})
    assert sum(shard.patches for shard in manifest.shards) == 240
    assert len(windows) >= 240 and set(windows.values()) == {1}
    assert len(starts) >= 6 and len(per_shard) > 10 and set(per_shard.values()) == {1}


def test_a_small_budget_changes_speed_only(
    slides: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same files with the caches at their smallest (two windows, three tiles): the budget is
    not part of the dataset, so the manifest and its fingerprint are the same too."""
    reference = extract(_params(slides), out=tmp_path / "big")
    sized = work.Windows.size_for

    def starved(self: work.Windows, windows: int, size: int, channels: int, budget: int) -> None:
        sized(self, windows, size, channels, 2 * size * size * channels + 3 * 64 * 64 * 3)

    monkeypatch.setattr(work.Windows, "size_for", starved)
    windows, tiles = _count_reads(monkeypatch)
    small = extract(_params(slides, cache_mb=16), out=tmp_path / "small")
    assert max(windows.values()) > 1 and max(tiles.values()) > 1  # the caches were too small
    assert small.fingerprint == reference.fingerprint
    assert file_digests(tmp_path / "small") == file_digests(tmp_path / "big")


def test_caches_are_sized_to_the_working_set_within_the_budget(slides: Path) -> None:
    with TiffReader(slides / "a" / "one.tif", 3, LIMIT) as reader:
        windows = work.Windows(reader, 0)
        windows.size_for(10, 48, 3, budget=2**30)
        assert windows.keep_bytes == 10 * 48 * 48 * 3
        # a 48-pixel window touches at most 2 x 2 tiles of 64: 40 tiles of 64x64x3
        assert reader.tile_cache_bytes == 40 * 64 * 64 * 3
        windows.size_for(1000, 48, 3, budget=2**30)
        assert reader.tile_cache_bytes == 80 * 64 * 64 * 3  # every tile of the 512x640 level
        windows.size_for(1000, 48, 3, budget=2**20)
        assert windows.keep_bytes == 2**19
        assert reader.tile_cache_bytes == 2**20 - 2**19
        assert windows.held_bytes() == 2**20


def test_a_slide_stays_open_across_the_tasks_of_a_run(
    slides: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slide's shards spread over several tasks; on a local worker the slide stays open and its
    tiles are decoded once for all of them (not once per task), the file hashed once in the run
    (by the catalog), and it is closed when the run ends."""
    from patchpack.dataset.sources import hashing

    _, tiles = _count_reads(monkeypatch)
    hashed: collections.Counter = collections.Counter()  # type: ignore[type-arg]
    file_sha256, tasks = hashing.file_sha256, []
    run_task = work.run_task

    def counted_hash(path: Path) -> str:
        hashed[path.name] += 1
        return file_sha256(path)

    def counted_task(task: work.Task):  # type: ignore[no-untyped-def]
        if not tasks:
            tiles.clear()  # the tissue masks decoded their own (a small slide's level 0)
        tasks.append(task)
        return run_task(task)

    monkeypatch.setattr(hashing, "file_sha256", counted_hash)
    monkeypatch.setattr(hashing, "RACY_NS", 0)  # the slides were just written: not racy here
    monkeypatch.setattr("patchpack.dataset.extract.run_task", counted_task)
    extract(_params(slides, per_image=300), out=tmp_path / "out")
    spread = {name for task in tasks[1:] for job in task.jobs for name in _names(job)}
    assert spread & {name for job in tasks[0].jobs for name in _names(job)}  # a slide in two tasks
    assert len(tasks) >= 3 and all(task.keep_windows for task in tasks)
    assert hashed == {"one.tif": 1, "two.tif": 1}
    assert len(tiles) > 20 and set(tiles.values()) == {1}
    assert not work._caches().pixels  # closed with the run
    assert file_digests(tmp_path / "out") == _released_after_each_task(slides, tmp_path)


def _names(job: work.Job) -> set[str]:
    return {job.plans[piece.image].source.path.name for piece in job.spec.pieces}


def _released_after_each_task(slides: Path, tmp_path: Path) -> dict[str, str]:
    """The same run with every reader closed when its task ends (as on a Dask worker)."""
    with pytest.MonkeyPatch.context() as patch:
        plan_tasks = work.plan_tasks
        patch.setattr(
            "patchpack.dataset.extract.plan_tasks",
            lambda jobs, workers, keep_windows: plan_tasks(jobs, workers, keep_windows=False),
        )
        extract(_params(slides, per_image=300), out=tmp_path / "released")
    return file_digests(tmp_path / "released")


def test_a_slide_changed_between_tasks_is_hashed_again(
    slides: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slide kept open is checked before each reuse, by its hash while the file stays the same
    (its stat key: no read), hashed again once it was written, and refused when its bytes differ
    from the catalog's; a file written within ``RACY_NS`` of its hash is hashed every time."""
    from patchpack.dataset.sources import catalog, hashing
    from patchpack.errors import SourceError

    hashes: list[str] = []
    file_sha256 = hashing.file_sha256
    monkeypatch.setattr(
        hashing, "file_sha256", lambda path: hashes.append(path.name) or file_sha256(path)
    )
    _, sources = catalog(slides, max_megapixels=1.0)
    source = next(s for s in sources if s.path.name == "one.tif")
    try:
        first = work._pixels(source, 3, 1.0)
        assert work._pixels(source, 3, 1.0) is first
        assert hashes.count("one.tif") == 3  # just written: racy, so hashed at every check
        monkeypatch.setattr(hashing, "RACY_NS", 0)
        work._pixels(source, 3, 1.0)
        work._pixels(source, 3, 1.0)
        assert hashes.count("one.tif") == 3  # not racy: the stat key stands for the hash
        data = source.path.read_bytes()
        source.path.write_bytes(data)  # the same bytes, written again: hashed again, and accepted
        assert work._pixels(source, 3, 1.0) is first and hashes.count("one.tif") == 4
        # a rewrite within one tick of the file system's clock keeps the stat key: that is what
        # the racy rule is for, so it is back in force for the last write
        monkeypatch.setattr(hashing, "RACY_NS", 2 * 10**9)
        source.path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
        with pytest.raises(SourceError, match="differ from those the catalog hashed"):
            work._pixels(source, 3, 1.0)
    finally:
        work.release_pixels()
