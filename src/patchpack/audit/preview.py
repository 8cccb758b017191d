"""Contact sheets: a PNG of sample patches per class (rows) and split (column groups).

A dataset with mask targets (``extract.targets: mask``) shows each patch with its mask laid over it:
every class number in its own colour at ``OVERLAY_ALPHA``, unlabelled pixels left as they are.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from patchpack.dataset.io import atomic_output
from patchpack.dataset.manifest import ShardEntry, load_manifest
from patchpack.dataset.shards import ShardReader
from patchpack.engine.output import stable_read
from patchpack.errors import SourceError
from patchpack.params import SPLITS

CELL = 64  # patches are scaled (nearest neighbour) to at least this many pixels so a person can see them
GAP = 4
LABEL_WIDTH = 96
HEADER = 18
OVERLAY_ALPHA = 0.45
# one colour per class number 1.. (repeated past ten classes); 0 (unlabelled) is never painted
PALETTE = np.array(
    [[228, 26, 28], [55, 126, 184], [77, 175, 74], [152, 78, 163], [255, 127, 0],
     [255, 255, 51], [166, 86, 40], [247, 129, 191], [153, 153, 153], [0, 206, 209]],
    np.float64,
)  # fmt: skip


def sample_patches(
    folder: Path, per_cell: int, open_shard: Callable[[ShardEntry], Any] | None = None
) -> dict[tuple[str, int], np.ndarray]:
    """Up to ``per_cell`` patches for each (split, label), evenly spaced through the split's rows,
    with their masks laid over them when the dataset has mask targets. ``open_shard`` replaces the
    opening of a shard (a remote read fetches it then).

    Returns
    -------
    samples : dict of (split, label) -> ndarray of shape (k, h, w, c), uint8 (c is 3 with masks)
    """
    manifest = load_manifest(folder)
    labels = range(len(manifest.class_names))
    samples: dict[tuple[str, int], np.ndarray] = {}
    for split in SPLITS:
        picked: dict[int, list[np.ndarray]] = {label: [] for label in labels}
        for entry in manifest.shards_for(split):
            if all(len(found) >= per_cell for found in picked.values()):
                break
            opened = (
                ShardReader(manifest.shard_path(entry), manifest.layout(entry))
                if open_shard is None
                else open_shard(entry)
            )
            with contextlib.closing(opened) as reader:
                for label, found in picked.items():
                    rows = np.nonzero(reader.labels == label)[0]
                    if len(found) >= per_cell or len(rows) == 0:
                        continue
                    step = max(1, len(rows) // per_cell)
                    chosen = rows[::step][: per_cell - len(found)]
                    images, _ = reader.take(chosen)
                    if reader.has_masks:
                        images = overlay(images, reader.take_masks(chosen))
                    found.extend(images)
        for label, found in picked.items():
            if found:
                samples[split, label] = np.stack(found)
    return samples


def overlay(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """``images`` (n, h, w, c) as RGB with each class of ``masks`` (n, h, w) tinted in its colour."""
    rgb = np.repeat(images, 3, axis=3) if images.shape[3] == 1 else images
    colours = PALETTE[(masks.astype(np.int64) - 1) % len(PALETTE)]
    blended = rgb * (1 - OVERLAY_ALPHA) + colours * OVERLAY_ALPHA
    painted = np.where((masks > 0)[..., None], np.round(blended), rgb)
    return painted.astype(np.uint8)


def contact_sheet(
    folder: Path,
    out: Path,
    *,
    per_cell: int = 8,
    open_shard: Callable[[ShardEntry], Any] | None = None,
) -> Path:
    """Write a contact sheet of the dataset in ``folder`` to the PNG ``out`` (atomically);
    ``open_shard`` as for :func:`sample_patches`."""
    if out.suffix.lower() != ".png":
        raise SourceError(f"{out}: the contact sheet is a PNG; give a path ending in .png")
    with stable_read(folder):
        manifest = load_manifest(folder)
        samples = sample_patches(folder, per_cell, open_shard)
    scale = max(1, -(-CELL // manifest.patch_size))
    side = manifest.patch_size * scale
    group = per_cell * (side + GAP) + 2 * GAP
    width = LABEL_WIDTH + len(SPLITS) * group
    height = HEADER + len(manifest.class_names) * (side + GAP) + GAP
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for column, split in enumerate(SPLITS):
        draw.text((LABEL_WIDTH + column * group + GAP, 3), split, fill="black")
    for label, name in enumerate(manifest.class_names):
        top = HEADER + label * (side + GAP)
        draw.text((4, top + side // 2 - 6), name[:14], fill="black")
        for column, split in enumerate(SPLITS):
            for k, patch in enumerate(samples.get((split, label), [])):
                tile = Image.fromarray(patch[:, :, 0] if patch.shape[2] == 1 else patch)
                tile = tile.resize((side, side), Image.Resampling.NEAREST).convert("RGB")
                sheet.paste(tile, (LABEL_WIDTH + column * group + GAP + k * (side + GAP), top))
    with atomic_output(out) as tmp:
        sheet.save(tmp, format="PNG")
    return out


def slide_maps(folder: Path, sources: Path, out: Path, *, limit: int) -> list[str]:
    """Maps (see :mod:`patchpack.audit.slide_map`) of up to ``limit`` sources that have a tissue mask
    or a pyramid, written beside ``out`` as ``<stem>-map-<k>.png``; one line per map (or per skip)."""
    from patchpack.audit.slide_map import slide_map

    with stable_read(folder):
        manifest = load_manifest(folder)
        chosen = [s for s in manifest.sources if s.roi or s.backend != "pillow"][: max(0, limit)]
        lines = []
        for number, record in enumerate(chosen):
            target = out.with_name(f"{out.stem}-map-{number}.png")
            try:
                slide_map(manifest, record, sources / record.id, target)
            except SourceError as exc:
                lines.append(f"map of {record.id} skipped: {exc}")
                continue
            lines.append(f"wrote {target} (map of {record.id})")
    return lines
