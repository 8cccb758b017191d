"""Plausible bad inputs: each is one line naming the file (and level and tile), never wrong pixels.

A truncated slide, a tile table that cannot cover the size the header claims, a zero-sized level, a
malformed resolution, a DICOM series, an ``mpp`` no level is near: the catalog (or the first read
of the tile) refuses it with a :class:`SourceError`, which the CLI prints on one line (exit 2)
before anything is written. tifffile's own warnings never reach stderr ahead of that line.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from patchpack.dataset.readers import TiffReader, choose_backend
from patchpack.dataset.sources import catalog, reader_for
from patchpack.errors import SourceError
from support.commands import run_patchpack
from support.slides import tissue_image, write_pyramid
from support.tiffs import (
    random_image,
    set_tag,
    tag_values,
    write_levels,
    write_svs,
    write_tiled,
)

LIMIT = 100_000_000


def _jpeg_slide(folder: Path) -> Path:
    """A 128 x 160 JPEG-tiled slide: 4 x 5 tiles of 32 x 32, tile data last in the file."""
    return write_tiled(
        folder / "a" / "slide.tif",
        random_image(128, 160, 3),
        tile=32,
        photometric="rgb",
        compression="jpeg",
    )


def _one_line(tmp_path: Path, folder: Path, **source: object) -> str:
    """Run ``patchpack extract`` on ``folder``: exit 2, one line on stderr, nothing written."""
    raw = {
        "base": {"seed": 3},
        "source": {"dir": str(folder), "channels": 3, **source},
        "extract": {"patch_size": 16, "per_image": 20, "min_std": 0.0},
        "split": {"mode": "image", "fractions": {"train": 1.0, "val": 0.0, "test": 0.0}},
        "shards": {"target_patches": 32, "chunk_patches": 16},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    done = run_patchpack("extract", "--out", "out", cwd=tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert not (tmp_path / "out").exists()
    return lines[0]


# --- tiles the file does not hold -----------------------------------------------------------------


def test_a_truncated_slide_names_the_level_and_the_tile(tmp_path: Path) -> None:
    path = _jpeg_slide(tmp_path / "src")
    offsets = tag_values(path, "TileOffsets")
    counts = tag_values(path, "TileByteCounts")
    assert offsets[12] + counts[12] <= offsets[13]  # tiles lie in order: cutting 12 cuts 13 to 19
    path.write_bytes(path.read_bytes()[: offsets[12] + 100])
    with pytest.raises(
        SourceError,
        match=rf"slide\.tif: level 0: tile 12 \(row 2, col 2\) is truncated \(100 of "
        rf"{counts[12]:,} bytes in the file\); re-export the slide$",
    ):
        catalog(tmp_path / "src", max_megapixels=1)


def test_a_truncated_slide_is_one_line_from_the_cli(tmp_path: Path) -> None:
    path = _jpeg_slide(tmp_path / "src")
    offsets = tag_values(path, "TileOffsets")
    path.write_bytes(path.read_bytes()[: offsets[-1] + 10])
    line = _one_line(tmp_path, tmp_path / "src")
    assert "slide.tif: level 0: tile 19 (row 3, col 4) is truncated (10 of " in line


def test_a_jpeg_tile_cut_short_inside_the_file_is_refused_when_read(tmp_path: Path) -> None:
    # the byte count says the stream is shorter than it is: libjpeg decodes it without an error,
    # filling the rest of the tile with gray, so the reader looks for the end-of-image marker
    path = _jpeg_slide(tmp_path / "src")
    counts = tag_values(path, "TileByteCounts")
    set_tag(path, "TileByteCounts", [*counts[:6], counts[6] // 2])
    _, (source,) = catalog(tmp_path / "src", max_megapixels=1)
    with reader_for(source, 3, 1) as reader:
        reader.read(0, 0, 0, 32, 160)  # row 0 is whole
        with pytest.raises(
            SourceError,
            match=r"slide\.tif: level 0: tile 6 \(row 1, col 1\) is truncated \(its JPEG stream "
            r"has no end marker\); re-export the slide",
        ):
            reader.read(0, 40, 40, 16, 16)


@pytest.mark.parametrize(
    ("tag", "value", "problem"),
    [
        ("TileOffsets", 0, r"has no data \(offset 0, [\d,]+ bytes\)"),
        ("TileByteCounts", 0, r"has no data \(offset \d+, 0 bytes\)"),
        ("TileOffsets", 10**7, r"is truncated \(0 of [\d,]+ bytes in the file\)"),
    ],
)
def test_a_tile_outside_the_file_is_refused_when_opened(
    tmp_path: Path, tag: str, value: int, problem: str
) -> None:
    path = _jpeg_slide(tmp_path / "src")
    values = tag_values(path, tag)
    set_tag(path, tag, [*values[:3], value])
    with pytest.raises(
        SourceError, match=rf"slide\.tif: level 0: tile 3 \(row 0, col 3\) {problem}"
    ):
        catalog(tmp_path / "src", max_megapixels=1)


def test_a_truncated_strip_is_named_by_its_index(tmp_path: Path) -> None:
    path = tmp_path / "src" / "a" / "strips.tif"  # BigTIFF in strips: the tifffile backend
    path.parent.mkdir(parents=True)
    tifffile.imwrite(path, random_image(64, 40, 3), photometric="rgb", rowsperstrip=8, bigtiff=True)
    offsets = tag_values(path, "StripOffsets")
    path.write_bytes(path.read_bytes()[: offsets[5] + 7])
    with pytest.raises(
        SourceError,
        match=r"strips\.tif: level 0: strip 5 is truncated \(7 of 960 bytes in the file\)",
    ):
        catalog(tmp_path / "src", max_megapixels=1)


def test_a_header_claiming_a_million_squared_pixels_is_refused_without_decoding(
    tmp_path: Path,
) -> None:
    path = _jpeg_slide(tmp_path / "src")
    set_tag(path, "ImageWidth", [1_000_000])
    set_tag(path, "ImageLength", [1_000_000])
    started = time.monotonic()
    with pytest.raises(
        SourceError,
        match=r"slide\.tif: level 0: the header says 1,000,000 x 1,000,000 pixels, which takes "
        r"976,562,500 tiles of 32 x 32, but the tile table lists 20; re-export the slide",
    ):
        catalog(tmp_path / "src", max_megapixels=100)
    assert time.monotonic() - started < 5


def test_tifffile_warnings_stay_off_stderr(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # the header claims more rows than the tiles hold, and tifffile's own shape record (its JSON
    # ImageDescription) disagrees with it: tifffile logs about that while it opens the file
    path = tmp_path / "src" / "a" / "slide.tif"
    path.parent.mkdir(parents=True)
    tifffile.imwrite(path, random_image(128, 160, 3), tile=(32, 32), photometric="rgb")
    set_tag(path, "ImageLength", [1280])
    with caplog.at_level(logging.DEBUG, logger="tifffile"), pytest.raises(SourceError):
        catalog(tmp_path / "src", max_megapixels=100)
    assert [r.getMessage() for r in caplog.records if r.name.startswith("tifffile")] == []
    line = _one_line(tmp_path, tmp_path / "src")
    assert "slide.tif: level 0: the header says 160 x 1,280 pixels" in line


# --- levels and resolution --------------------------------------------------------------------


def test_a_zero_sized_level_is_one_line(tmp_path: Path) -> None:
    path = write_levels(tmp_path / "src" / "a" / "p.ome.tif", tissue_image(128, 128), levels=3)
    set_tag(path, "ImageWidth", [0], subifd=1)
    with pytest.raises(
        SourceError, match=r"p\.ome\.tif: level 2 is empty \(0 x 32 pixels\); re-export the slide"
    ):
        catalog(tmp_path / "src", max_megapixels=1)
    path.unlink()
    # with tifffile's own JSON shape record, tifffile itself fails on it (ZeroDivisionError)
    shaped = write_pyramid(tmp_path / "src" / "a" / "p.tif", tissue_image(128, 128), levels=3)
    set_tag(shaped, "ImageWidth", [0], subifd=1)
    with pytest.raises(SourceError, match=r"p\.tif: not a readable TIFF \(ZeroDivisionError: "):
        catalog(tmp_path / "src", max_megapixels=1)


@pytest.mark.parametrize("recorded", ["abc", "0", "-1", "nan", "1.2.3", ".", "inf"])
def test_a_malformed_aperio_mpp_counts_as_none(tmp_path: Path, recorded: str) -> None:
    write_svs(tmp_path / "src" / "a" / "x.svs", random_image(64, 64, 3), recorded)
    _, (source,) = catalog(tmp_path / "src", max_megapixels=1)
    assert source.backend == "tifffile" and source.mpp is None
    with pytest.raises(
        SourceError,
        match=r"x\.svs: the file records no resolution \(microns per pixel; a missing, zero, "
        r"negative or malformed value counts as none\), so source.mpp=0.5 cannot choose a level",
    ):
        catalog(tmp_path / "src", max_megapixels=1, mpp=0.5)


def test_a_valid_aperio_mpp_is_read(tmp_path: Path) -> None:
    write_svs(tmp_path / "src" / "a" / "x.svs", random_image(64, 64, 3), "0.4990")
    _, (source,) = catalog(tmp_path / "src", max_megapixels=1, mpp=0.5)
    assert source.mpp == pytest.approx(0.499) and source.level == 0


def test_an_mpp_no_level_is_near_is_refused(tmp_path: Path) -> None:
    write_pyramid(tmp_path / "src" / "a" / "one.tif", tissue_image(128, 128), levels=1, mpp=0.5)
    with pytest.raises(
        SourceError,
        match=r"one\.tif: source.mpp=2 is more than 10% from every level's resolution \(0\.5 µm/px "
        r"at level 0\); set source.level instead, an mpp within 10% of a level, or use a pyramidal "
        r"file with a level near 2 µm/px",
    ):
        catalog(tmp_path / "src", max_megapixels=1, mpp=2.0)
    assert catalog(tmp_path / "src", max_megapixels=1, mpp=0.54)[1][0].level == 0  # 8% off
    with pytest.raises(SourceError, match=r"source.mpp=0.56 is more than 10%"):
        catalog(tmp_path / "src", max_megapixels=1, mpp=0.56)


def test_mpp_picks_a_pyramid_level_within_10_percent(tmp_path: Path) -> None:
    write_pyramid(tmp_path / "src" / "a" / "p.tif", tissue_image(256, 256), levels=3, mpp=0.5)
    assert catalog(tmp_path / "src", max_megapixels=1, mpp=1.05)[1][0].level == 1
    with pytest.raises(SourceError, match=r"\(0\.5 µm/px at level 0, 1 at level 1, 2 at level 2\)"):
        catalog(tmp_path / "src", max_megapixels=1, mpp=3.0)


# --- formats patchpack does not read ----------------------------------------------------------


def test_dicom_is_refused_with_a_way_out(tmp_path: Path) -> None:
    folder = tmp_path / "src" / "a"
    folder.mkdir(parents=True)
    (folder / "level-0.dcm").write_bytes(bytes(128) + b"DICM" + bytes(64))
    with pytest.raises(
        SourceError,
        match=r"level-0\.dcm: DICOM whole-slide images are not supported yet; convert the "
        r"series to a pyramidal TIFF",
    ):
        catalog(tmp_path / "src", max_megapixels=1)
    (folder / "level-0.dcm").rename(folder / "level-0")  # DICOM files often have no suffix
    with pytest.raises(SourceError, match=r"level-0: DICOM whole-slide images are not supported"):
        choose_backend(folder / "level-0")


def test_a_dicom_file_is_one_line_from_the_cli(tmp_path: Path) -> None:
    folder = tmp_path / "src" / "a"
    folder.mkdir(parents=True)
    (folder / "x.dcm").write_bytes(bytes(128) + b"DICM" + bytes(64))
    assert "x.dcm: DICOM whole-slide images are not supported yet" in _one_line(
        tmp_path, tmp_path / "src"
    )


def test_tiled_reads_of_a_sound_file_still_work_after_the_checks(tmp_path: Path) -> None:
    pixels = random_image(128, 160, 3)
    path = write_tiled(tmp_path / "ok.tif", pixels, tile=32, photometric="rgb")
    with TiffReader(path, 3, LIMIT) as reader:
        np.testing.assert_array_equal(reader.read(0, 0, 0, 128, 160), pixels)
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages.first.dataoffsets) == 20
