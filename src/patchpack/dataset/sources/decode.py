"""Decoding a source with Pillow: one guarded opener, orientation, and the one mode-conversion rule.

Conversion rule (applied to every image, documented in docs/guarantees.md):

* orientation first: pixels are taken as a viewer shows them. An EXIF Orientation tag (or XMP
  ``tiff:Orientation``) other than 1 is applied as :func:`PIL.ImageOps.exif_transpose` applies it, and
  the catalog's width and height are the displayed ones (swapped for orientations 5 to 8);
* 16-bit and 32-bit integer grayscale (``I;16``, ``I``) is scaled to 8 bits by dropping the low byte
  (``value >> 8``, after clipping to 0..65535);
* palette images are expanded to RGB (or RGBA when they have transparency), ``1`` (bilevel) to ``L``,
  and CMYK/YCbCr/LAB to RGB;
* alpha is dropped (the stored colour is kept, not composited);
* then ``channels: 1`` takes ITU-R 601-2 luma (Pillow's ``convert("L")``) and ``channels: 3`` takes
  RGB, replicating gray into three channels.

Float images (mode ``F``) are refused: their scale is unknown. Multi-frame TIFFs contribute their first frame.

Tiled TIFFs (the ``tifffile`` backend, see :mod:`patchpack.dataset.readers`) follow the same rule
with the same arithmetic, so one image stored tiled or in strips gives the same pixels: MINISWHITE
inverted (up to 8 bits; 16-bit MINISWHITE is kept as stored, as Pillow's ``I;16`` keeps it), 1-, 2-
and 4-bit gray spread over 0..255 (bilevel to 0 and 255), palette indices through the colormap's
high bytes, CMYK to RGB by Pillow's own conversion; a photometric with no such rule (CIELAB, YCbCr
without JPEG, ...) is refused in one line.

"""

from __future__ import annotations

import contextlib
import os
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from patchpack.dataset.readers import ArrayReader, Reader, open_reader
from patchpack.dataset.sources.records import SourceImage
from patchpack.errors import SourceError

FORMATS = ("PNG", "JPEG", "TIFF")

# EXIF orientations that turn the image a quarter (ImageOps.exif_transpose transposes or rotates by
# 90 or 270 degrees): the displayed width is the stored height.
_QUARTER_TURNS = (5, 6, 7, 8)
# PNG chunks that can carry EXIF or XMP orientation (eXIf, and the text chunks holding
# "Raw profile type exif" or XMP); Pillow reads those that follow the pixel data only when decoding.
_PNG_METADATA = (b"eXIf", b"tEXt", b"zTXt", b"iTXt")


@dataclass(frozen=True)
class OpenMessages:
    """What :func:`open_guarded` says, after ``{path}: ``, when Pillow cannot open a file.

    Attributes
    ----------
    too_many_pixels : str, for Pillow's decompression-bomb error; ``{exc}`` is its own words
    unidentified : str, for a file Pillow does not recognise
    unreadable : str, for any other error while opening; ``{exc}`` is its own words
    quiet_exif : bool, whether Pillow's EXIF warnings (``UserWarning``) are silenced while it
        sniffs the header, as they are for source images (see :func:`_exif_errors`)
    """

    too_many_pixels: str
    unidentified: str
    unreadable: str
    quiet_exif: bool = False


def open_guarded(path: Path, messages: OpenMessages) -> Image.Image:
    """Open an image lazily (header only), each failure refused in one line.

    Pillow's decompression-bomb warning is silenced: the caller checks the size against
    ``source.max_megapixels`` itself, before any pixel is decoded.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if messages.quiet_exif:
                # Pillow warns about odd EXIF while it sniffs a JPEG; _exif_errors says why it is quiet.
                warnings.simplefilter("ignore", UserWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise SourceError(f"{path}: " + messages.too_many_pixels.format(exc=exc)) from exc
    except UnidentifiedImageError:
        raise SourceError(f"{path}: {messages.unidentified}") from None
    except OSError as exc:
        raise SourceError(f"{path}: " + messages.unreadable.format(exc=exc)) from exc
    return image


_SOURCE_OPEN = OpenMessages(
    too_many_pixels="image header claims too many pixels ({exc}); raise source.max_megapixels "
    "only if you trust the file",
    unidentified="not a readable image (unknown or corrupt header); re-export it as PNG, JPEG or TIFF",
    unreadable="cannot open image ({exc}); check the file",
    quiet_exif=True,
)


def _displayed_size(image: Image.Image, path: Path) -> tuple[int, int]:
    """``(width, height)`` as a viewer shows the image, read from its header (no pixel decoded)."""
    width, height = image.size
    if image.format == "TIFF":
        return width, height  # Pillow's TIFF reader already reports (and decodes) TIFFs upright
    with _exif_errors(path):
        if image.format == "PNG" and not _png_metadata_after_pixels(path):
            # PngImageFile.getexif decodes every pixel in case metadata follows them; none does here,
            # so the chunks read with the header hold all of it.
            exif = Image.Image.getexif(image)
        else:
            exif = image.getexif()
        orientation = exif.get(ExifTags.Base.Orientation, 1)
    return (height, width) if orientation in _QUARTER_TURNS else (width, height)


def _upright(image: Image.Image, path: Path) -> None:
    """Turn a decoded image, in place, the way its EXIF orientation says a viewer shows it."""
    with _exif_errors(path):
        ImageOps.exif_transpose(image, in_place=True)


@contextlib.contextmanager
def _exif_errors(path: Path) -> Iterator[None]:
    """Around Pillow's EXIF parsing: a file it cannot parse fails in one line.

    Pillow warns about odd tags (a truncated maker note, a repeated value) and keeps what it can
    read; a viewer does the same, so those warnings are silenced rather than shown per image.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    except (OSError, SyntaxError, ValueError, struct.error) as exc:
        raise SourceError(
            f"{path}: unreadable EXIF metadata ({exc}); re-export the image or remove it"
        ) from exc


