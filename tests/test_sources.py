from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from patchpack.dataset.sources import DEMO_IMAGES, catalog, export_demo, load_pixels
from patchpack.errors import SourceError
from support.images import make_folder


def test_catalog_is_sorted_with_stable_ids(images: Path) -> None:
    class_names, sources = catalog(images, max_megapixels=10)
    assert class_names == ["class_0", "class_1", "class_2"]
    assert [s.id for s in sources] == [f"class_{k}/img_{j}.png" for k in range(3) for j in range(2)]
    assert [s.label for s in sources] == [0, 0, 1, 1, 2, 2]
    assert (sources[0].width, sources[0].height) == (128, 96)


def _one(tmp_path: Path, image: Image.Image, name: str = "a.png", **save: object) -> Path:
    folder = tmp_path / "src" / "only"
    folder.mkdir(parents=True, exist_ok=True)
    image.save(folder / name, **save)
    return tmp_path / "src"


@pytest.mark.parametrize(
    ("image", "channels", "expected"),
    [
        (Image.new("L", (4, 3), 200), 1, 200),
        (Image.new("L", (4, 3), 200), 3, (200, 200, 200)),
        (Image.new("RGB", (4, 3), (255, 0, 0)), 1, 76),  # ITU-R 601-2 luma: 255 * 299 / 1000
        (Image.new("RGB", (4, 3), (10, 20, 30)), 3, (10, 20, 30)),
        (
            Image.new("RGBA", (4, 3), (10, 20, 30, 0)),
            3,
            (10, 20, 30),
        ),  # alpha dropped, not composited
        (Image.new("I;16", (4, 3), 0xABCD), 1, 0xAB),  # 16-bit: the high byte
        (Image.new("1", (4, 3), 1), 1, 255),
    ],
)
def test_one_conversion_rule(
    tmp_path: Path, image: Image.Image, channels: int, expected: object
) -> None:
    _, (source,) = catalog(_one(tmp_path, image), max_megapixels=1)
    pixels = load_pixels(source, channels, 1)
    assert pixels.shape == (3, 4, channels) and pixels.dtype == np.uint8
    assert pixels[0, 0].tolist() == (list(expected) if isinstance(expected, tuple) else [expected])


def test_palette_png_and_jpeg_and_tiff(tmp_path: Path) -> None:
    rgb = Image.new("RGB", (8, 8), (0, 128, 255))
    folder = tmp_path / "src" / "c"
    folder.mkdir(parents=True)
    rgb.convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "p.png")
    rgb.save(folder / "j.jpg", quality=95)
    rgb.save(folder / "t.tif")
    _, sources = catalog(tmp_path / "src", max_megapixels=1)
    for source in sources:
        pixels = load_pixels(source, 3, 1)
        assert np.abs(pixels.astype(int) - [0, 128, 255]).max() <= 8, source.id


def test_float_images_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"32-bit float images have no fixed scale"):
        catalog(_one(tmp_path, Image.new("F", (4, 4)), "f.tif"), max_megapixels=1)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"source folder does not exist; set source.dir"):
        catalog(tmp_path / "nope", max_megapixels=1)


def test_no_class_folders(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    with pytest.raises(SourceError, match=r"no class subfolders"):
        catalog(tmp_path / "src", max_megapixels=1)


def test_loose_file_at_top(images: Path) -> None:
    (images / "stray.png").write_bytes(b"")
    with pytest.raises(SourceError, match=r"stray.png: files must sit in one subfolder per class"):
        catalog(images, max_megapixels=1)


def test_empty_class_folder(images: Path) -> None:
    (images / "class_9").mkdir()
    with pytest.raises(SourceError, match=r"class_9: class folder is empty"):
        catalog(images, max_megapixels=1)


def test_not_an_image_by_name(images: Path) -> None:
    (images / "class_0" / "notes.txt").write_text("hello")
    with pytest.raises(SourceError, match=r"notes.txt: not an image"):
        catalog(images, max_megapixels=1)


def test_not_an_image_by_content(images: Path) -> None:
    (images / "class_0" / "fake.png").write_text("this is text")
    with pytest.raises(SourceError, match=r"fake.png: not a readable image"):
        catalog(images, max_megapixels=1)


def test_hidden_files_are_ignored(images: Path) -> None:
    (images / "class_0" / ".DS_Store").write_bytes(b"\0\0")
    (images / ".git").mkdir()
    assert len(catalog(images, max_megapixels=1)[1]) == 6


def test_truncated_image_fails_at_decode(images: Path) -> None:
    path = images / "class_1" / "img_0.png"
    path.write_bytes(path.read_bytes()[:600])
    _, sources = catalog(images, max_megapixels=1)  # the header is intact
    bad = next(s for s in sources if s.id == "class_1/img_0.png")
    with pytest.raises(SourceError, match=r"img_0.png: corrupt or truncated image data"):
        load_pixels(bad, 1, 1)


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_header(images: Path) -> None:
    (images / "class_0" / "bomb.png").write_bytes(_png_claiming(100_000, 100_000))
    with pytest.raises(SourceError, match=r"bomb.png: image header claims too many pixels"):
        catalog(images, max_megapixels=100)


def test_image_above_the_megapixel_limit(images: Path) -> None:
    with pytest.raises(SourceError, match=r"above source.max_megapixels=0.001"):
        catalog(images, max_megapixels=0.001)


def test_unsupported_format(images: Path) -> None:
    Image.new("L", (8, 8)).save(images / "class_0" / "x.png", format="GIF")
    with pytest.raises(SourceError, match=r"x.png: GIF images are not supported"):
        catalog(images, max_megapixels=1)


def test_export_demo_copies_real_photographs(tmp_path: Path) -> None:
    written = export_demo(tmp_path / "demo")
    class_names, sources = catalog(tmp_path / "demo", max_megapixels=10)
    assert len(class_names) == len(DEMO_IMAGES) >= 6
    assert [p.relative_to(tmp_path / "demo").as_posix() for p in written] == [s.id for s in sources]
    assert min(min(s.width, s.height) for s in sources) >= 256


def test_export_demo_refuses_a_folder_with_other_files(tmp_path: Path) -> None:
    make_folder(tmp_path / "mine", classes=1, per_class=1)
    with pytest.raises(SourceError, match=r"holds more than the demo"):
        export_demo(tmp_path / "mine")
    assert (tmp_path / "mine" / "class_0" / "img_0.png").exists()
