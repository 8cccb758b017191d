"""Where patches may lie: positions inside rectangles, the sampling grid, and region mode's blocks.

A patch's position is its top-left corner; a rectangle of ``h x w`` pixels holds
``(h - patch_size + 1) * (w - patch_size + 1)`` of them. In region mode each image is cut into a
grid of blocks of about ``block_size`` pixels, shared out among the splits per image (seeded); only
blocks that hold a position the sampling in use can take are shared out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from patchpack.dataset.labels.rule import Labeller
from patchpack.dataset.plan.draws import STREAM_BLOCKS, Rect, image_rng, largest_remainder
from patchpack.dataset.sources import SourceImage
from patchpack.dataset.tissue import Roi, any_kept
from patchpack.params import SPLITS, ExtractParams, SplitParams


def positions(rects: Sequence[Rect], patch_size: int) -> int:
    """How many distinct top-left corners a patch of ``patch_size`` pixels has inside ``rects``.

    The rectangles do not overlap, and a patch lies inside one of them, so their counts add up.
    """
    return sum(
        max(0, r.y1 - r.y0 - patch_size + 1) * max(0, r.x1 - r.x0 - patch_size + 1) for r in rects
    )


def grid_positions(rects: Sequence[Rect], patch_size: int, stride: int) -> np.ndarray:
    """Grid corners inside ``rects``, in (y, x) order; int64 of shape (n, 2).

    The grid is anchored at the image's top-left corner and steps by ``stride``; a position is used
    only when the whole patch lies inside one rectangle (the image, or one block in region mode), so
    a last row or column that would overhang is dropped, never padded or shifted.
    """
    parts = []
    for r in rects:
        ys = np.arange(-(-r.y0 // stride) * stride, r.y1 - patch_size + 1, stride)
        xs = np.arange(-(-r.x0 // stride) * stride, r.x1 - patch_size + 1, stride)
        if len(ys) and len(xs):
            grid = np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=-1).reshape(-1, 2)
            parts.append(grid)
    if not parts:
        return np.empty((0, 2), np.int64)
    corners = np.concatenate(parts).astype(np.int64)
    return corners[np.lexsort((corners[:, 1], corners[:, 0]))]


def grid_coords(
    rects: Sequence[Rect],
    extract: ExtractParams,
    level_downsample: float,
    roi: Roi | None,
    labeller: Labeller | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The grid corners inside ``rects`` that the ROI keeps and that carry a label.

    Returns
    -------
    coords : ndarray of shape (n, 2), int32, (y, x) in grid order
    labels : ndarray of shape (n,), int32, or None without a ``labeller``
    """
    corners = grid_positions(rects, extract.patch_size, extract.step())
    if roi is not None and len(corners):
        keep = roi.keep(corners[:, 0], corners[:, 1], extract.patch_size, level_downsample)
        corners = corners[keep]
    labels = None
    if labeller is not None:
        labels = labeller.labels(corners[:, 0], corners[:, 1], extract.patch_size, level_downsample)
        corners, labels = corners[labels >= 0], labels[labels >= 0]
    return corners.astype(np.int32), labels


