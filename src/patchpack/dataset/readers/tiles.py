"""A tiled file's tile (or strip) tables, checked against its header and the file, and the rule
that turns a level's stored samples into gray or RGB (see :mod:`patchpack.dataset.readers`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from patchpack.errors import SourceError

# TIFF Compression values of JPEG tiles: libjpeg decodes a stream cut short without an error (the
# rest of the tile comes out gray), so these streams must end with the end-of-image marker
_JPEG_COMPRESSIONS = frozenset({7, 33007, 34892})
_END_OF_IMAGE = b"\xff\xd9"


class _Undecodable(Exception):
    """A codec failed on one tile: the message names the tile, :class:`TiffReader` the window."""


@dataclass(frozen=True, eq=False)
class _Chunks:
    """How one level's samples are stored: a table of tiles (or strips) of one shape.

    Attributes
    ----------
    page : tifffile.TiffPage, the level's page (its decoder and its file)
    kind : str, ``tile`` or ``strip``
    shape : tuple of int, the level's stored array, (height, width[, samples])
    chunk : tuple of int, one decoded tile or strip, padded at the image's edges, (height, width[,
        samples]): the chunks of tifffile's zarr store
    across : int, tiles per row of tiles (1 for strips)
    offsets, counts : ndarray of shape (n_chunks,), int64, where each chunk lies in the file
    check_end : bool, whether a chunk must end with the JPEG end-of-image marker
    standard : callable, stored samples to what :func:`convert` takes (see :func:`_sample_rule`)
    """

    page: Any
    kind: str
    shape: tuple[int, ...]
    chunk: tuple[int, ...]
    across: int
    offsets: np.ndarray
    counts: np.ndarray
    check_end: bool
    standard: Callable[[np.ndarray], np.ndarray]

    def name(self, index: int) -> str:
        """How a message names chunk ``index``: ``tile 12 (row 1, col 4)`` or ``strip 3``."""
        if self.kind == "strip":
            return f"strip {index}"
        return f"tile {index} (row {index // self.across}, col {index % self.across})"


def _page_size(page: Any) -> tuple[int, int]:
    return int(page.imagelength), int(page.imagewidth)


def _chunk_table(path: Path, level: int, page: Any) -> _Chunks:
    """Level ``level``'s chunk table, refused in one line where it cannot give the claimed pixels."""
    height, width = _page_size(page)
    where = f"{path}: level {level}"
    if height <= 0 or width <= 0:
        raise SourceError(
            f"{path}: level {level} is empty ({width} x {height} pixels); re-export the slide"
        )
    if page.planarconfig == 2:  # samples stored plane by plane
        raise SourceError(
            f"{path}: samples are stored in separate planes, which patchpack does not "
            f"read; re-save it with contiguous samples (tifffile planarconfig='contig')"
        )
    if int(page.imagedepth) > 1:
        raise SourceError(
            f"{where}: a volume of {page.imagedepth} planes; patchpack reads 2-D images, so save "
            f"one plane per page"
        )
    kind = "tile" if page.is_tiled else "strip"
    chunk = tuple(int(side) for side in page.chunks)
    if chunk[0] <= 0 or chunk[1] <= 0:
        raise SourceError(
            f"{where}: {kind}s of {chunk[1]} x {chunk[0]} pixels; re-export the slide"
        )
    across = math.ceil(width / chunk[1])
    needed = math.ceil(height / chunk[0]) * across
    offsets = np.asarray(page.dataoffsets, dtype=np.int64)
    counts = np.asarray(page.databytecounts, dtype=np.int64)
    listed = min(len(offsets), len(counts))
    if listed < needed:
        raise SourceError(
            f"{where}: the header says {width:,} x {height:,} pixels, which takes {needed:,} {kind}s "
            f"of {chunk[1]} x {chunk[0]}, but the {kind} table lists {listed:,}; re-export the slide"
        )
    table = _Chunks(
        page=page,
        kind=kind,
        shape=tuple(int(side) for side in page.shape),
        chunk=chunk,
        across=across,
        offsets=offsets[:needed],
        counts=counts[:needed],
        check_end=int(page.compression) in _JPEG_COMPRESSIONS,
        standard=_sample_rule(where, page),
    )
    _check_in_file(where, table, int(page.parent.filehandle.size))
    return table


def _check_in_file(where: str, table: _Chunks, size: int) -> None:
    """Refuse the first chunk with no data (offset or byte count 0) or not wholly in the file."""
    empty = (table.offsets <= 0) | (table.counts <= 0)
    outside = table.offsets + table.counts > size
    bad = np.flatnonzero(empty | outside)
    if not bad.size:
        return
    index = int(bad[0])
    offset, count = int(table.offsets[index]), int(table.counts[index])
    if empty[index]:
        raise SourceError(
            f"{where}: {table.name(index)} has no data (offset {offset}, {count:,} bytes); "
            f"re-export the slide"
        )
    present = min(count, max(0, size - offset))
    raise SourceError(
        f"{where}: {table.name(index)} is truncated ({present:,} of {count:,} bytes in the file); "
        f"re-export the slide"
    )


