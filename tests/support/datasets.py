"""Tiny extracted datasets for loader, training and evaluation tests, written without the extractor.

The layout and manifest follow what ``patchpack extract`` writes: ``<folder>/manifest.json`` and
``<folder>/<split>/shard-NNNNN.h5``. Patches of class k are noise around a class-specific tone, so a
model can learn them in an epoch; the first two pixels of every patch hold the patch's serial number
within its split (little-endian), so tests can check which patches a batch holds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from patchpack.dataset.manifest import Manifest, ShardEntry, SplitCount
from patchpack.dataset.shards import FORMAT_VERSION, ShardData, shard_name, write_shard
from patchpack.params import DatasetParams, ExtractParams, ShardParams


def tone_patches(
    rng: np.random.Generator, labels: np.ndarray, patch_size: int, channels: int, classes: int
) -> np.ndarray:
    """Patches of shape (n, patch_size, patch_size, channels), uint8, brighter for higher labels."""
    tones = 30 + 190 * labels / max(1, classes - 1)
    noise = rng.normal(0, 12, size=(len(labels), patch_size, patch_size, channels))
    return np.clip(tones[:, None, None, None] + noise, 0, 255).astype(np.uint8)


def patch_ids(images: np.ndarray) -> np.ndarray:
    """The serial numbers stored in the first two pixels of each patch, int64 of shape (n,)."""
    flat = images.reshape(len(images), -1)
    return flat[:, 0].astype(np.int64) + 256 * flat[:, 1].astype(np.int64)


def make_dataset(
    folder: Path,
    *,
    sizes: dict[str, list[int]] | None = None,
    classes: int = 3,
    patch_size: int = 32,
    channels: int = 1,
    chunk_patches: int = 8,
    seed: int = 0,
    compression: str = "gzip",
) -> Path:
    """Write a dataset with shards of ``sizes[split]`` patches each; return ``folder``.

    Default sizes: train 3 shards (40, 25, 31), val 1 shard of 20, test 2 shards (12, 9).
    """
    if sizes is None:
        sizes = {"train": [40, 25, 31], "val": [20], "test": [12, 9]}
    rng = np.random.default_rng(seed)
    class_names = [f"class_{k}" for k in range(classes)]
    level = {"zstd": 3, "gzip": 4, "none": 0}[compression]
    params = DatasetParams(
        seed=seed,
        channels=channels,
        extract=ExtractParams(patch_size=patch_size, per_image=10),
        shards=ShardParams(
            target_patches=32, chunk_patches=chunk_patches, compression=compression, level=level
        ),
    )
    entries = []
    counts: dict[str, SplitCount] = {}
    index = 0
    for split in ("train", "val", "test"):
        serial = 0
        per_class = dict.fromkeys(class_names, 0)
        for n in sizes.get(split, []):
            labels = (np.arange(n) % classes).astype(np.int32)
            images = tone_patches(rng, labels, patch_size, channels, classes)
            flat = images.reshape(n, -1)
            ids = np.arange(serial, serial + n)
            flat[:, 0], flat[:, 1] = ids % 256, ids // 256
            serial += n
            for label in labels:
                per_class[class_names[label]] += 1
            sources = tuple(f"{class_names[k]}/img_{index}.png" for k in range(classes))
            data = ShardData(
                images=images,
                labels=labels,
                sources=sources,
                source_index=labels.copy(),
                patch_index=np.arange(n, dtype=np.int32),
                coords=np.zeros((n, 2), np.int32),
                attrs={
                    "format_version": FORMAT_VERSION,
                    "class_names": list(class_names),
                    "split": split,
                    "patch_size": patch_size,
                    "channels": channels,
                },
            )
            relative = f"{split}/{shard_name(index)}"
            write_shard(
                folder / relative,
                data,
                chunk_patches=chunk_patches,
                compression=compression,
                level=level,
            )
            entries.append(ShardEntry.of(relative, split, folder / relative, data))
            index += 1
        counts[split] = SplitCount(total=serial, per_class=per_class)
    manifest = Manifest.create(
        class_names=class_names, params=params, sources=[], counts=counts, shards=entries
    )
    manifest.write(folder)
    return folder
