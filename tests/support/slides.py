"""Small pyramidal TIFFs written with tifffile in the tests themselves: tiled, with reduced levels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile


def tissue_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """White background with a textured purple block in the middle half: (height, width, 3) uint8."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 255, np.uint8)
    y0, y1, x0, x1 = height // 4, 3 * height // 4, width // 4, 3 * width // 4
    yy, xx = np.mgrid[y0:y1, x0:x1]
    base = 120 + 40 * np.sin(xx / 7.0) * np.cos(yy / 5.0)
    noise = rng.normal(0, 15, size=base.shape)
    tone = np.clip(base + noise, 0, 255)
    image[y0:y1, x0:x1] = np.stack([tone + 60, tone - 40, tone + 30], axis=-1).clip(0, 255)
    return image


def write_pyramid(
    path: Path,
    pixels: np.ndarray,
    *,
    levels: int = 3,
    tile: int = 64,
    compression: str = "zlib",
    mpp: float | None = 0.5,
    subifds: bool = True,
) -> Path:
    """Write ``pixels`` as a tiled TIFF with ``levels - 1`` reduced levels (2x each, by striding).

    The reduced levels go to SubIFDs (as OME-TIFF does), or with ``subifds=False`` to pages of their
    own (the generic pyramid OpenSlide reads).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    options: dict[str, object] = {"tile": (tile, tile), "compression": compression}
    if pixels.ndim == 3:
        options["photometric"] = "rgb"
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        level = pixels
        for index in range(levels):
            if mpp is not None:
                per_cm = 1e4 / (mpp * 2**index)
                options["resolution"] = (per_cm, per_cm)
                options["resolutionunit"] = "CENTIMETER"
            tif.write(
                level,
                subifds=levels - 1 if index == 0 and subifds else None,
                subfiletype=1 if index else 0,
                **options,  # type: ignore[arg-type]
            )
            level = level[::2, ::2]
    return path
