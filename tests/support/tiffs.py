"""TIFFs for the reader tests: the same pixels tiled and in strips, and surgery on a file's tags.

tifffile writes every file here in the test itself; :func:`set_tag` then changes one tag's stored
values in place, which is how the broken files users meet (a truncated tile table, a header that
claims a size its tiles cannot cover, a zero-sized level) are made without a second writer.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import tifffile

# TIFF field types tifffile reports as ``tag.dtype``, and their struct codes (little-endian files)
_FORMATS = {3: "H", 4: "I", 16: "Q"}


def write_tiled(path: Path, pixels: np.ndarray, *, tile: int = 16, **options: object) -> Path:
    """``pixels`` as a tiled TIFF (tiles of ``tile`` x ``tile``), which the tifffile backend reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, pixels, tile=(tile, tile), metadata=None, **options)  # type: ignore[arg-type]
    return path


def write_strips(path: Path, pixels: np.ndarray, **options: object) -> Path:
    """``pixels`` as a small untiled TIFF in strips, which the Pillow backend reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, pixels, rowsperstrip=8, metadata=None, **options)  # type: ignore[arg-type]
    return path


def write_levels(path: Path, pixels: np.ndarray, *, levels: int, tile: int = 16) -> Path:
    """A tiled RGB OME-TIFF pyramid, reduced levels (2x each) in SubIFDs, as OME writers lay it out
    (tifffile keeps every level of an OME series, even one a tag edit made empty)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tifffile.TiffWriter(path, ome=True) as tif:
        for index in range(levels):
            tif.write(
                pixels[:: 2**index, :: 2**index],
                tile=(tile, tile),
                photometric="rgb",
                subifds=levels - 1 if index == 0 else None,
                subfiletype=1 if index else 0,
            )
    return path


def write_svs(path: Path, pixels: np.ndarray, mpp: str) -> Path:
    """A tiled RGB TIFF with an Aperio SVS ImageDescription whose ``MPP =`` field is ``mpp``."""
    height, width = pixels.shape[:2]
    description = (
        f"Aperio Image Library v12.0.5\r\n{width}x{height} [0,0 {width}x{height}] (16x16) "
        f"JPEG/RGB Q=70|AppMag = 20|MPP = {mpp}|Filename = test"
    )
    return write_tiled(path, pixels, photometric="rgb", description=description)


def tag_values(path: Path, name: str, *, page: int = 0, subifd: int | None = None) -> list[int]:
    """The stored values of tag ``name`` of a page (or of its SubIFD ``subifd``)."""
    with tifffile.TiffFile(path) as tif:
        found = tif.pages[page]
        if subifd is not None:
            found = found.pages[subifd]  # type: ignore[union-attr]
        value = found.tags[name].value  # type: ignore[union-attr]
    return list(value) if isinstance(value, tuple | list) else [int(value)]


def set_tag(
    path: Path, name: str, values: list[int], *, page: int = 0, subifd: int | None = None
) -> None:
    """Overwrite the stored values of tag ``name`` in place (as many as ``values`` holds)."""
    with tifffile.TiffFile(path) as tif:
        assert tif.byteorder == "<"
        found = tif.pages[page]
        if subifd is not None:
            found = found.pages[subifd]  # type: ignore[union-attr]
        tag = found.tags[name]  # type: ignore[union-attr]
        code = _FORMATS[int(tag.dtype)]
        where, count = tag.valueoffset, tag.count
    assert len(values) <= count, (name, count)
    data = bytearray(path.read_bytes())
    packed = struct.pack(f"<{len(values)}{code}", *values)
    data[where : where + len(packed)] = packed
    path.write_bytes(bytes(data))


def random_image(height: int, width: int, samples: int, seed: int = 0) -> np.ndarray:
    """Smooth shapes plus noise (so lossy codecs have something real to code), uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    planes = [
        127
        + 100 * np.sin(xx / (5.0 + 3 * k)) * np.cos(yy / (7.0 + 2 * k))
        + rng.normal(0, 12, (height, width))
        for k in range(samples)
    ]
    image = np.clip(np.stack(planes, axis=-1), 0, 255).astype(np.uint8)
    return image[:, :, 0] if samples == 1 else image
