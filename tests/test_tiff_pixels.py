"""The tifffile backend's pixels: byte-identical to zarr's for every codec, and to Pillow's rule.

A tiled TIFF goes to the tifffile backend and a small TIFF in strips to Pillow (``choose_backend``);
the same image stored either way must give the same pixels, whatever its photometric, since the
README documents one conversion rule, not one per backend.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from patchpack.dataset.readers import TiffReader, convert
from patchpack.dataset.sources import catalog, reader_for
from patchpack.errors import SourceError
from support.slides import tissue_image, write_pyramid
from support.tiffs import random_image, write_strips, write_tiled

LIMIT = 100_000_000

# (codec, samples, dtype, tile): every codec the demo slide and users' slides use, gray and RGB
CODECS = [
    ("jpeg", 3, np.uint8, 32),
    ("jpeg", 1, np.uint8, 16),
    ("jpeg2000", 3, np.uint8, 32),
    ("webp", 3, np.uint8, 32),
    ("png", 1, np.uint8, 16),
    ("zlib", 3, np.uint8, 48),
    ("zlib", 1, np.uint16, 16),
    ("lzw", 1, np.uint8, 32),
    ("packbits", 3, np.uint8, 16),
    ("zstd", 3, np.uint8, 64),
    (None, 3, np.uint8, 16),
    (None, 2, np.uint8, 16),  # gray + alpha
]


def _random_windows(
    rng: np.random.Generator, height: int, width: int, count: int
) -> list[tuple[int, int, int, int]]:
    windows = []
    for _ in range(count):
        h = int(rng.integers(1, min(height, 90) + 1))
        w = int(rng.integers(1, min(width, 90) + 1))
        windows.append(
            (int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w)
        )
    return windows


def _assert_same_as_zarr(path: Path, windows_per_level: int, seed: int) -> int:
    """Compare random windows of every level, both channel counts, with zarr's; the count compared."""
    rng = np.random.default_rng(seed)
    compared = 0
    for channels in (1, 3):
        with TiffReader(path, channels, LIMIT) as reader, tifffile.TiffFile(path) as tif:
            for level, size in enumerate(reader.levels):
                page = tif.series[0].levels[level].keyframe
                stored = zarr.open(page.aszarr(), mode="r")  # the reference: zarr's own store
                for y, x, h, w in _random_windows(rng, size.height, size.width, windows_per_level):
                    expected = convert(np.asarray(stored[y : y + h, x : x + w]), channels, "zarr")
                    np.testing.assert_array_equal(
                        reader.read(level, y, x, h, w),
                        expected,
                        err_msg=f"{path} {level, y, x, h, w}",
                    )
                    compared += 1
    return compared


@pytest.mark.parametrize(("codec", "samples", "dtype", "tile"), CODECS)
def test_windows_equal_zarrs_for_every_codec(
    tmp_path: Path, codec: str | None, samples: int, dtype: type, tile: int
) -> None:
    pixels = random_image(100, 131, samples, seed=samples)  # edge tiles on both sides
    if dtype == np.uint16:
        pixels = pixels.astype(np.uint16) * 257 + 3
    options: dict[str, object] = {"compression": codec}
    if samples == 3:
        options["photometric"] = "rgb"
    elif samples == 2:
        options.update(photometric="minisblack", extrasamples=[2])
    path = write_tiled(tmp_path / "x.tif", pixels, tile=tile, **options)
    assert _assert_same_as_zarr(path, 120, seed=tile) == 240


def test_windows_equal_zarrs_across_levels_strips_and_a_small_cache(tmp_path: Path) -> None:
    pyramid = write_pyramid(tmp_path / "p.tif", tissue_image(300, 420), tile=32, compression="jpeg")
    gray = write_pyramid(tmp_path / "g.tif", tissue_image(200, 260)[:, :, 0], tile=16)
    strips = tmp_path / "s.tif"  # BigTIFF in strips: the tifffile backend, chunks are strips
    tifffile.imwrite(
        strips, random_image(150, 90, 3), photometric="rgb", rowsperstrip=7, bigtiff=True
    )
    compared = sum(
        _assert_same_as_zarr(path, 300, seed) for seed, path in enumerate((pyramid, gray, strips))
    )
    assert compared == 2 * 300 * (3 + 3 + 1)
    rng = np.random.default_rng(7)
    with TiffReader(pyramid, 3, LIMIT) as small, TiffReader(pyramid, 3, LIMIT) as large:
        small.tile_cache_bytes = 2 * 32 * 32 * 3  # two tiles: almost every read decodes again
        decodes = 0
        decode = small._decode

        def counted(*args):  # type: ignore[no-untyped-def]
            nonlocal decodes
            decodes += 1
            return decode(*args)

        small._decode = counted  # type: ignore[method-assign]
        for y, x, h, w in _random_windows(rng, 300, 420, 400):
            np.testing.assert_array_equal(small.read(0, y, x, h, w), large.read(0, y, x, h, w))
        assert decodes > 300  # the small cache did decode tiles again and again