def _png_metadata_after_pixels(path: Path) -> bool:
    """Whether a PNG has an eXIf or text chunk after its image data (chunk headers only, no decoding).

    A truncated or unreadable file answers ``False``: its decoding fails later, with its own message.
    """
    seen_pixels = False
    try:
        with path.open("rb") as handle:
            handle.seek(8)  # past the PNG signature
            while len(header := handle.read(8)) == 8:
                length, kind = struct.unpack(">I4s", header)
                if kind == b"IEND":
                    break
                if kind == b"IDAT":
                    seen_pixels = True
                elif seen_pixels and kind in _PNG_METADATA:
                    return True
                handle.seek(length + 4, os.SEEK_CUR)  # the data and its CRC
    except OSError:
        return False
    return False


def _open(path: Path, max_megapixels: float) -> Image.Image:
    """Open an image lazily (header only) with the size guard applied before any pixel is decoded."""
    limit = int(max_megapixels * 1_000_000)
    image = open_guarded(path, _SOURCE_OPEN)
    if image.format not in FORMATS:
        image.close()
        raise SourceError(
            f"{path}: {image.format} images are not supported; convert it to PNG, JPEG or TIFF"
        )
    width, height = image.size
    if width * height > limit:
        image.close()
        raise SourceError(
            f"{path}: {width}x{height} is {width * height / 1e6:.0f} megapixels, above "
            f"source.max_megapixels={max_megapixels:g} (a decompression-bomb guard); raise it only "
            f"if you trust the file"
        )
    return image


def load_pixels(source: SourceImage, channels: int, max_megapixels: float) -> np.ndarray:
    """Decode a source, upright, to the configured channels by the module's conversion rule.

    Returns
    -------
    pixels : ndarray of shape (height, width, channels), uint8
    """
    with _open(source.path, max_megapixels) as image:
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise SourceError(
                f"{source.path}: corrupt or truncated image data ({exc}); re-export or remove it"
            ) from exc
        _upright(image, source.path)
        converted = _to_channels(image, channels)
    pixels = np.asarray(converted, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    if pixels.shape != (source.height, source.width, channels):
        raise SourceError(
            f"{source.path}: decoded to shape {pixels.shape}, expected "
            f"{(source.height, source.width, channels)}; the file changed during extraction"
        )
    return pixels


def reader_for(source: SourceImage, channels: int, max_megapixels: float) -> Reader:
    """A reader over ``source``: small images decoded whole, slides through their windowed backend."""
    if source.backend == "pillow":
        return ArrayReader(source.path, load_pixels(source, channels, max_megapixels))
    return open_reader(
        source.path, channels=channels, max_megapixels=max_megapixels, backend=source.backend
    )


def _to_channels(image: Image.Image, channels: int) -> Image.Image:
    mode = image.mode
    if mode.startswith("I"):
        wide = np.asarray(image, dtype=np.int64)
        image = Image.fromarray((np.clip(wide, 0, 65535) >> 8).astype(np.uint8), mode="L")
    elif mode in ("P", "PA"):
        image = image.convert("RGBA" if "transparency" in image.info or mode == "PA" else "RGB")
    elif mode == "1":
        image = image.convert("L")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        image = image.convert("RGB")
    if image.mode == "LA":
        image = image.getchannel("L")
    elif image.mode == "RGBA":
        image = image.convert("RGB")
    return image.convert("L" if channels == 1 else "RGB")
