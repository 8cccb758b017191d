"""Readers: one small interface over the libraries that decode source images.

A reader says how many pyramid levels a source has, their sizes, and its resolution (microns per
pixel) when the file records one, and returns any window of any level as a uint8 array converted by
the one conversion rule (see :mod:`patchpack.dataset.sources`)::

    with open_reader(path, channels=3, max_megapixels=100) as reader:
        reader.levels        # (Level(height, width, downsample), ...), level 0 first
        reader.mpp           # microns per pixel at level 0, or None
        reader.read(level=1, y=0, x=0, height=256, width=256)   # (256, 256, 3) uint8

The backend is chosen per file, deterministically, by :func:`choose_backend`, and recorded per source
in the manifest; nothing else in patchpack knows which one decoded a file:

==========  =====================================================================================
pillow      PNG, JPEG and untiled single-level TIFF: decoded whole (as small images always were)
tifffile    tiled or pyramidal TIFF, BigTIFF, OME-TIFF, Aperio SVS: a window decodes only the tiles
            it touches (tile by tile with tifffile's own decoder and imagecodecs' codecs: the same
            calls, so the same bytes, as tifffile's zarr store, without zarr's per-chunk overhead)
openslide   vendor formats tifffile cannot read (NDPI, MRXS, SCN, VMS, BIF ...), through
            openslide-python with the openslide-bin library
==========  =====================================================================================

DICOM whole-slide images (``.dcm``, or any file with the DICOM preamble) are refused in one line:
a DICOM slide is a series of files, one per level, which the catalog would take for separate images.

``source.max_megapixels`` guards what is decoded at once: a whole image for ``pillow``, one window
(a patch, or the low-resolution level the tissue mask is computed from) for the tiled backends.

A tiled file's pixels are what its stored samples say, or an error, never a guess:

* when it is opened, every level's tile (or strip) table must cover the size its header claims and
  every tile must lie inside the file, with a nonzero offset and byte count; otherwise one line
  names the file, the level and the tile (``slide.tif: level 0: tile 12 (row 1, col 4) is truncated
  (3,120 of 20,480 bytes in the file); re-export the slide``). Nothing is allocated per pixel, so a
  header claiming 10^6 x 10^6 pixels costs no more than any other;
* a JPEG tile must end with its end-of-image marker when read: libjpeg decodes a stream cut short
  without an error, filling the rest of the tile with gray;
* stored samples follow the same conversion rule as Pillow's path (see
  :mod:`patchpack.dataset.sources`), so one image tiled or in strips gives the same pixels: MINISWHITE
  is inverted (1, 2, 4 and 8 bits; 16-bit MINISWHITE is kept as stored, as Pillow reads it), 1-, 2- and
  4-bit gray is spread over 0..255 as Pillow unpacks it (bilevel to 0 and 255), PALETTE is expanded
  through its colormap (``value >> 8``, Pillow's ``// 256``), CMYK (SEPARATED) goes to RGB by Pillow's
  own ``convert("RGB")``; other photometrics (CIELAB, YCbCr without JPEG, ...) are refused in one line.

tifffile logs (logger ``tifffile``) and warns about odd tags while it opens and decodes; inside the
reader both are silenced, so patchpack's one line is the only thing a bad file prints.
"""

from patchpack.dataset.readers.backends import (
    BACKENDS,
    DICOM_SUFFIXES,
    OPENSLIDE_SUFFIXES,
    PILLOW_SUFFIXES,
    SUFFIXES,
    TIFF_SUFFIXES,
    backend_versions,
    choose_backend,
    open_reader,
)
from patchpack.dataset.readers.base import (
    ArrayReader,
    Level,
    Reader,
    convert,
    smallest_level_at_least,
)
from patchpack.dataset.readers.slide import OpenSlideReader
from patchpack.dataset.readers.tiff import TiffReader

__all__ = [
    "BACKENDS",
    "DICOM_SUFFIXES",
    "OPENSLIDE_SUFFIXES",
    "PILLOW_SUFFIXES",
    "SUFFIXES",
    "TIFF_SUFFIXES",
    "ArrayReader",
    "Level",
    "OpenSlideReader",
    "Reader",
    "TiffReader",
    "backend_versions",
    "choose_backend",
    "convert",
    "open_reader",
    "smallest_level_at_least",
]
