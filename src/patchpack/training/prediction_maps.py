"""Prediction maps: for a grid-sampled dataset, each test source's predicted classes, stitched.

Every test patch's class probabilities are spread over its footprint on a coarse canvas (one cell per
``extract.stride`` pixels of the sampled level; overlapping patches are averaged), and each covered
cell takes the colour of its most probable class; cells no test patch covers stay white. Only
test-split patches are drawn, so a map never shows a model's training data as if it were a result.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from patchpack.dataset.io import atomic_output
from patchpack.dataset.manifest import Manifest
from patchpack.dataset.shards import read_shard

# tab10, the matplotlib default cycle: distinct for up to ten classes, then repeating
PALETTE = np.array(
    [
        (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
        (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    ],
    np.uint8,
)  # fmt: skip


def test_provenance(manifest: Manifest) -> tuple[list[str], np.ndarray]:
    """The source id and level-0 corner of every test patch, in the loader's canonical order."""
    ids: list[str] = []
    corners = []
    for entry in manifest.shards_for("test"):
        data = read_shard(manifest.shard_path(entry), manifest.layout(entry))
        ids += data.source_rows()
        corners.append(data.coords)
    return ids, (np.concatenate(corners) if corners else np.empty((0, 2), np.int32))


def write_maps(manifest: Manifest, probabilities: np.ndarray, out_dir: Path) -> list[Path]:
    """One PNG per test source under ``out_dir`` (``<digest of the id>.png``); empty without a grid."""
    extract = manifest.params.extract
    if extract.sampling != "grid":
        return []
    ids, corners = test_provenance(manifest)
    rows: dict[str, list[int]] = defaultdict(list)
    for row, source_id in enumerate(ids):
        rows[source_id].append(row)
    records = {record.id: record for record in manifest.sources}
    written = []
    for source_id in sorted(rows):
        record = records[source_id]
        cell = extract.step() * record.downsample  # level-0 pixels per canvas cell
        side = extract.patch_size * record.downsample
        chosen = np.array(rows[source_id])
        canvas = _stitch(
            corners[chosen], probabilities[chosen], (record.height, record.width), cell, side
        )
        name = hashlib.sha256(source_id.encode()).hexdigest()[:16]
        path = out_dir / f"{name}.png"
        with atomic_output(path) as tmp:
            Image.fromarray(canvas).save(tmp, format="PNG")
        written.append(path)
    return written


def _stitch(
    corners: np.ndarray, probabilities: np.ndarray, size: tuple[int, int], cell: float, side: float
) -> np.ndarray:
    """The map of one source: (rows, cols, 3) uint8."""
    height, width = (max(1, int(np.ceil(extent / cell))) for extent in size)
    total = np.zeros((height, width, probabilities.shape[1]), np.float64)
    weight = np.zeros((height, width), np.float64)
    span = max(1, round(side / cell))
    for (y, x), p in zip(corners.tolist(), probabilities, strict=True):
        top, left = int(y // cell), int(x // cell)
        total[top : top + span, left : left + span] += p
        weight[top : top + span, left : left + span] += 1
    canvas = np.full((height, width, 3), 255, np.uint8)
    covered = weight > 0
    canvas[covered] = PALETTE[total[covered].argmax(axis=1) % len(PALETTE)]
    return canvas
