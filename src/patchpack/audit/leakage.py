"""The leakage audit: no source image (split mode ``image``) or no pixel (mode ``region``) in two splits.

It needs only provenance (each shard's sources and patch coordinates), never pixels. Coordinates are
stored in level-0 pixels, and a patch cut at a pyramid level of downsample ``d`` covers
``patch_size * d`` of them; the audit compares patches at their source's sampled level (level-0
coordinates divided by ``d`` and rounded, which undoes the rounding that stored them), where a patch
is a square of ``patch_size`` pixels: two squares share a pixel exactly when both of their corners
are less than ``patch_size`` apart.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from patchpack.dataset.manifest import Manifest
from patchpack.dataset.shards import ShardData


def audit_note(mode: str) -> str:
    return {
        "image": "leakage audit: no source image in two splits",
        "region": "leakage audit: no pixel of any source in two splits",
        "patch": "leakage audit: split mode 'patch' is leaky by design; splits may share pixels",
    }[mode]


def audit_leakage(manifest: Manifest, shards: list[ShardData]) -> list[str]:
    """Problems found: a source in two splits (mode image) or a pixel in two splits (mode region)."""
    mode = manifest.params.split.mode
    if mode == "patch":
        return []
    size = manifest.patch_size
    downsample = {record.id: record.downsample for record in manifest.sources}
    rects: dict[str, dict[str, list[np.ndarray]]] = defaultdict(lambda: defaultdict(list))
    for data in shards:
        split = str(data.attrs["split"])
        for number, source in enumerate(data.sources):
            rects[source][split].append(data.coords[data.source_index == number])
    problems = []
    for source in sorted(rects):
        splits = sorted(rects[source])
        if mode == "image" and len(splits) > 1:
            problems.append(f"leakage: source {source} has patches in {', '.join(splits)}")
            continue
        for i, first in enumerate(splits):
            for second in splits[i + 1 :]:
                scale = downsample.get(source, 1.0)
                hit = _overlap(
                    np.concatenate(rects[source][first]),
                    np.concatenate(rects[source][second]),
                    size,
                    scale,
                )
                if hit is not None:
                    (ay, ax), (by, bx) = hit
                    problems.append(
                        f"leakage: source {source}: {first} patch at y={ay}, x={ax} overlaps "
                        f"{second} patch at y={by}, x={bx}"
                    )
    return problems


def _overlap(
    a: np.ndarray, b: np.ndarray, size: int, downsample: float = 1.0, chunk: int = 2048
) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The first pair of patches (level-0 top-left corners ``a`` and ``b``, each of shape (n, 2)) that
    share a pixel, when each covers ``size`` pixels of a level ``downsample`` times coarser than
    level 0; returned as level-0 corners."""
    level_a = np.round(a / downsample).astype(np.int64)
    level_b = np.round(b / downsample).astype(np.int64)
    for start in range(0, len(a), chunk):
        part = level_a[start : start + chunk]
        close = (np.abs(part[:, None, 0] - level_b[None, :, 0]) < size) & (
            np.abs(part[:, None, 1] - level_b[None, :, 1]) < size
        )
        if close.any():
            i, j = np.argwhere(close)[0]
            i += start
            return (int(a[i, 0]), int(a[i, 1])), (int(b[j, 0]), int(b[j, 1]))
    return None
