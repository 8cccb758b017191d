"""Tiny real image folders for tests: textured PNG/JPEG/TIFF files, one subfolder per class."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from patchpack.params import Params, params_from_dict


def textured(
    rng: np.random.Generator, height: int, width: int, channels: int, tone: int
) -> np.ndarray:
    """A noisy, smoothly varying image of shape (height, width, channels), uint8."""
    yy, xx = np.mgrid[0:height, 0:width]
    base = tone + 40 * np.sin(xx / (5 + tone % 7)) + 30 * np.cos(yy / (3 + tone % 5))
    noise = rng.normal(0, 12, size=(height, width, channels))
    return np.clip(base[:, :, None] + noise, 0, 255).astype(np.uint8)


def make_folder(
    root: Path,
    *,
    classes: int = 3,
    per_class: int = 2,
    size: tuple[int, int] = (96, 128),
    seed: int = 0,
    channels: int = 3,
) -> Path:
    """Write ``classes`` x ``per_class`` PNG images under ``root/class_k/img_j.png``; return ``root``."""
    rng = np.random.default_rng(seed)
    for k in range(classes):
        folder = root / f"class_{k}"
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            pixels = textured(rng, size[0], size[1], channels, tone=60 + 40 * k + 7 * j)
            image = Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels)
            image.save(folder / f"img_{j}.png")
    return root


def copy_reversed(src: Path, dst: Path) -> Path:
    """Copy a folder file by file in reverse sorted order (other creation order, inodes, mtimes)."""
    files = sorted(path for path in src.rglob("*") if path.is_file())
    for path in reversed(files):
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return dst


SMALL = {
    "base": {"seed": 7},
    "source": {"dir": "images", "channels": 1},
    "extract": {"patch_size": 16, "per_image": 30, "per_class": None, "min_std": 0.0},
    "split": {
        "mode": "region",
        "fractions": {"train": 0.6, "val": 0.2, "test": 0.2},
        "block_size": 24,
    },
    "shards": {"target_patches": 40, "chunk_patches": 16, "compression": "zstd", "level": 3},
}


def small_raw(source: Path, **sections: dict[str, object]) -> dict[str, dict[str, object]]:
    """SMALL params (a plain mapping) reading ``source``, each given section updated key by key."""
    raw = {name: dict(value) for name, value in SMALL.items()}
    raw["source"]["dir"] = str(source)
    for name, update in sections.items():
        raw[name] = {**raw.get(name, {}), **update}
    return raw


def small_params(source: Path, **sections: dict[str, object]) -> Params:
    """:func:`small_raw`, validated."""
    return params_from_dict(small_raw(source, **sections))


def write_params(path: Path, source: Path, **sections: dict[str, object]) -> Path:
    """Write :func:`small_raw` as a params.yaml at ``path``."""
    path.write_text(yaml.safe_dump(small_raw(source, **sections), sort_keys=True), encoding="utf-8")
    return path
