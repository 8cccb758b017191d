"""Large images: windowed readers, pyramid levels, tissue detection, grid sampling, bad slides."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from PIL import Image
from skimage.filters import threshold_otsu

from patchpack.audit.verify import verify
from patchpack.dataset import binary, tissue
from patchpack.dataset.extract import extract
from patchpack.dataset.plan import Rect, grid_positions
from patchpack.dataset.readers import OpenSlideReader, TiffReader, choose_backend, convert
from patchpack.dataset.shards import read_shard
from patchpack.errors import SourceError
from patchpack.params import params_from_dict
from support.commands import file_digests, run_patchpack
from support.images import copy_reversed
from support.slides import tissue_image, write_pyramid

LIMIT = 100_000_000


@pytest.fixture
def slide_pixels() -> np.ndarray:
    return tissue_image(512, 640)


@pytest.fixture
def slides(tmp_path: Path, slide_pixels: np.ndarray) -> Path:
    """Two classes, one zlib-tiled pyramid each (levels 512x640, 256x320, 128x160; 0.5 µm/px)."""
    write_pyramid(tmp_path / "slides" / "a" / "one.tif", slide_pixels)
    write_pyramid(tmp_path / "slides" / "b" / "two.tif", tissue_image(512, 640, seed=1))
    return tmp_path / "slides"


def slide_params(folder: Path, **sections: dict[str, object]):  # type: ignore[no-untyped-def]
    raw: dict[str, dict[str, object]] = {
        "base": {"seed": 3},
        "source": {"dir": str(folder), "channels": 3},
        "extract": {"patch_size": 32, "per_image": 40, "min_std": 0.0},
        "split": {"mode": "region", "block_size": 64},
        "shards": {"target_patches": 32, "chunk_patches": 16},
    }
    for name, update in sections.items():
        raw[name] = {**raw.get(name, {}), **update}
    return raw


def params(folder: Path, **sections: dict[str, object]):  # type: ignore[no-untyped-def]
    return params_from_dict(slide_params(folder, **sections))


# --- readers ----------------------------------------------------------------------------------


def test_a_window_equals_the_same_window_of_the_fully_decoded_image(tmp_path: Path) -> None:
    pixels = tissue_image(256, 320)
    path = write_pyramid(tmp_path / "flat.tif", pixels, levels=1)
    with Image.open(path) as image:  # Pillow decodes the tiled TIFF whole
        whole = {3: np.asarray(image.convert("RGB")), 1: np.asarray(image.convert("L"))[:, :, None]}
    for channels in (1, 3):
        with TiffReader(path, channels, LIMIT) as reader:
            for y, x, h, w in [(0, 0, 256, 320), (37, 101, 64, 64), (200, 250, 56, 70)]:
                np.testing.assert_array_equal(
                    reader.read(0, y, x, h, w), whole[channels][y : y + h, x : x + w]
                )


def test_levels_sizes_and_resolution(tmp_path: Path, slide_pixels: np.ndarray) -> None:
    path = write_pyramid(tmp_path / "p.tif", slide_pixels, mpp=0.5)
    with TiffReader(path, 3, LIMIT) as reader:
        assert [(lv.height, lv.width, lv.downsample) for lv in reader.levels] == [
            (512, 640, 1.0),
            (256, 320, 2.0),
            (128, 160, 4.0),
        ]
        assert reader.mpp == pytest.approx(0.5)
        np.testing.assert_array_equal(
            reader.read(1, 10, 20, 32, 48), slide_pixels[::2, ::2][10:42, 20:68]
        )


def test_openslide_reads_the_pixels_tifffile_reads(
    tmp_path: Path, slide_pixels: np.ndarray
) -> None:
    # lossless tiles, so the two decoders must agree; levels as pages, the layout OpenSlide reads
    path = write_pyramid(tmp_path / "p.tif", slide_pixels, subifds=False)
    with TiffReader(path, 3, LIMIT) as tiff, OpenSlideReader(path, 3, LIMIT) as slide:
        assert [lv.width for lv in slide.levels] == [lv.width for lv in tiff.levels]
        for level, y, x in [(0, 100, 200), (1, 30, 40), (2, 5, 7)]:
            np.testing.assert_array_equal(
                slide.read(level, y, x, 40, 48), tiff.read(level, y, x, 40, 48)
            )


def test_the_backend_is_chosen_by_the_file(tmp_path: Path) -> None:
    Image.fromarray(tissue_image(64, 64)).save(tmp_path / "a.png")
    Image.fromarray(tissue_image(64, 64)).save(tmp_path / "b.tif")  # untiled: Pillow, as always
    write_pyramid(tmp_path / "c.tif", tissue_image(128, 128), levels=2)
    (tmp_path / "d.ndpi").write_bytes(b"")
    assert [choose_backend(tmp_path / n) for n in ("a.png", "b.tif", "c.tif", "d.ndpi")] == [
        "pillow",
        "pillow",
        "tifffile",
        "openslide",
    ]
    (tmp_path / "e.txt").write_text("x")
    with pytest.raises(SourceError, match=r"e.txt: not an image"):
        choose_backend(tmp_path / "e.txt")


def test_conversion_of_16_bit_and_alpha() -> None:
    wide = np.full((2, 2), 0x1234, np.uint16)
    assert convert(wide, 1, "x")[0, 0, 0] == 0x12
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 7
    assert convert(rgba, 3, "x")[0, 0].tolist() == [200, 0, 0]
    with pytest.raises(SourceError, match="floating-point"):
        convert(np.zeros((2, 2), np.float32), 1, "x")


# --- levels in the dataset --------------------------------------------------------------------


def test_patches_cut_at_a_level_are_stored_with_level_0_coordinates(
    slides: Path, tmp_path: Path, slide_pixels: np.ndarray
) -> None:
    manifest = extract(params(slides, source={"level": 1}), out=tmp_path / "out")
    record = next(s for s in manifest.sources if s.id == "a/one.tif")
    assert (record.backend, record.level, record.downsample, record.mpp) == (
        "tifffile",
        1,
        2.0,
        0.5,
    )
    level1 = slide_pixels[::2, ::2]
    checked = 0
    for entry in manifest.shards:
        data = read_shard(tmp_path / "out" / entry.path)
        assert data.levels.tolist() == [1] * len(data)
        for row in range(len(data)):
            if data.source_of(row) != "a/one.tif":
                continue
            y, x = (int(v) for v in data.coords[row])
            assert y % 2 == 0 and x % 2 == 0  # level-0 corners of level-1 pixels
            np.testing.assert_array_equal(
                data.images[row], level1[y // 2 : y // 2 + 32, x // 2 : x // 2 + 32]
            )
            checked += 1
    assert checked == 40
    assert verify(tmp_path / "out").ok


def test_mpp_chooses_the_closest_level(slides: Path, tmp_path: Path) -> None:
    # level 2 is 128x160, 4 blocks: too few to give every split one, so all go to train
    train_only = {"fractions": {"train": 1.0, "val": 0.0, "test": 0.0}}
    chosen = params(slides, source={"mpp": 1.9}, split=train_only)
    manifest = extract(chosen, out=tmp_path / "out")
    assert {s.level for s in manifest.sources} == {2}  # levels are 0.5, 1.0 and 2.0 µm/px


def test_mpp_needs_resolution_metadata(tmp_path: Path) -> None:
    write_pyramid(tmp_path / "s" / "a" / "x.tif", tissue_image(256, 256), mpp=None)
    with pytest.raises(
        SourceError, match=r"x.tif: the file records no resolution .* use source.level"
    ):
        extract(params(tmp_path / "s", source={"mpp": 1.0}), out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_level_that_does_not_exist(slides: Path, tmp_path: Path) -> None:
    with pytest.raises(
        SourceError, match=r"one.tif: source.level 5 does not exist \(it has levels 0 to 2\)"
    ):
        extract(params(slides, source={"level": 5}), out=tmp_path / "out")


# --- tissue -----------------------------------------------------------------------------------


def test_tissue_patches_lie_in_tissue_and_the_mask_is_verified(
    slides: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    manifest = extract(params(slides, extract={"roi": "tissue", "min_roi_fraction": 0.75}), out=out)
    for entry in manifest.shards:
        data = read_shard(out / entry.path)
        for y, x in data.coords.tolist():
            inside = max(0, min(y + 32, 384) - max(y, 128)) * max(0, min(x + 32, 480) - max(x, 160))
            assert inside / 32**2 >= 0.6, (y, x)  # the tissue block is rows 128-384, cols 160-480
    records = [s for s in manifest.sources if s.roi]
    assert len(records) == 2 and all((out / s.roi).is_file() for s in records)  # type: ignore[operator]
    mask = np.asarray(Image.open(out / records[0].roi).convert("L")) > 0  # type: ignore[operator]
    assert 0.15 < mask.mean() < 0.35  # a quarter of the slide is tissue
    assert verify(out).ok
    damaged = bytearray((out / records[0].roi).read_bytes())  # type: ignore[operator]
    damaged[-20] ^= 0xFF
    (out / records[0].roi).write_bytes(bytes(damaged))  # type: ignore[operator]
    assert any("tissue mask of a/one.tif differs" in p for p in verify(out).problems)


def test_the_tissue_mask_is_otsu_on_the_larger_of_saturation_and_darkness() -> None:
    """Against the definition, in plain int32 arithmetic, on every (largest, smallest channel) pair
    with the middle channel anywhere between them, channels in a shuffled order."""
    from scipy import ndimage

    high, low = (a.ravel() for a in np.mgrid[0:256, 0:256])
    high, low = high[low <= high], low[low <= high]
    rng = np.random.default_rng(0)
    middle = low + (rng.random(len(low)) * (high - low + 1)).astype(np.int64)
    order = rng.permutation(len(high))
    side = 182  # 182**2 >= 32,896 pairs; the rest is white background
    flat = np.full((side * side, 3), 255, np.int64)
    flat[: len(high)] = np.stack([low, middle, high], axis=1)[order][:, rng.permutation(3)]
    image = flat.reshape(side, side, 3).astype(np.uint8)
    top, bottom = flat.max(axis=1), flat.min(axis=1)
    saturation = np.where(top > 0, (top - bottom) * 255 // np.maximum(top, 1), 0)
    score = np.maximum(saturation, 255 - top).reshape(side, side)
    cross = ndimage.generate_binary_structure(2, 1)
    opened = ndimage.binary_opening(score > threshold_otsu(score.astype(np.uint8)), structure=cross)
    pieces, count = ndimage.label(opened, structure=cross)
    keep = np.bincount(pieces.ravel(), minlength=count + 1) >= tissue.MIN_PIECE
    keep[0] = False
    assert np.array_equal(tissue.tissue_mask(image, "x"), keep[pieces])


def test_the_mask_operations_equal_scipy_and_scikit_image_on_random_images() -> None:
    """Otsu's threshold, the opening and the removal of small pieces (binary.py) against
    scikit-image and SciPy: noise of every density, narrow value ranges, two-level images, shapes
    from one pixel to wide, and a large mask with many pieces."""
    from scipy import ndimage

    cross = ndimage.generate_binary_structure(2, 1)
    rng = np.random.default_rng(7)
    for trial in range(600):
        height, width = (int(v) for v in rng.integers(1, 48, 2))
        low = int(rng.integers(0, 250))
        image = rng.integers(low, 256, (height, width)).astype(np.uint8)
        if trial % 3 == 0:
            image = (rng.random((height, width)) < 0.5).astype(np.uint8) * np.uint8(low + 1)
        if image.min() != image.max():
            assert binary.otsu_threshold(image) == threshold_otsu(image), trial
        mask = rng.random((height, width)) < rng.choice([0.1, 0.5, 0.8, 0.95])
        opened = ndimage.binary_opening(mask, structure=cross)
        assert np.array_equal(binary.opened(mask), opened), trial
        least = int(rng.choice([1, 3, 16, 60]))
        pieces, count = ndimage.label(mask, structure=cross)
        keep = np.bincount(pieces.ravel(), minlength=count + 1) >= least
        keep[0] = False
        assert np.array_equal(binary.without_small_pieces(mask, least), keep[pieces]), trial
    # a histogram (1.4 million pixels, 33 values) where counts held as float64, not scikit-image's
    # float32, would give another threshold
    counts = [34187, 25359, 45612, 92129, 95622, 42687, 20059, 3097, 26026, 30329, 776, 9653, 60430]
    counts += [83417, 116573, 62657, 1165, 1, 62736, 711, 33686, 21074, 104823, 69328, 20624]
    counts += [68692, 935, 73, 8199, 1572, 128585, 29846, 114802]
    image = np.repeat(np.arange(len(counts), dtype=np.uint8), counts)[None, :]
    assert binary.otsu_threshold(image) == threshold_otsu(image)
    mask = rng.random((700, 900)) < 0.55  # about 200,000 runs in many pieces of every size
    pieces, count = ndimage.label(mask, structure=cross)
    keep = np.bincount(pieces.ravel(), minlength=count + 1) >= tissue.MIN_PIECE
    keep[0] = False
    assert np.array_equal(binary.without_small_pieces(mask, tissue.MIN_PIECE), keep[pieces])


def test_a_slide_without_tissue_is_one_line(tmp_path: Path) -> None:
    write_pyramid(tmp_path / "s" / "a" / "blank.tif", np.full((256, 256, 3), 250, np.uint8))
    with pytest.raises(SourceError, match=r"blank.tif: the image is uniform, so no tissue"):
        extract(params(tmp_path / "s", extract={"roi": "tissue"}), out=tmp_path / "out")


# --- grid sampling ----------------------------------------------------------------------------


def test_the_grid_drops_a_last_row_or_column_that_would_overhang() -> None:
    corners = grid_positions([Rect(0, 100, 0, 70)], patch_size=32, stride=32)
    assert sorted({y for y, _ in corners.tolist()}) == [0, 32, 64]  # 96 + 32 > 100
    assert sorted({x for _, x in corners.tolist()}) == [0, 32]  # 64 + 32 > 70
    inside_block = grid_positions([Rect(40, 100, 0, 64)], patch_size=32, stride=16)
    assert sorted({y for y, _ in inside_block.tolist()}) == [
        48,
        64,
    ]  # anchored at 0, inside the block


def test_grid_sampling_in_region_mode_keeps_the_audit(slides: Path, tmp_path: Path) -> None:
    manifest = extract(
        params(
            slides,
            extract={"per_image": None, "sampling": "grid", "stride": 16},
            split={"mode": "region", "block_size": 128},
        ),
        out=tmp_path / "out",
    )
    # every 16th corner of a 512x640 image whose 32-pixel patch fits inside one 128-pixel block:
    # per block 7 x 7 positions, 4 x 5 blocks, two images
    assert sum(e.patches for e in manifest.shards) == 2 * 20 * 49
    assert verify(tmp_path / "out").ok


def test_grid_refuses_a_count(slides: Path) -> None:
    with pytest.raises(Exception, match=r"extract.per_image must be null with sampling: grid"):
        params(slides, extract={"sampling": "grid", "per_image": 10})


# --- determinism with tiled sources -----------------------------------------------------------


def test_tiled_sources_give_identical_bytes_at_any_worker_count(
    slides: Path, tmp_path: Path
) -> None:
    raw = slide_params(slides, source={"level": 1}, extract={"roi": "tissue", "min_std": 1.0})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    reversed_copy = copy_reversed(slides, tmp_path / "reversed")
    runs = [
        ("extract", "--out", "a"),
        ("extract", "--out", "b", "--workers", "3"),
        ("extract", "--out", "c", "--source", str(reversed_copy)),
    ]
    for args in runs:
        done = run_patchpack(*args, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    reference = file_digests(tmp_path / "a")
    assert len(reference) >= 6
    assert file_digests(tmp_path / "b") == reference == file_digests(tmp_path / "c")


# --- bad slides -------------------------------------------------------------------------------


def _write_params(tmp_path: Path, folder: Path, **sections: dict[str, object]) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(slide_params(folder, **sections)))


def _one_line(tmp_path: Path) -> str:
    done = run_patchpack("extract", "--out", "out", cwd=tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert not (tmp_path / "out").exists()
    return lines[0]


def test_a_truncated_tile_is_one_line(slides: Path, tmp_path: Path) -> None:
    path = slides / "a" / "one.tif"
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        offset = page.dataoffsets[len(page.dataoffsets) // 2]
    data = bytearray(path.read_bytes())
    data[offset : offset + 64] = b"\xff" * 64  # garbage in one zlib tile
    path.write_bytes(bytes(data))
    _write_params(tmp_path, slides, extract={"per_image": 200})
    line = _one_line(tmp_path)
    assert "one.tif: level 0: cannot decode the tiles of the window" in line


def test_an_unsupported_codec_is_one_line(tmp_path: Path) -> None:
    path = write_pyramid(tmp_path / "s" / "a" / "x.tif", tissue_image(256, 256), levels=1)
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages.first.tags["Compression"]
        where, size = tag.valueoffset, 2
    data = bytearray(path.read_bytes())
    data[where : where + size] = (34925).to_bytes(2, "little")  # LZMA: tifffile decodes it only
    path.write_bytes(bytes(data))  # with a codec that is not this number's
    _write_params(tmp_path, tmp_path / "s")
    assert "x.tif" in _one_line(tmp_path)


def test_a_window_over_the_decode_guard_is_one_line(slides: Path, tmp_path: Path) -> None:
    _write_params(tmp_path, slides, source={"max_megapixels": 0.0005}, extract={"patch_size": 32})
    line = _one_line(tmp_path)
    assert "above source.max_megapixels=0.0005" in line


def test_the_demo_slide_command_writes_a_pyramid(tmp_path: Path) -> None:
    done = run_patchpack("sources", "--slide", "--side", "1536", "--out", "slide", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with TiffReader(tmp_path / "slide" / "demo" / "slide.tif", 3, LIMIT) as reader:
        assert reader.levels[0].width == 1536 and len(reader.levels) == 5
        assert reader.mpp == pytest.approx(0.25)
        thumb = reader.read(4, 0, 0, reader.levels[4].height, reader.levels[4].width)
    assert (thumb >= 240).all(axis=2).mean() > 0.3  # white background to reject
    shutil.rmtree(tmp_path / "slide")


def test_preview_draws_a_map_of_mask_and_splits(slides: Path, tmp_path: Path) -> None:
    _write_params(tmp_path, slides, extract={"roi": "tissue"})
    assert run_patchpack("extract", "--out", "out", cwd=tmp_path).returncode == 0
    done = run_patchpack("preview", "out", "--out", "sheet.png", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "wrote sheet-map-0.png (map of a/one.tif)" in done.stdout
    with Image.open(tmp_path / "sheet-map-0.png") as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape[:2] == (512, 640)  # the whole slide, at most 1024 pixels on a side
    for colour in ((31, 119, 180), (20, 20, 20)):  # train patches, the mask's outline
        assert (pixels == colour).all(axis=2).any(), colour
    shutil.rmtree(slides)
    done = run_patchpack("preview", "out", "--out", "sheet.png", cwd=tmp_path)
    assert done.returncode == 0 and "map of a/one.tif skipped: " in done.stdout
