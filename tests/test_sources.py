from __future__ import annotations

import os
import shutil
import struct
import unicodedata
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from patchpack.dataset.extract import extract
from patchpack.dataset.sources import DEMO_IMAGES, catalog, export_demo, load_pixels
from patchpack.errors import SourceError
from support.commands import file_digests
from support.images import make_folder, small_params, textured


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


# --- hostile folders ------------------------------------------------------------------------------


def test_the_same_image_in_two_classes_is_refused(images: Path) -> None:
    shutil.copyfile(images / "class_0" / "img_1.png", images / "class_2" / "copy.png")
    with pytest.raises(
        SourceError,
        match=r"class_0/img_1.png and \S*class_2/copy.png are the same image \(sha256 [0-9a-f]{16}"
        r"\.\.\.\), so its patches could land in two splits under two labels; remove one of them",
    ):
        catalog(images, max_megapixels=1)


def test_the_same_image_twice_in_one_class_is_refused(images: Path) -> None:
    shutil.copyfile(images / "class_1" / "img_0.png", images / "class_1" / "again.png")
    with pytest.raises(SourceError, match=r"again.png and \S*img_0.png are the same image"):
        catalog(images, max_megapixels=1)


def _oriented(path: Path, orientation: int) -> None:
    """Save a 40x24 textured RGB image at ``path`` with an EXIF Orientation tag."""
    pixels = textured(np.random.default_rng(orientation), 24, 40, 3, tone=90)
    pixels[:4, :8] = (250, 0, 0)  # a red corner, so every transposition shows
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=95)


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".tif"])
@pytest.mark.parametrize(("orientation", "size"), [(6, (24, 40)), (3, (40, 24))])
def test_exif_orientation_gives_the_pixels_a_viewer_shows(
    tmp_path: Path, suffix: str, orientation: int, size: tuple[int, int]
) -> None:
    folder = tmp_path / "src" / "c"
    folder.mkdir(parents=True)
    _oriented(folder / f"a{suffix}", orientation)
    _, (source,) = catalog(tmp_path / "src", max_megapixels=1)
    assert (source.width, source.height) == size
    with Image.open(folder / f"a{suffix}") as image:
        assert image.getexif()[0x0112] == orientation
        shown = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    assert np.array_equal(load_pixels(source, 3, 1), shown)


def test_exif_orientation_after_the_png_pixels_is_applied(tmp_path: Path) -> None:
    """An eXIf chunk may follow the image data; the catalog then decodes to find it."""
    folder = tmp_path / "src" / "c"
    folder.mkdir(parents=True)
    _oriented(folder / "a.png", 6)
    data = (folder / "a.png").read_bytes()
    start = data.index(b"eXIf") - 4
    (length,) = struct.unpack(">I", data[start : start + 4])
    chunk = data[start : start + 12 + length]
    end = data.index(b"IEND") - 4
    (folder / "a.png").write_bytes(
        data[:start] + data[start + len(chunk) : end] + chunk + data[end:]
    )
    _, (source,) = catalog(tmp_path / "src", max_megapixels=1)
    assert (source.width, source.height) == (24, 40)
    assert load_pixels(source, 3, 1)[0, -1].tolist() == [250, 0, 0]  # the red corner, upright


def test_exif_that_cannot_be_parsed_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "src" / "c"
    folder.mkdir(parents=True)
    Image.new("L", (30, 20), 9).save(folder / "a.png", exif=b"garbage")
    with pytest.raises(SourceError, match=r"a.png: unreadable EXIF metadata \(not a TIFF file"):
        catalog(tmp_path / "src", max_megapixels=1)


def test_exif_with_odd_tags_keeps_what_pillow_reads(tmp_path: Path) -> None:
    """Two values for Orientation: Pillow warns and keeps them; a tuple is no orientation."""
    folder = tmp_path / "src" / "c"
    folder.mkdir(parents=True)
    odd = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x01\x00\x12\x01\x03\x00\x02\x00\x00\x00\x06\x00\x06\x00"
    Image.new("L", (30, 20), 9).save(folder / "a.jpg", exif=odd)
    _, (source,) = catalog(tmp_path / "src", max_megapixels=1)
    assert load_pixels(source, 1, 1).shape == (source.height, source.width, 1)


