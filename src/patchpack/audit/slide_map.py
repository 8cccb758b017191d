"""Slide maps: a source's thumbnail with its tissue mask outlined and its patches coloured by split.

This is the picture to look at first on a slide: whether the mask found the tissue, and where each
split's patches lie. The thumbnail is read from the source (the lowest pyramid level at least
``THUMB_SIDE`` pixels on its longer side, scaled down to it); the mask and the patch positions come
from the dataset, so the map shows exactly what was extracted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from patchpack.dataset.io import atomic_output
from patchpack.dataset.manifest import Manifest
from patchpack.dataset.readers import open_reader, smallest_level_at_least
from patchpack.dataset.shards import read_shard
from patchpack.dataset.sources import SourceRecord
from patchpack.errors import SourceError

THUMB_SIDE = 1024
COLOURS = {"train": (31, 119, 180), "val": (255, 127, 14), "test": (44, 160, 44)}
OUTLINE = (20, 20, 20)


def thumbnail(path: Path, record: SourceRecord) -> tuple[Image.Image, float]:
    """An RGB thumbnail of the source, at most ``THUMB_SIDE`` on its longer side, and its downsample."""
    if record.backend == "pillow":
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        level_image, level_downsample = rgb, 1.0
    else:
        with open_reader(path, channels=3, max_megapixels=1e6, backend=record.backend) as reader:
            index = smallest_level_at_least(reader.levels, THUMB_SIDE)
            level = reader.levels[index]
            pixels = reader.read(index, 0, 0, level.height, level.width)
        level_image, level_downsample = Image.fromarray(pixels), level.downsample
    scale = max(1.0, max(level_image.size) / THUMB_SIDE)
    size = (max(1, round(level_image.width / scale)), max(1, round(level_image.height / scale)))
    return level_image.resize(size, Image.Resampling.BOX), level_downsample * scale


def _outline(mask: np.ndarray) -> np.ndarray:
    """The border pixels of a boolean mask (set, with a neighbour unset)."""
    padded = np.pad(mask, 1)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    border: np.ndarray = mask & ~interior
    return border


def slide_map(manifest: Manifest, record: SourceRecord, source: Path, out: Path) -> Path:
    """Write the map of ``record`` (whose file is ``source``) to the PNG ``out``; return ``out``."""
    if not source.is_file():
        raise SourceError(f"{source}: source image not found; pass --source with the image folder")
    thumb, downsample = thumbnail(source, record)
    canvas = thumb.convert("RGB")
    roi = manifest.roi_path(record)
    if roi is not None and roi.is_file():
        with Image.open(roi) as mask_image:
            mask = mask_image.convert("L").resize(canvas.size, Image.Resampling.NEAREST)
        border = _outline(np.asarray(mask) > 0)
        pixels = np.asarray(canvas).copy()
        pixels[border] = OUTLINE
        canvas = Image.fromarray(pixels)
    draw = ImageDraw.Draw(canvas)
    side = manifest.patch_size * record.downsample / downsample
    for entry in manifest.shards:
        data = read_shard(manifest.shard_path(entry), manifest.layout(entry))
        rows = [r for r in range(len(data)) if data.source_of(r) == record.id]
        for row in rows:
            y, x = (float(v) / downsample for v in data.coords[row])
            draw.rectangle([x, y, x + side, y + side], outline=COLOURS[entry.split])
    with atomic_output(out) as tmp:
        canvas.save(tmp, format="PNG")
    return out
