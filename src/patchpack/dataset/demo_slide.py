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


# The demo labels: each photograph's square is one region, classified by the photograph's name and
# snapped inward to multiples of LABEL_DOWNSAMPLE, so the label raster (one pixel per
# LABEL_DOWNSAMPLE x LABEL_DOWNSAMPLE level-0 pixels) draws exactly the regions the GeoJSON describes.
LABEL_DOWNSAMPLE = 16


def demo_regions(side: int, count: int) -> list[tuple[int, int, int, int]]:
    """Level-0 ``(x0, y0, x1, y1)`` of each photograph's labelled square on a ``side`` slide."""
    cell = side // 3
    magnify = max(1, int(cell * 0.8) // 256)
    extent = 256 * magnify
    offset = (cell - extent) // 2
    step = LABEL_DOWNSAMPLE
    regions = []
    for number in range(count):
        grid_y, grid_x = divmod(number if number < 4 else number + 1, 3)
        x0, y0 = grid_x * cell + offset, grid_y * cell + offset
        regions.append(
            (-(-x0 // step) * step, -(-y0 // step) * step,
             (x0 + extent) // step * step, (y0 + extent) // step * step)
        )  # fmt: skip
    return regions


def demo_geojson(names: list[str], side: int) -> dict[str, Any]:
    """The regions as QuPath exports annotations: a FeatureCollection of classified polygons."""
    features = []
    for number, (name, (x0, y0, x1, y1)) in enumerate(
        zip(names, demo_regions(side, len(names)), strict=True)
    ):
        ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
        features.append(
            {
                "type": "Feature",
                "id": f"demo-region-{number}",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": name, "color": [160, 60 + 20 * number, 120]},
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def demo_raster(names: list[str], side: int) -> np.ndarray:
    """The same regions as class numbers (1..K, 0 = none), one pixel per ``LABEL_DOWNSAMPLE``."""
    size = -(-side // LABEL_DOWNSAMPLE)
    raster = np.zeros((size, size), np.uint8)
    for number, (x0, y0, x1, y1) in enumerate(demo_regions(side, len(names)), start=1):
        step = LABEL_DOWNSAMPLE
        raster[y0 // step : y1 // step, x0 // step : x1 // step] = number
    return raster


def write_demo_labels(folder: Path, names: list[str], *, side: int) -> list[Path]:
    """Write ``folder/demo/slide.geojson`` and ``folder/demo/slide.png`` (a palette raster)."""
    import json

    geojson = folder / "demo" / "slide.geojson"
    with atomic_output(geojson) as tmp:
        tmp.write_text(json.dumps(demo_geojson(names, side), indent=1) + "\n", encoding="utf-8")
    png = folder / "demo" / "slide.png"
    image = Image.fromarray(demo_raster(names, side)).convert("P")
    palette = [0, 0, 0] + [
        channel for n in range(len(names)) for channel in (160, 60 + 20 * n, 120)
    ]
    image.putpalette(palette + [0] * (768 - len(palette)))
    with atomic_output(png) as tmp:
        image.save(tmp, format="PNG", optimize=False)
    return [geojson, png]