def test_exif_orientation_extracts_the_same_patches_as_the_upright_image(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    upright = textured(rng, 96, 128, 1, tone=80)[:, :, 0]
    tagged, plain = tmp_path / "tagged", tmp_path / "plain"
    (tagged / "c").mkdir(parents=True)
    (plain / "c").mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned a quarter left, shown turned back
    Image.fromarray(np.rot90(upright, 1)).save(tagged / "c" / "a.png", exif=exif.tobytes())
    Image.fromarray(upright).save(plain / "c" / "a.png")
    extract(small_params(tagged), out=tmp_path / "out-tagged")
    extract(small_params(plain), out=tmp_path / "out-plain")
    shards = {k: v for k, v in file_digests(tmp_path / "out-tagged").items() if k.endswith(".h5")}
    assert shards and shards.items() <= file_digests(tmp_path / "out-plain").items()


def test_a_dangling_symlink_is_refused(images: Path, tmp_path: Path) -> None:
    os.symlink(tmp_path / "moved-away.png", images / "class_1" / "gone.png")
    with pytest.raises(
        SourceError,
        match=r"class_1/gone.png: symbolic link to \S*moved-away.png, which is missing or cannot be "
        r"followed; restore its target or remove the link",
    ):
        catalog(images, max_megapixels=1)


def test_a_dangling_symlink_at_the_top_is_refused(images: Path, tmp_path: Path) -> None:
    os.symlink(tmp_path / "elsewhere", images / "class_9")
    with pytest.raises(SourceError, match=r"class_9: symbolic link to \S*elsewhere"):
        catalog(images, max_megapixels=1)


def test_a_pipe_is_refused(images: Path) -> None:
    os.mkfifo(images / "class_0" / "pipe.png")
    with pytest.raises(SourceError, match=r"pipe.png: not a regular file"):
        catalog(images, max_megapixels=1)


NFD_CLASS = unicodedata.normalize("NFD", "bétons")
NFD_FILE = unicodedata.normalize("NFD", "café.png")


def test_ids_and_class_names_are_nfc(tmp_path: Path) -> None:
    assert NFD_FILE != "café.png"
    root = make_folder(tmp_path / "nfd", classes=1, per_class=1)
    (root / "class_0").rename(root / NFD_CLASS)
    (root / NFD_CLASS / "img_0.png").rename(root / NFD_CLASS / NFD_FILE)
    class_names, (source,) = catalog(root, max_megapixels=1)
    assert class_names == ["bétons"] and source.class_name == "bétons"
    assert source.id == "bétons/café.png"
    assert source.path.name == NFD_FILE  # the file is still opened by its own spelling


def test_nfd_and_nfc_names_give_byte_identical_datasets(tmp_path: Path) -> None:
    for form, root in (("NFD", tmp_path / "mac"), ("NFC", tmp_path / "linux")):
        make_folder(root, classes=2, per_class=2)
        folder = root / unicodedata.normalize(form, "bétons")
        (root / "class_1").rename(folder)
        (folder / "img_0.png").rename(folder / unicodedata.normalize(form, "café.png"))
        extract(small_params(root), out=tmp_path / f"out-{form}")
    assert file_digests(tmp_path / "out-NFD") == file_digests(tmp_path / "out-NFC")


def test_names_equal_once_normalised_are_refused(images: Path) -> None:
    Image.new("L", (40, 40), 1).save(images / "class_0" / NFD_FILE)
    Image.new("L", (40, 40), 2).save(images / "class_0" / "café.png")
    with pytest.raises(
        SourceError, match=r"have the same id 'class_0/café.png' once Unicode-normalised \(NFC\)"
    ):
        catalog(images, max_megapixels=1)
    shutil.move(images / "class_0", images / NFD_CLASS)
    shutil.move(images / "class_1", images / "bétons")
    with pytest.raises(SourceError, match=r"are the same class name 'bétons' once Unicode-normal"):
        catalog(images, max_megapixels=1)


def test_a_name_that_is_not_utf8_is_refused(images: Path) -> None:
    Image.new("L", (40, 40), 1).save(images / "class_0" / os.fsdecode(b"caf\xe9.png"))
    with pytest.raises(
        SourceError, match=r"class_0/caf\\xe9.png: name is not valid UTF-8, so its id has no"
    ):
        catalog(images, max_megapixels=1)


def test_a_name_with_a_newline_gives_a_one_line_error(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from patchpack import cli
    from support.images import write_params

    (images / "class_0" / "evil\nname.png").symlink_to(tmp_path / "gone\n.png")
    params = write_params(tmp_path / "params.yaml", images)
    assert cli.main(["extract", "--params", str(params), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("patchpack extract: error: ")
    assert "class_0/evil\\nname.png: symbolic link to " in err and "gone\\n.png, which" in err