def _as_stored(samples: np.ndarray) -> np.ndarray:
    return samples


def _sample_rule(where: str, page: Any) -> Callable[[np.ndarray], np.ndarray]:
    """How a level's stored samples become gray or RGB (with any alpha) for :func:`convert`, as
    Pillow reads the same samples from a file in strips (see the module docstring)."""
    photometric = int(page.photometric)
    if photometric in (0, 1):  # MINISWHITE, MINISBLACK
        return _gray_rule(int(page.bitspersample), inverted=photometric == 0)
    if photometric == 2:  # RGB
        return _as_stored
    if photometric == 3:
        return _palette_rule(where, page)
    if photometric == 5:
        return _cmyk_rule(where, page)
    if photometric == 6 and int(page.compression) in _JPEG_COMPRESSIONS and not page.extrasamples:
        return _as_stored  # libjpeg decodes YCbCr tiles to RGB (tifffile asks it to)
    name = "YCBCR without JPEG tiles" if photometric == 6 else _photometric_name(photometric)
    raise SourceError(
        f"{where}: photometric {name} is not read by the tiled reader (it reads gray, RGB, "
        f"palette, CMYK and JPEG-coded YCbCr); convert the slide to RGB"
    )


def _photometric_name(value: int) -> str:
    import tifffile

    try:
        return str(tifffile.PHOTOMETRIC(value).name)
    except ValueError:
        return str(value)


def _gray_rule(bits: int, *, inverted: bool) -> Callable[[np.ndarray], np.ndarray]:
    """Gray as Pillow unpacks it: 1-, 2- and 4-bit values spread over 0..255 (``1``, ``L;2``,
    ``L;4``), MINISWHITE inverted at up to 8 bits (``1;I``, ``L;2I``, ``L;4I``, ``L;I``); Pillow
    reads 16-bit MINISWHITE as stored (``I;16``), and so does this."""
    if bits in (1, 2, 4):
        scale = np.uint8(255 // (2**bits - 1))

        def spread(samples: np.ndarray) -> np.ndarray:
            wide: np.ndarray = samples.astype(np.uint8) * scale
            return np.uint8(255) - wide if inverted else wide

        return spread
    if bits == 8 and inverted:

        def invert(samples: np.ndarray) -> np.ndarray:
            flipped: np.ndarray = np.uint8(255) - samples
            return flipped

        return invert
    return _as_stored


def _palette_rule(where: str, page: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Indices expanded through the colormap, each 16-bit entry's high byte, as Pillow does."""
    if page.colormap is None:
        raise SourceError(f"{where}: a palette image without a colormap; re-export the slide")
    colours = (np.asarray(page.colormap, dtype=np.uint16).reshape(3, -1) >> 8).astype(np.uint8).T
    size = max(2 ** int(page.bitspersample), len(colours))
    lookup = np.zeros((size, 3), np.uint8)  # a colormap short of 2**bits entries: the rest black
    lookup[: len(colours)] = colours

    def expand(samples: np.ndarray) -> np.ndarray:
        indices = samples[:, :, 0] if samples.ndim == 3 else samples  # alpha dropped
        rgb: np.ndarray = lookup[indices]
        return rgb

    return expand


def _cmyk_rule(where: str, page: Any) -> Callable[[np.ndarray], np.ndarray]:
    """CMYK to RGB by Pillow's own ``convert("RGB")``, the formula its strip path applies."""
    inks = int(page.samplesperpixel) - len(page.extrasamples)
    inkset = page.tags.valueof(332, 1)  # InkSet: 1 is CMYK
    if inks != 4 or inkset != 1:
        raise SourceError(
            f"{where}: photometric SEPARATED with {inks} inks (InkSet {inkset}); patchpack reads "
            f"CMYK only, so convert the slide to RGB"
        )

    def to_rgb(samples: np.ndarray) -> np.ndarray:
        cmyk = samples[:, :, :4]
        if cmyk.dtype != np.uint8:
            cmyk = (np.clip(cmyk.astype(np.int64), 0, 65535) >> 8).astype(np.uint8)
        height, width = cmyk.shape[:2]
        image = Image.frombytes("CMYK", (width, height), np.ascontiguousarray(cmyk).tobytes())
        return np.asarray(image.convert("RGB"), dtype=np.uint8)

    return to_rgb
