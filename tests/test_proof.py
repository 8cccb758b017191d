"""The proof never lies: the leakage audit at pyramid levels, and no exit 0 on empty splits."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from patchpack.audit.info import info
from patchpack.audit.leakage import _overlap
from patchpack.audit.verify import verify
from patchpack.dataset.extract import extract
from patchpack.dataset.manifest import ShardEntry, fingerprint, load_manifest
from patchpack.dataset.plan import Rect, grid_coords, grid_positions, region_splits
from patchpack.dataset.plan.regions import _hold_roi, block_grid, off_grid_blocks
from patchpack.dataset.readers import Level
from patchpack.dataset.shards import read_shard, write_shard
from patchpack.dataset.sources import SourceImage
from patchpack.dataset.tissue import Roi, RoiMask
from patchpack.errors import OutputError, SourceError
from patchpack.params import SPLITS, ExtractParams, SplitParams, params_from_dict
from support.commands import file_digests, run_patchpack
from support.images import make_folder, small_params, small_raw, write_params
from support.labelled import CLASSES, write_labelled
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
    forged = fingerprint(manifest.class_names, shards, manifest.params.to_dict())
    dataclasses.replace(manifest, shards=tuple(shards), fingerprint=forged).write(dataset)


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


# --- no exit 0 with an empty split or class ------------------------------------------------------


def _holds_roi(block: Rect, roi: Roi, patch_size: int, downsample: float) -> bool:
    return _hold_roi([block], roi, patch_size, downsample)[0]


def _roi(mask: np.ndarray, downsample: float, min_fraction: float) -> Roi:
    return Roi(RoiMask(mask, downsample).png(), downsample, min_fraction)


def _fake(size: tuple[int, int], downsample: float = 1.0) -> SourceImage:
    source = SourceImage("a/x.tif", 0, "a", Path("a/x.tif"), size[1], size[0], "0" * 64)
    if downsample == 1.0:
        return source
    return dataclasses.replace(
        source,
        level=1,
        levels=(Level(size[0] * 2, size[1] * 2, 1.0), Level(size[0], size[1], downsample)),
    )


def test_a_block_whose_only_roi_positions_are_off_the_half_patch_grid_is_shared_out() -> None:
    mask = np.zeros((64, 64), bool)
    mask[12:36, 12:36] = True  # 24x24: a 32x32 patch holds 56% of it only at corners 4..12
    roi = _roi(mask, 1.0, 0.55)
    assert _holds_roi(Rect(0, 64, 0, 64), roi, 32, 1.0)
    assert not _holds_roi(Rect(0, 64, 0, 64), _roi(mask, 1.0, 0.6), 32, 1.0)


@pytest.mark.parametrize(("downsample", "mask_downsample"), [(1.0, 1.0), (2.0, 3.0), (1.0, 7.0)])
def test_block_roi_check_agrees_with_trying_every_position(
    downsample: float, mask_downsample: float
) -> None:
    rng = np.random.default_rng(int(downsample * 10 + mask_downsample))
    size, side = 16, 48
    for trial in range(40):
        cells = int(np.ceil(side * downsample / mask_downsample))
        mask = np.zeros((cells, cells), bool)
        y, x = rng.integers(0, cells, 2)
        mask[y : y + rng.integers(1, 4), x : x + rng.integers(1, 4)] = True
        roi = _roi(mask, mask_downsample, float(rng.choice([0.05, 0.2, 0.5])))
        ys, xs = np.mgrid[0 : side - size + 1, 0 : side - size + 1]
        brute = roi.keep(ys.ravel(), xs.ravel(), size, downsample).any()
        assert _holds_roi(Rect(0, side, 0, side), roi, size, downsample) == brute, trial


@pytest.mark.parametrize(("downsample", "mask_downsample"), [(1.0, 1.0), (2.0, 3.0), (1.0, 7.0)])
def test_block_roi_check_agrees_with_every_position_on_noisy_masks_and_offset_blocks(
    downsample: float, mask_downsample: float
) -> None:
    rng = np.random.default_rng(int(downsample * 100 + mask_downsample))
    size, side = 12, 96
    cells = int(np.ceil(side * downsample / mask_downsample))
    for trial in range(60):
        mask = rng.random((cells, cells)) < rng.choice([0.02, 0.2, 0.6])
        roi = _roi(mask, mask_downsample, float(rng.choice([0.0, 0.25, 0.5, 0.6, 0.9])))
        y0, x0 = (int(v) for v in rng.integers(0, side - size, 2))
        y1, x1 = (int(v) for v in rng.integers((y0 + 1, x0 + 1), side + 1))
        ys, xs = np.mgrid[y0 : max(y0, y1 - size + 1), x0 : max(x0, x1 - size + 1)]
        on_grid = (
            len(grid_positions([Rect(y0, y1, x0, x1)], size, size // 2)) > 0
        )  # format 3's rule
        brute = on_grid and bool(roi.keep(ys.ravel(), xs.ravel(), size, downsample).any())
        assert _holds_roi(Rect(y0, y1, x0, x1), roi, size, downsample) == brute, trial


@pytest.mark.parametrize(
    ("downsample", "mask_downsample"), [(1.0, 2.0), (2.000037, 3.3), (4.0, 1.0)]
)
def test_every_block_of_a_grid_is_judged_as_trying_every_position_would(
    downsample: float, mask_downsample: float
) -> None:
    """All blocks of a block grid at once (the batched half-grid, the no-set-cell shortcut and the
    exact check), against trying every position, with sparse tissue and fractional downsamples."""
    rng = np.random.default_rng(int(downsample * 1000 + mask_downsample))
    size, height, width = 10, 150, 130
    cells = (
        int(np.ceil(height * downsample / mask_downsample)) + 1,
        int(np.ceil(width * downsample / mask_downsample)) + 1,
    )
    blocks = block_grid(height, width, 23)
    mixed = 0
    for trial in range(12):
        mask = rng.random(cells) < 0.02  # specks, and a few blobs of every size
        for _ in range(int(rng.integers(1, 6))):
            y, x = (int(rng.integers(0, c)) for c in cells)
            mask[
                y : y + int(rng.integers(1, cells[0] // 3)),
                x : x + int(rng.integers(1, cells[1] // 3)),
            ] = True
        roi = _roi(mask, mask_downsample, float(rng.choice([0.05, 0.5, 0.75])))
        expected = []
        for b in blocks:
            ys, xs = np.mgrid[b.y0 : b.y1 - size + 1, b.x0 : b.x1 - size + 1]
            expected.append(bool(roi.keep(ys.ravel(), xs.ravel(), size, downsample).any()))
        assert _hold_roi(blocks, roi, size, downsample) == expected, trial
        mixed += 0 < sum(expected) < len(blocks)
    assert mixed >= 4  # grids with blocks of both kinds


def test_a_block_off_the_half_patch_grid_is_not_shared_out_and_zero_fractions_keep_the_rest() -> (
    None
):
    """Format 3 shares out only blocks holding a position on the half-patch grid: a block under 1.5
    patches on a side can miss it, and is refused even full of tissue (bytes decided so); with a
    fraction of 0 every other block is in, wherever the tissue is."""
    mask = np.zeros((40, 40), bool)
    mask[0, 0] = True  # tissue in one corner only
    # the second block's positions (13 and 14 on each axis) miss the half-patch grid (0, 4, 8, 16)
    blocks = [Rect(0, 13, 0, 13), Rect(13, 22, 13, 22), Rect(22, 40, 22, 40)]
    assert _hold_roi(blocks, _roi(mask, 1.0, 0.0), 8, 1.0) == [True, False, True]
    assert _hold_roi(blocks, _roi(mask, 1.0, 0.01), 8, 1.0) == [True, False, False]
    assert _hold_roi(blocks, _roi(np.ones((40, 40), bool), 1.0, 1.0), 8, 1.0) == [True, False, True]


def test_grid_sampling_shares_out_only_blocks_holding_a_grid_position() -> None:
    """Blocks whose ROI positions all lie between grid positions are not shared out: a split that
    received only such blocks would get no patch."""
    mask = np.zeros((256, 256), bool)
    for by in range(0, 256, 64):
        for bx in range(0, 256, 64):
            if (by + bx) % 128 == 0:  # half the blocks: ROI under the grid position (y0, x0)
                mask[by : by + 32, bx : bx + 32] = True
            else:  # the others: ROI only under the half-grid position (y0 + 16, x0 + 16)
                mask[by + 16 : by + 48, bx + 16 : bx + 48] = True
    roi = _roi(mask, 1.0, 1.0)
    extract = ExtractParams(
        patch_size=32, per_image=None, per_class=None, min_std=0.0, sampling="grid"
    )
    split = SplitParams(mode="region", fractions=(0.5, 0.25, 0.25), block_size=64)
    blocks = region_splits(
        _fake((256, 256)), seed=1, split=split, roi=roi, patch_size=32, extract=extract
    )
    shared = [block for name in SPLITS for block in blocks[name]]
    assert len(shared) == 8
    for block in shared:
        assert len(grid_coords((block,), extract, 1.0, roi)[0]) == 1


def test_image_mode_with_too_few_images_per_class_is_refused(images: Path, tmp_path: Path) -> None:
    params = small_params(images, split={"mode": "image"})  # 2 images per class, 3 splits
    with pytest.raises(SourceError, match=r"img_0\.png, .*img_1\.png: the test split gets no patch of class 'class_0'; each split needs an image of every class: add images to class_0 or use split.mode: region, or set split.fractions.test to 0"):  # fmt: skip
        extract(params, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    train_only = {"mode": "image", "fractions": {"train": 1.0, "val": 0.0, "test": 0.0}}
    manifest = extract(small_params(images, split=train_only), out=tmp_path / "out")
    assert manifest.count("train") > 0 and manifest.count("val") == 0


def test_region_mode_image_with_too_few_blocks_is_refused(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "images", classes=1, per_class=1, size=(96, 128))
    # blocks of 64: one row of two blocks, so one split goes without
    params = small_params(folder, split={"block_size": 64}, extract={"patch_size": 16})
    with pytest.raises(SourceError, match=r"img_0\.png: the (val|test) split gets no patch of class 'class_0'; its 2 blocks with a usable position all went to other splits: lower split.block_size \(64\)"):  # fmt: skip
        extract(params, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_exits_2_on_an_empty_split(images: Path, tmp_path: Path) -> None:
    write_params(tmp_path / "params.yaml", images, split={"mode": "image"})
    result = run_patchpack("extract", "--out", "out", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "gets no patch" in result.stderr
    assert not (tmp_path / "out").exists()


# --- a source rewritten during a run --------------------------------------------------------------


def _twin_tiffs(folder: Path, tiled: bool) -> tuple[Path, bytes]:
    """An uncompressed TIFF at ``folder/a/x.tif`` and the bytes of another image of the same size."""
    rng = np.random.default_rng(5)
    first, second = (rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(2))
    path = folder / "a" / "x.tif"
    path.parent.mkdir(parents=True)
    options = {"tile": (64, 64)} if tiled else {}
    tifffile.imwrite(folder / "other.tif", second, photometric="rgb", **options)
    tifffile.imwrite(path, first, photometric="rgb", **options)
    other = (folder / "other.tif").read_bytes()
    (folder / "other.tif").unlink()
    assert len(other) == path.stat().st_size and other != path.read_bytes()
    return path, other


def _rewrite_keeping_size_and_mtime(path: Path, data: bytes) -> None:
    status = path.stat()
    path.write_bytes(data)
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert path.stat().st_mtime_ns == status.st_mtime_ns


@pytest.mark.parametrize("tiled", [False, True])
def test_a_source_rewritten_with_the_same_size_and_mtime_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiled: bool
) -> None:
    import patchpack.dataset.work as work

    path, other = _twin_tiffs(tmp_path / "images", tiled)
    # region mode on one image needs blocks for every split: 128 / 32 = 16 blocks
    raw = small_raw(tmp_path / "images", split={"block_size": 32})
    raw["source"]["channels"] = 3
    params = params_from_dict(raw)
    original = work.load_pixels if not tiled else work.reader_for
    rewritten: list[Path] = []

    def rewrite_then_open(source, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not rewritten:  # after the catalog hashed it and the worker checked it
            _rewrite_keeping_size_and_mtime(path, other)
            rewritten.append(path)
        return original(source, *args, **kwargs)

    monkeypatch.setattr(work, "reader_for" if tiled else "load_pixels", rewrite_then_open)
    with pytest.raises(
        SourceError, match=r"x\.tif: its bytes differ from those the catalog hashed"
    ):
        extract(params, out=tmp_path / "out")
    assert rewritten and not (tmp_path / "out").exists()


def test_verify_fails_and_info_warns_on_an_empty_split(images: Path, tmp_path: Path) -> None:
    """A dataset whose val split is empty although its fraction is not (an older extract, or an
    edited manifest) is not a usable dataset."""
    train_only = {"mode": "image", "fractions": {"train": 1.0, "val": 0.0, "test": 0.0}}
    extract(small_params(images, split=train_only), out=tmp_path / "out")
    assert verify(tmp_path / "out").ok
    assert "EMPTY" not in info(tmp_path / "out")
    manifest = load_manifest(tmp_path / "out")
    split = dataclasses.replace(manifest.params.split, fractions=(0.8, 0.2, 0.0))
    params = dataclasses.replace(manifest.params, split=split)
    refingerprinted = fingerprint(manifest.class_names, manifest.shards, params.to_dict())
    dataclasses.replace(manifest, params=params, fingerprint=refingerprinted).write(
        tmp_path / "out"
    )
    problems = verify(tmp_path / "out").problems
    assert problems == [
        "manifest: the val split holds no patch (its fraction is above 0): not a usable dataset; "
        "extract it again with a version that refuses this, and follow its advice"
    ]
    assert "EMPTY        the val split holds no patch; `patchpack verify` fails on it" in info(
        tmp_path / "out"
    )


# --- what a killed run left behind is never trusted blindly ------------------------------------


def _killed_run(images: Path, out: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Extract until the third shard fails, as a killed run would stop; return its staging folder."""
    import patchpack.dataset.work as work

    original, calls = work.build_shard, []

    def failing(job):  # type: ignore[no-untyped-def]
        calls.append(job)
        if len(calls) == 3:
            raise SourceError("simulated kill")
        return original(job)

    monkeypatch.setattr(work, "build_shard", failing)
    with pytest.raises(SourceError, match="simulated kill"):
        extract(small_params(images), out=out)
    monkeypatch.setattr(work, "build_shard", original)
    (staging,) = out.parent.glob(f".{out.name}.partial-*")
    assert len(list(staging.glob("*/shard-*.h5"))) == 2
    return staging