def block_grid(height: int, width: int, block_size: int) -> list[Rect]:
    """Cut an image into ``(height // block_size) x (width // block_size)`` near-equal blocks, row-major."""
    rows, cols = max(1, height // block_size), max(1, width // block_size)
    ys = [round(i * height / rows) for i in range(rows + 1)]
    xs = [round(j * width / cols) for j in range(cols + 1)]
    return [Rect(ys[i], ys[i + 1], xs[j], xs[j + 1]) for i in range(rows) for j in range(cols)]


def region_splits(
    source: SourceImage,
    *,
    seed: int,
    split: SplitParams,
    roi: Roi | None = None,
    patch_size: int = 1,
    extract: ExtractParams | None = None,
    labeller: Labeller | None = None,
) -> dict[str, list[Rect]]:
    """The blocks of ``source`` that belong to each split (seeded, per image).

    With a region of interest (or, for grid sampling, label files), only blocks that hold a
    position the sampling in use can take are shared out, so a split never receives only background:
    for random sampling a position that the ROI keeps, in a block that holds a position on the
    half-patch grid (:func:`_hold_roi`), for grid sampling (``extract``) a grid position that the ROI
    keeps and that carries a label.
    """
    blocks = block_grid(source.size.height, source.size.width, split.block_size)
    grid = extract is not None and extract.sampling == "grid"
    if grid and (roi is not None or labeller is not None):
        assert extract is not None
        blocks = [
            b
            for b in blocks
            if len(grid_coords((b,), extract, source.size.downsample, roi, labeller)[0])
        ]
    elif roi is not None:
        holding = _hold_roi(blocks, roi, patch_size, source.size.downsample)
        blocks = [b for b, holds in zip(blocks, holding, strict=True) if holds]
    order = image_rng(seed, STREAM_BLOCKS, source.id).permutation(len(blocks))
    counts = largest_remainder(len(blocks), split.fractions)
    assigned: dict[str, list[Rect]] = {}
    start = 0
    for name, count in zip(SPLITS, counts, strict=True):
        assigned[name] = [blocks[i] for i in sorted(order[start : start + count])]
        start += count
    return assigned


_CORNERS_AT_ONCE = 1 << 20  # half-grid corners per array: bounds memory on gigapixel levels


def off_grid_blocks(height: int, width: int, block_size: int, patch_size: int) -> int:
    """How many blocks of a ``height`` x ``width`` level hold no position on the half-patch grid:
    those :func:`_hold_roi` refuses whatever the ROI (none once blocks are 1.5 patches a side)."""
    *_, counts = _half_grid(block_grid(height, width, block_size), patch_size)
    return int(np.count_nonzero(counts == 0))


def _half_grid(
    blocks: Sequence[Rect], patch_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each block's span (y0, y1, x0, x1), its first half-grid corner (y, x), the corners along
    each axis where a whole patch fits in the block, and their product (the grid of step
    ``patch_size // 2`` anchored at the image's corner)."""
    step, last = max(1, patch_size // 2), patch_size - 1
    spans = np.array([(b.y0, b.y1, b.x0, b.x1) for b in blocks], np.int64).reshape(-1, 4)
    first_y, first_x = -(-spans[:, 0] // step) * step, -(-spans[:, 2] // step) * step
    rows = np.maximum(0, (spans[:, 1] - last - first_y + step - 1) // step)
    cols = np.maximum(0, (spans[:, 3] - last - first_x + step - 1) // step)
    return spans, first_y, first_x, rows, cols, rows * cols


def _hold_roi(blocks: Sequence[Rect], roi: Roi, patch_size: int, downsample: float) -> list[bool]:
    """Whether each block is shared out: it holds a position on the half-patch grid (the grid of
    step ``patch_size // 2`` anchored at the image's corner), and some position of a random patch
    inside it lies enough in the ROI (exact).

    All blocks at once: those with a kept half-grid position are in, those without any half-grid
    position are out (format 3 decides so: a block under 1.5 patches on a side can miss the grid),
    those whose footprints touch no set mask cell are out (a fraction above 0 is never reached
    there), and the rest are tried at every distinct footprint (:func:`any_kept`).
    """
    step = max(1, patch_size // 2)
    last = patch_size - 1
    spans, first_y, first_x, _, cols, counts = _half_grid(blocks, patch_size)
    before = np.cumsum(counts) - counts  # corners of the blocks before each block
    settled = np.zeros(len(blocks), bool)
    start = 0
    while start < len(blocks):  # blocks in groups of at most about a million corners
        limit = before[start] + _CORNERS_AT_ONCE
        end = max(start + 1, int(np.searchsorted(before + counts, limit, side="right")))
        group = np.arange(start, end)
        owner = np.repeat(group, counts[group])
        within = np.arange(len(owner)) - np.repeat(before[group] - before[start], counts[group])
        ys = first_y[owner] + within // cols[owner] * step
        xs = first_x[owner] + within % cols[owner] * step
        kept = roi.keep(ys, xs, patch_size, downsample)
        settled[group] = np.bincount(owner[kept] - start, minlength=len(group)) > 0
        start = end
    touches = roi.touches(spans, downsample) if roi.min_fraction > 0 else np.ones(len(blocks), bool)
    undecided = (counts > 0) & ~settled & touches
    return [
        bool(done)
        or (
            bool(open_)
            and any_kept(
                roi,
                range(block.y0, block.y1 - last),
                range(block.x0, block.x1 - last),
                patch_size,
                downsample,
            )
        )
        for block, done, open_ in zip(blocks, settled.tolist(), undecided.tolist(), strict=True)
    ]