def test_reading_tiles_does_not_import_zarr(tmp_path: Path) -> None:
    path = write_pyramid(tmp_path / "p.tif", tissue_image(128, 128), compression="jpeg")
    script = (
        "import sys; from patchpack.dataset.readers import TiffReader; "
        f"reader = TiffReader({str(path)!r}, 3, 10**6); reader.read(1, 5, 5, 40, 40); "
        "reader.close(); print('zarr' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


# --- the conversion rule, tiled as in strips ----------------------------------------------------

_RNG = np.random.default_rng(5)
_GRAY = random_image(40, 50, 1, seed=1)
_COLORMAP = _RNG.integers(0, 65536, (3, 256), dtype=np.uint16)

PHOTOMETRICS = {
    "miniswhite": (_GRAY, {"photometric": "miniswhite"}),
    "palette": (_GRAY, {"photometric": "palette", "colormap": _COLORMAP}),
    "cmyk": (random_image(40, 50, 4, seed=2), {"photometric": "separated"}),
    "bilevel": (_GRAY > 127, {"photometric": "minisblack"}),
    "bilevel-miniswhite": (_GRAY > 127, {"photometric": "miniswhite"}),
    "gray-2-bit": (_GRAY >> 6, {"photometric": "minisblack", "bitspersample": 2}),
    "gray-4-bit": (_GRAY >> 4, {"photometric": "minisblack", "bitspersample": 4}),
    "miniswhite-4-bit": (_GRAY >> 4, {"photometric": "miniswhite", "bitspersample": 4}),
    "miniswhite-16-bit": (_GRAY.astype(np.uint16) * 257, {"photometric": "miniswhite"}),
    "rgb": (random_image(40, 50, 3, seed=3), {"photometric": "rgb"}),
    "gray-16-bit": (_GRAY.astype(np.uint16) * 251, {"photometric": "minisblack"}),
}


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("kind", sorted(PHOTOMETRICS))
def test_tiled_and_strip_tiffs_give_the_same_pixels(
    tmp_path: Path, kind: str, channels: int
) -> None:
    pixels, options = PHOTOMETRICS[kind]
    write_tiled(tmp_path / "src" / "a" / "tiled.tif", pixels, **options)
    write_strips(tmp_path / "src" / "a" / "strips.tif", pixels, **options)
    _, sources = catalog(tmp_path / "src", max_megapixels=1)
    by_backend = {source.backend: source for source in sources}
    assert sorted(by_backend) == ["pillow", "tifffile"]  # the selection the catalog really makes
    loaded = {}
    for backend, source in by_backend.items():
        with reader_for(source, channels, 1) as reader:
            loaded[backend] = reader.read(0, 0, 0, 40, 50)
    assert loaded["pillow"].shape == (40, 50, channels)
    np.testing.assert_array_equal(loaded["tifffile"], loaded["pillow"])
    with reader_for(by_backend["tifffile"], channels, 1) as reader:  # windows across tile edges
        np.testing.assert_array_equal(reader.read(0, 13, 9, 20, 30), loaded["pillow"][13:33, 9:39])


def test_a_16_bit_palette_is_expanded_through_its_colormap(tmp_path: Path) -> None:
    indices = (_GRAY.astype(np.uint16) * 200) + 7  # Pillow cannot read 16-bit palettes at all
    colormap = _RNG.integers(0, 65536, (3, 65536), dtype=np.uint16)
    path = write_tiled(tmp_path / "p.tif", indices, photometric="palette", colormap=colormap)
    with TiffReader(path, 3, LIMIT) as reader:
        pixels = reader.read(0, 0, 0, 40, 50)
    np.testing.assert_array_equal(pixels, (colormap[:, indices] >> 8).transpose(1, 2, 0))


def test_a_photometric_without_a_rule_is_refused_in_one_line(tmp_path: Path) -> None:
    lab = random_image(32, 32, 3)
    write_tiled(tmp_path / "src" / "a" / "lab.tif", lab, photometric="cielab")
    with pytest.raises(
        SourceError, match=r"lab\.tif: level 0: photometric CIELAB is not read by the tiled reader"
    ):
        catalog(tmp_path / "src", max_megapixels=1)
