"""The plan: split assignment, seeded patch coordinates and shard boundaries; pure functions, no
file I/O beyond the low-resolution masks the caller passes in.

Randomness is derived per image from ``(seed, stream, id_hash)``, where ``id_hash`` comes from sha256 of
the image's id, so an image's patches never depend on which other images are present, on the order
files are listed, on worker count or on ``PYTHONHASHSEED``.

Rooms, in the order a plan is made:

:mod:`~patchpack.dataset.plan.draws`
    What a plan is made of (rectangles, draws, an image's plan, its rows) and the two rules every
    step shares: per-image seeded generators and largest-remainder apportionment.
:mod:`~patchpack.dataset.plan.regions`
    Where patches may lie: positions inside rectangles, the sampling grid, region mode's blocks.
:mod:`~patchpack.dataset.plan.splits`
    Which image (or block, or patch) goes to which split, how many patches each draw takes, and
    the refusals when a split would be empty or an image has no room.
:mod:`~patchpack.dataset.plan.sampling`
    The seeded candidates of one image (random or grid), filtered by ROI, label and pixel std.
:mod:`~patchpack.dataset.plan.layout`
    Shard boundaries: which rows of which images each shard holds.
"""

from __future__ import annotations

from patchpack.dataset.plan.draws import (
    STREAM_BLOCKS,
    STREAM_PATCHES,
    STREAM_SPLIT,
    Draw,
    ImagePlan,
    Rect,
    Rows,
    id_hash,
    image_rng,
    largest_remainder,
)
from patchpack.dataset.plan.layout import Piece, ShardSpec, cut_shards
from patchpack.dataset.plan.regions import (
    block_grid,
    grid_coords,
    grid_positions,
    positions,
    region_splits,
)
from patchpack.dataset.plan.sampling import (
    DRAW_BATCH,
    SEGMENT,
    Pixels,
    WindowStds,
    draw_coords,
    patch_splits,
    sample_image,
    segmented,
    segments_of,
)
from patchpack.dataset.plan.splits import MAX_BLOCKS, check_splits, plan_images, split_counts

__all__ = [
    "DRAW_BATCH",
    "MAX_BLOCKS",
    "SEGMENT",
    "STREAM_BLOCKS",
    "STREAM_PATCHES",
    "STREAM_SPLIT",
    "Draw",
    "ImagePlan",
    "Piece",
    "Pixels",
    "Rect",
    "Rows",
    "ShardSpec",
    "WindowStds",
    "block_grid",
    "check_splits",
    "cut_shards",
    "draw_coords",
    "grid_coords",
    "grid_positions",
    "id_hash",
    "image_rng",
    "largest_remainder",
    "patch_splits",
    "plan_images",
    "positions",
    "region_splits",
    "sample_image",
    "segmented",
    "segments_of",
    "split_counts",
]
