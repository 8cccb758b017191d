"""A synthetic image whose labelled regions are known exactly, as GeoJSON and as label rasters.

The image is ``SIDE`` x ``SIDE`` textured RGB. Its regions, in level-0 pixel coordinates:

* ``tumour``: the left half, ``x < 128``;
* ``stroma``: the top right quarter, ``x >= 128 and y < 128``;
* ``necrosis``: the triangle ``x >= 128, y >= 128, (x - 128) + (y - 128) < 128`` (under the diagonal);

the rest (the far corner of the bottom right quarter) is unlabelled.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from support.images import textured

SIDE = 256
CLASSES = ["tumour", "stroma", "necrosis"]


def class_at(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The class number (1..3, 0 = none) at level-0 points, from the definition above."""
    y, x = np.broadcast_arrays(np.asarray(y, np.float64), np.asarray(x, np.float64))
    number = np.zeros(y.shape, np.int64)
    number[x < 128] = 1
    number[(x >= 128) & (y < 128)] = 2
    number[(x >= 128) & (y >= 128) & ((x - 128) + (y - 128) < 128)] = 3
    return number


def features(scale: int = 1) -> list[dict[str, object]]:
    """The regions as QuPath exports them: one Feature per region, classified by name."""
    shapes = {
        "tumour": [[0, 0], [128, 0], [128, 256], [0, 256], [0, 0]],
        "stroma": [[128, 0], [256, 0], [256, 128], [128, 128], [128, 0]],
        "necrosis": [[128, 128], [256, 128], [128, 256], [128, 128]],
    }
    shapes = {name: [[x * scale, y * scale] for x, y in ring] for name, ring in shapes.items()}
    return [
        {
            "type": "Feature",
            "id": f"region-{i}",
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {
                "objectType": "annotation",
                "classification": {"name": name, "color": [200, 0, 0]},
            },
        }
        for i, (name, ring) in enumerate(shapes.items())
    ]


def raster(downsample: int = 1, scale: int = 1) -> np.ndarray:
    """The regions as class numbers under each raster pixel's centre, uint8, of
    (SIDE * scale / downsample) pixels a side."""
    centres = (np.arange(SIDE * scale // downsample) + 0.5) * downsample / scale
    return class_at(centres[:, None], centres[None, :]).astype(np.uint8)


def write_labelled(
    root: Path, *, kinds: tuple[str, ...] = ("annotations",), downsample: int = 1, scale: int = 1
) -> tuple[Path, Path]:
    """Write ``root/images/scan/a.png`` (textured) and its labels under ``root/labels/scan/``.

    ``kinds`` chooses what is written: ``annotations`` (``a.geojson``), ``mask`` (``a.png``, a
    palette raster at ``downsample``). ``scale`` magnifies the image and its regions (an image of
    ``SIDE * scale`` pixels; :func:`class_at` then takes coordinates divided by ``scale``).
    Returns ``(images folder, labels folder)``.
    """
    images, labels = root / "images", root / "labels"
    (images / "scan").mkdir(parents=True, exist_ok=True)
    (labels / "scan").mkdir(parents=True, exist_ok=True)
    pixels = textured(np.random.default_rng(3), SIDE * scale, SIDE * scale, 3, tone=100)
    Image.fromarray(pixels).save(images / "scan" / "a.png")
    if "annotations" in kinds:
        document = {"type": "FeatureCollection", "features": features(scale)}
        (labels / "scan" / "a.geojson").write_text(json.dumps(document), encoding="utf-8")
    if "mask" in kinds:
        image = Image.fromarray(raster(downsample, scale)).convert("P")
        image.putpalette([0, 0, 0, 200, 0, 0, 0, 160, 0, 0, 0, 200] + [0] * (256 - 4) * 3)
        image.save(labels / "scan" / "a.png")
    return images, labels
