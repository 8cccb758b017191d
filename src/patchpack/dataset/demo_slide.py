"""The demo slide: a real pyramidal, JPEG-tiled BigTIFF built offline from the demo photographs.

The eight photographs shipped with scikit-image are tinted like stained tissue and laid out on a white
background on a 3x3 grid with one empty cell, each magnified (nearest neighbour) to fill about 80% of
its cell, so tissue detection has background to reject. Every level is computed tile by tile from the photographs (nearest neighbour),
never as a whole image, so writing a 20,000 x 20,000 slide needs only a few tiles of memory. The file
records its resolution (``MPP_LEVEL0`` microns per pixel, as TIFF resolution tags) so ``source.mpp``
can choose a level.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from patchpack.dataset.io import atomic_output
from patchpack.errors import SourceError

TILE = 512
MPP_LEVEL0 = 0.25
REDUCED_LEVELS = 4
# Stain-like tint: dark gray becomes purple, light gray pink, white stays white.
_TINT = np.array([0.35, 0.75, 0.45])


def tinted_photographs(folder: Path, names: list[str], side: int = 256) -> list[np.ndarray]:
    """Each photograph centre-cropped to ``side`` x ``side`` gray, tinted: (side, side, 3) uint8."""
    tinted = []
    for name in names:
        with Image.open(folder / name) as image:
            gray = np.asarray(image.convert("L"), dtype=np.float64)
        top, left = (gray.shape[0] - side) // 2, (gray.shape[1] - side) // 2
        if top < 0 or left < 0:
            raise SourceError(f"{folder / name}: smaller than {side}x{side}; cannot place it")
        crop = gray[top : top + side, left : left + side]
        colour = 255.0 - (255.0 - crop[:, :, None]) * _TINT[None, None, :]
        tinted.append(np.round(colour).astype(np.uint8))
    return tinted


class Mosaic:
    """The slide as a function of level-0 coordinates: photographs on a white 3x3 grid."""

    def __init__(self, photographs: list[np.ndarray], side: int) -> None:
        self.photographs = photographs
        self.side = side
        self.cell = side // 3
        self.magnify = max(1, int(self.cell * 0.8) // photographs[0].shape[0])
        self.extent = photographs[0].shape[0] * self.magnify
        if self.extent > self.cell:
            raise SourceError(
                f"the demo slide must be at least {3 * self.extent} pixels wide (received {side})"
            )

    def tile(self, level: int, row: int, col: int) -> np.ndarray:
        """Tile (row, col) of ``level``, (TILE, TILE, 3) uint8; edge tiles are padded white."""
        scale = 2**level
        ys = (np.arange(row * TILE, (row + 1) * TILE) * scale)[:, None]
        xs = (np.arange(col * TILE, (col + 1) * TILE) * scale)[None, :]
        out = np.full((TILE, TILE, 3), 255, np.uint8)
        cell_y, cell_x = ys // self.cell, xs // self.cell
        offset = (self.cell - self.extent) // 2
        inside_y = (ys % self.cell) - offset
        inside_x = (xs % self.cell) - offset
        for number, photograph in enumerate(self.photographs):
            grid_y, grid_x = divmod(
                number if number < 4 else number + 1, 3
            )  # the centre stays empty
            hit = (
                (cell_y == grid_y)
                & (cell_x == grid_x)
                & (inside_y >= 0)
                & (inside_y < self.extent)
                & (inside_x >= 0)
                & (inside_x < self.extent)
                & (ys < self.side)
                & (xs < self.side)
            )
            if hit.any():
                py = np.clip(inside_y // self.magnify, 0, photograph.shape[0] - 1)
                px = np.clip(inside_x // self.magnify, 0, photograph.shape[1] - 1)
                pixels = photograph[np.broadcast_to(py, hit.shape), np.broadcast_to(px, hit.shape)]
                out[hit] = pixels[hit]
        return out

    def tiles(self, level: int) -> Iterator[np.ndarray]:
        size = -(-self.side // 2**level)
        count = -(-size // TILE)
        for row in range(count):
            for col in range(count):
                yield self.tile(level, row, col)


def write_demo_slide(path: Path, photographs: list[np.ndarray], *, side: int) -> Path:
    """Write the pyramidal BigTIFF (level 0 of ``side`` x ``side``, then halves) atomically."""
    import tifffile

    mosaic = Mosaic(photographs, side)
    options: dict[str, Any] = {
        "photometric": "rgb",
        "tile": (TILE, TILE),
        "compression": "jpeg",
        "compressionargs": {"level": 90},
        "resolutionunit": "CENTIMETER",
        "metadata": None,
    }
    with atomic_output(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        for level in range(REDUCED_LEVELS + 1):
            size = -(-side // 2**level)
            pixels_per_cm = 1e4 / (MPP_LEVEL0 * 2**level)
            tif.write(
                mosaic.tiles(level),
                shape=(size, size, 3),
                dtype=np.uint8,
                resolution=(pixels_per_cm, pixels_per_cm),
                subifds=REDUCED_LEVELS if level == 0 else None,
                subfiletype=1 if level else 0,
                **options,
            )
    return path