def _reference(images: Path, tmp_path: Path) -> dict[str, str]:
    extract(small_params(images), out=tmp_path / "reference")
    return file_digests(tmp_path / "reference")


def test_a_shard_altered_in_staging_is_rebuilt_not_adopted(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    want = _reference(images, tmp_path)
    staging = _killed_run(images, tmp_path / "out", monkeypatch)
    staged = sorted(staging.glob("*/shard-*.h5"))[0]
    data = read_shard(staged)
    brighter = dataclasses.replace(data, images=np.ascontiguousarray(255 - data.images))
    write_shard(staged, brighter, chunk_patches=16, compression="zstd", level=3)  # same count
    extract(small_params(images), out=tmp_path / "out")
    assert file_digests(tmp_path / "out") == want
    assert verify(tmp_path / "out").ok


def test_a_link_planted_in_staging_is_never_adopted(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    want = _reference(images, tmp_path)
    staging = _killed_run(images, tmp_path / "out", monkeypatch)
    staged = sorted(staging.glob("*/shard-*.h5"))
    outside = tmp_path / "planted.h5"
    outside.write_bytes(staged[0].read_bytes())  # a genuine shard, but not one this run wrote
    staged[0].unlink()
    staged[0].symlink_to(outside)
    stamp = staged[1].with_name(f".{staged[1].name}.done")
    planted = tmp_path / "planted.done"
    planted.write_bytes(stamp.read_bytes())
    stamp.unlink()
    stamp.symlink_to(planted)
    extract(small_params(images), out=tmp_path / "out")
    assert file_digests(tmp_path / "out") == want
    assert not any(p.is_symlink() for p in (tmp_path / "out").rglob("*"))
    assert outside.read_bytes() and planted.read_bytes()  # what the links pointed to is untouched


def test_a_staging_folder_planted_as_a_link_is_not_followed(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    want = _reference(images, tmp_path)
    staging = _killed_run(images, tmp_path / "out", monkeypatch)
    elsewhere = tmp_path / "elsewhere"
    staging.rename(elsewhere)
    staging.symlink_to(elsewhere)
    extract(small_params(images), out=tmp_path / "out")
    assert file_digests(tmp_path / "out") == want
    assert not (tmp_path / "out").is_symlink() and not staging.exists()
    assert len(list(elsewhere.glob("*/shard-*.h5"))) == 2  # what the link pointed to is untouched


def test_a_planted_lock_link_is_refused_and_its_target_untouched(
    images: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "notes.txt"
    victim.write_text("my notes\n")
    (tmp_path / ".out.lock").symlink_to(victim)
    with pytest.raises(OutputError, match=r"\.out\.lock: the output lock is a symbolic link"):
        extract(small_params(images), out=tmp_path / "out")
    assert victim.read_text() == "my notes\n"
    assert not (tmp_path / "out").exists()


def test_label_files_inside_the_output_folder_are_refused(tmp_path: Path) -> None:
    images, labels = write_labelled(tmp_path, kinds=("mask",))
    out = tmp_path / "out"
    inside = out / "roi"
    inside.mkdir(parents=True)
    shutil.copytree(labels, inside, dirs_exist_ok=True)
    before = file_digests(inside)
    raw = small_raw(images, extract={"patch_size": 16, "per_image": 50, "min_std": 0.0})
    raw["labels"] = {"from": "mask", "dir": str(inside), "classes": CLASSES}
    with pytest.raises(OutputError, match=r"labels.dir .*roi is inside --out .*out, which extraction replaces"):  # fmt: skip
        extract(params_from_dict(raw), out=out)
    assert file_digests(inside) == before


# --- one line, not a traceback ------------------------------------------------------------------


def test_verify_while_an_extract_swaps_right_after_a_shard_was_hashed(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import patchpack.audit.verify as verify_module
    from patchpack.engine.output import DatasetChanged, swap_in

    extract(small_params(images), out=tmp_path / "out")
    extract(small_params(images, extract={"per_image": 40}), out=tmp_path / "other")
    for shard in (tmp_path / "other").glob("*/shard-*.h5"):
        shard.unlink()  # every later read of the old paths finds nothing
    original, hashed = verify_module.file_sha256, []

    def hash_then_swap(path: Path) -> str:
        digest = original(path)
        if not hashed:
            hashed.append(path)
            swap_in(tmp_path / "other", tmp_path / "out")
        return digest

    monkeypatch.setattr(verify_module, "file_sha256", hash_then_swap)
    with pytest.raises(
        DatasetChanged, match=r"changed while it was being read.*run the command again"
    ):
        verify(tmp_path / "out")


def test_verify_rebuild_of_a_read_only_dataset_folder(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    from patchpack.audit.rebuild import verify_rebuild

    holder = tmp_path / "shared"
    extract(small_params(images), out=holder / "data")
    original = tempfile.mkdtemp

    def read_only(*args, dir=None, **kwargs):  # type: ignore[no-untyped-def]
        if dir is not None and Path(dir) == holder:  # as mkdtemp fails in a folder mode 0555
            raise PermissionError(13, "Permission denied", str(holder))
        return original(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    report = verify_rebuild(holder / "data", small_params(images))
    assert report.ok, report.render()
    assert "rebuild reproduces fingerprint" in report.render()
    assert sorted(p.name for p in holder.iterdir()) == [".data.lock", "data"]  # no scratch left


def test_an_image_claiming_a_million_pixels_a_side_is_refused_before_any_allocation() -> None:
    from patchpack.dataset.plan import plan_images

    huge = _fake((1_000_000, 1_000_000))
    extract = ExtractParams(patch_size=32, per_image=10, per_class=None, min_std=0.0)
    split = SplitParams(mode="region", fractions=(0.7, 0.15, 0.15), block_size=64)
    with pytest.raises(SourceError, match=r"x\.tif: 1000000x1000000 pixels at level 0 make 244,140,625 blocks of split.block_size=64 \(at most 1,000,000\); raise split.block_size"):  # fmt: skip
        plan_images([huge], seed=1, extract=extract, split=split)
    coarse = dataclasses.replace(split, block_size=4096)
    (plan,) = plan_images([huge], seed=1, extract=extract, split=coarse)
    assert sum(draw.count for draw in plan.draws) == 10


def _tissue_slide(tmp_path: Path, *, side: int, per_image: int, block_size: int) -> dict:  # type: ignore[type-arg]
    """Params for random 32-pixel tissue patches from one square demo-like slide of ``side``."""
    write_pyramid(tmp_path / "slides" / "a" / "one.tif", tissue_image(side, side))
    return {
        "base": {"seed": 3},
        "source": {"dir": str(tmp_path / "slides"), "channels": 3},
        "extract": {"patch_size": 32, "per_image": per_image, "min_std": 0.0, "roi": "tissue"},
        "split": {"mode": "region", "block_size": block_size},
    }


def test_an_empty_split_from_blocks_off_the_half_patch_grid_says_to_raise_block_size(
    tmp_path: Path,
) -> None:
    """Blocks under 1.5 patches with an ROI can miss the half-patch grid, and format 3 refuses
    those: the empty split this leaves names that cause and the block size that avoids it (the
    usual advice, a smaller block, would refuse more), which then extracts."""
    raw = _tissue_slide(tmp_path, side=256, per_image=10, block_size=36)
    with pytest.raises(SourceError, match=r"one\.tif: the \w+ split gets no patch of class 'a'; with an ROI a block is shared out only if it holds a position on the half-patch grid, which blocks of split.block_size 36 under 1.5 x extract.patch_size \(32\) here miss: raise split.block_size to at least 48"):  # fmt: skip
        extract(params_from_dict(raw), out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    raw["split"]["block_size"] = 48
    manifest = extract(params_from_dict(raw), out=tmp_path / "out")
    assert all(manifest.count(name) > 0 for name in SPLITS)
    assert off_grid_blocks(256, 256, 36, 32) > 0 == off_grid_blocks(256, 256, 40, 32)


def test_an_empty_split_with_every_block_on_the_grid_keeps_the_usual_advice(tmp_path: Path) -> None:
    """Blocks of 40 for patches of 32 all hold a half-grid position: a split left empty there
    (too few blocks) is not told to raise the block size."""
    raw = _tissue_slide(tmp_path, side=96, per_image=4, block_size=40)
    with pytest.raises(SourceError, match=r"went to other splits: lower split.block_size \(40\)"):
        extract(params_from_dict(raw), out=tmp_path / "out")
