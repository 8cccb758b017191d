"""Split assignment, seeded patch coordinates and shard boundaries: pure functions, no file I/O.

Randomness is derived per image from ``(seed, stream, id_hash)``, where ``id_hash`` comes from sha256 of
the image's id, so an image's patches never depend on which other images are present, on the order
files are listed, on worker count or on ``PYTHONHASHSEED``.

Split modes
-----------
``image``
    Within each class, images are ordered by a seeded hash of their id and cut by the fractions
    (largest remainder). An image belongs to one split. Adding an image moves at most one image per
    boundary of its own class.
``region``
    Each image is cut into a grid of blocks of about ``block_size`` pixels; blocks are assigned to
    splits in proportion to the fractions, and a patch lies inside one block. No pixel is in two splits,
    so even a single large image yields honest train/val/test sets.
``patch``
    Every patch is assigned independently. Patches of different splits can overlap: leaky by design,
    for comparison only.

Room
----
A patch's position is its top-left corner; a rectangle of ``h x w`` pixels holds
``(h - patch_size + 1) * (w - patch_size + 1)`` of them. Candidates are drawn with replacement, so
asking for more patches than an image (or a split's blocks of it) has positions could only repeat
patches: the plan refuses it before anything is drawn or allocated.

Shard boundaries
----------------
Rows of a split are ordered by (source id, patch index). A shard closes after an image when a hash of
the image's id falls below ``n_patches / target_patches`` (content-defined, as in rsync), or before an
image that would push it past twice the target. Adding an image therefore changes the shard it lands in
(and at most its neighbour), not every shard after it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np

from patchpack.dataset.labels import Labeller
from patchpack.dataset.shards import shard_name
from patchpack.dataset.sources import SourceImage
from patchpack.dataset.tissue import Roi
from patchpack.errors import ConfigError, SourceError
from patchpack.params import SPLITS, ExtractParams, SplitParams

STREAM_SPLIT = 1
STREAM_BLOCKS = 2
STREAM_PATCHES = 3
DRAW_BATCH = 256  # candidates drawn per generator call; fixed so prefixes of the stream are stable


def id_hash(text: str) -> int:
    """A 63-bit integer from sha256 of ``text``: stable across processes and Python versions."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") >> 1


def image_rng(seed: int, stream: int, source_id: str, *extra: int) -> np.random.Generator:
    """The generator for one image and one purpose, independent of every other image."""
    return np.random.default_rng([seed, stream, id_hash(source_id), *extra])


def largest_remainder(total: int, weights: Sequence[float]) -> list[int]:
    """Split ``total`` into integers proportional to ``weights`` (Hamilton's method, ties by position)."""
    weight_sum = float(sum(weights))
    if total == 0 or weight_sum == 0:
        return [0] * len(weights)
    exact = [total * w / weight_sum for w in weights]
    counts = [int(value) for value in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


@dataclass(frozen=True)
class Rect:
    """A rectangle of an image, rows ``y0:y1`` and columns ``x0:x1``."""

    y0: int
    y1: int
    x0: int
    x1: int


@dataclass(frozen=True)
class Draw:
    """Patches to draw from one image into one split: ``count`` patches inside ``rects``.

    ``first_index`` numbers the patches (the image's patch indices are unique across splits); ``stream``
    selects the generator, so each (image, split) has its own prefix-stable sequence of candidates.
    """

    split: str
    count: int
    first_index: int
    rects: tuple[Rect, ...]
    stream: int


@dataclass(frozen=True)
class ImagePlan:
    """Everything decided about one source before its pixels are read."""

    source: SourceImage
    draws: tuple[Draw, ...]
    roi: Roi | None = None

    def count(self, split: str) -> int:
        return sum(draw.count for draw in self.draws if draw.split == split)


class Rows(NamedTuple):
    """One image's patches in one split, in patch-index order.

    Attributes
    ----------
    patch_index : ndarray of shape (n,), int32, the patch numbers
    coords : ndarray of shape (n, 2), int32, top-left (y, x) at the sampled level
    labels : ndarray of shape (n,), int32, each patch's class index
    """

    patch_index: np.ndarray
    coords: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class Piece:
    """Rows ``start:stop`` of one image's patches in one split (positions within that split)."""

    image: int
    start: int
    stop: int


@dataclass(frozen=True)
class ShardSpec:
    """One shard to write: its split, its number within the split and the pieces it holds, in order."""

    split: str
    index: int
    pieces: tuple[Piece, ...]

    @property
    def path(self) -> str:
        return f"{self.split}/{shard_name(self.index)}"

    @property
    def patches(self) -> int:
        return sum(piece.stop - piece.start for piece in self.pieces)


def plan_images(
    sources: Sequence[SourceImage],
    *,
    seed: int,
    extract: ExtractParams,
    split: SplitParams,
    rois: Mapping[str, Roi] | None = None,
    labellers: Mapping[str, Labeller] | None = None,
) -> list[ImagePlan]:
    """Decide, for each source, how many patches go to which split and from which region.

    ``labellers`` (per source id, when labels come from label files) decide which grid positions
    carry a label, hence how many patches grid sampling takes.

    Raises
    ------
    ConfigError
        When ``split.block_size`` is below ``extract.patch_size`` in region mode.
    SourceError
        When an image is smaller than a patch (or than a block in region mode), or when it (or, in
        region mode, a split's blocks of it) has fewer distinct patch positions than patches asked.
    """
    size = extract.patch_size
    if split.mode == "region" and split.block_size < size:
        raise ConfigError(
            f"split.block_size ({split.block_size}) must be at least extract.patch_size ({size}) "
            f"in region mode: a patch must fit inside one block"
        )
    for source in sources:
        smallest = split.block_size if split.mode == "region" else size
        level = source.size
        if split.mode == "region":
            _check_block_count(source, split.block_size)
        if min(level.width, level.height) < smallest:
            what = "split.block_size" if split.mode == "region" else "extract.patch_size"
            raise SourceError(
                f"{source.path}: image is {level.width}x{level.height} at level {source.level}, "
                f"smaller than {what}={smallest}; remove it or lower {what}"
            )
    rois = rois or {}
    image_splits = (
        _image_splits(sources, seed=seed, fractions=split.fractions)
        if split.mode == "image"
        else {}
    )
    if extract.sampling == "grid":
        return [
            _grid_plan(
                source,
                seed=seed,
                extract=extract,
                split=split,
                roi=rois.get(source.id),
                image_split=image_splits.get(source.id),
                labeller=(labellers or {}).get(source.id),
            )
            for source in sources
        ]
    counts = _per_image_counts(sources, extract)
    plans = []
    for source, total in zip(sources, counts, strict=True):
        whole = (Rect(0, source.size.height, 0, source.size.width),)
        if split.mode == "image":
            draws: tuple[Draw, ...] = (Draw(image_splits[source.id], total, 0, whole, 0),)
        elif split.mode == "patch":
            draws = (Draw("*", total, 0, whole, 0),)
        else:
            draws = _region_draws(
                source,
                total,
                seed=seed,
                split=split,
                roi=rois.get(source.id),
                patch_size=extract.patch_size,
            )
        plans.append(ImagePlan(source=source, draws=draws, roi=rois.get(source.id)))
    for plan in plans:
        _check_room(plan, extract)
    return plans


MAX_BLOCKS = 1_000_000  # blocks per image in region mode: the plan holds each as a rectangle


def _check_block_count(source: SourceImage, block_size: int) -> None:
    """Refuse an image that ``split.block_size`` would cut into more blocks than a plan can hold
    (a header claiming a million pixels a side would otherwise exhaust memory after minutes)."""
    level = source.size
    blocks = max(1, level.height // block_size) * max(1, level.width // block_size)
    if blocks > MAX_BLOCKS:
        raise SourceError(
            f"{source.path}: {level.width}x{level.height} pixels at level {source.level} make "
            f"{blocks:,} blocks of split.block_size={block_size} (at most {MAX_BLOCKS:,}); raise "
            f"split.block_size or sample a coarser level (source.level or source.mpp)"
        )


def positions(rects: Sequence[Rect], patch_size: int) -> int:
    """How many distinct top-left corners a patch of ``patch_size`` pixels has inside ``rects``.

    The rectangles do not overlap, and a patch lies inside one of them, so their counts add up.
    """
    return sum(
        max(0, r.y1 - r.y0 - patch_size + 1) * max(0, r.x1 - r.x0 - patch_size + 1) for r in rects
    )


def _check_room(plan: ImagePlan, extract: ExtractParams) -> None:
    """Refuse a draw that asks for more patches than its rectangles have positions."""
    size = extract.patch_size
    knob = "extract.per_image" if extract.per_image is not None else "extract.per_class"
    for draw in plan.draws:
        room = positions(draw.rects, size)
        if draw.count <= room:
            continue
        where = "asked" if draw.split == "*" else f"asked for the {draw.split} split"
        there = "" if draw.split == "*" else " there"
        raise SourceError(
            f"{plan.source.path}: {draw.count} patches of {size}x{size} {where}, but it has only "
            f"{room} distinct positions{there}; lower {knob}"
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


def _grid_plan(
    source: SourceImage,
    *,
    seed: int,
    extract: ExtractParams,
    split: SplitParams,
    roi: Roi | None,
    image_split: str | None,
    labeller: Labeller | None = None,
) -> ImagePlan:
    """Grid sampling: every grid position (inside the ROI, with a label) of each split's rectangles."""
    whole = (Rect(0, source.size.height, 0, source.size.width),)
    if split.mode == "region":
        regions = region_splits(
            source,
            seed=seed,
            split=split,
            roi=roi,
            patch_size=extract.patch_size,
            extract=extract,
            labeller=labeller,
        )
        named = [(name, tuple(regions[name])) for name in SPLITS]
    else:
        named = [("*", whole)]
    draws, first = [], 0
    for stream, (name, rects) in enumerate(named, start=1):
        count = len(grid_coords(rects, extract, source.size.downsample, roi, labeller)[0])
        if count:
            draws.append(Draw(image_split or name, count, first, rects, stream))
        first += count
    if not draws:
        raise SourceError(
            f"{source.path}: no grid position lies in its region of interest"
            f"{' with a label' if labeller is not None else ''}; lower extract.stride or "
            f"extract.min_roi_fraction, or use extract.roi: all"
        )
    return ImagePlan(source=source, draws=tuple(draws), roi=roi)


def _per_image_counts(sources: Sequence[SourceImage], extract: ExtractParams) -> list[int]:
    if extract.per_image is not None:
        return [extract.per_image] * len(sources)
    assert extract.per_class is not None  # params.py guarantees exactly one is set
    counts = [0] * len(sources)
    for label in sorted({source.label for source in sources}):
        members = [i for i, source in enumerate(sources) if source.label == label]
        shares = largest_remainder(extract.per_class, [1.0] * len(members))
        for i, share in zip(members, shares, strict=True):
            counts[i] = share
    return counts


def _image_splits(
    sources: Sequence[SourceImage], *, seed: int, fractions: Sequence[float]
) -> dict[str, str]:
    assignment: dict[str, str] = {}
    for label in sorted({source.label for source in sources}):
        members = sorted(
            (source.id for source in sources if source.label == label),
            key=lambda source_id: (id_hash(f"{seed}:{STREAM_SPLIT}:{source_id}"), source_id),
        )
        counts = largest_remainder(len(members), fractions)
        names = [name for name, count in zip(SPLITS, counts, strict=True) for _ in range(count)]
        assignment.update(zip(members, names, strict=True))
    return assignment


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
    for random sampling a position on a half-patch grid that the ROI keeps (every such block holds
    one), for grid sampling (``extract``) a grid position that the ROI keeps and that carries a label.
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
        blocks = [b for b in blocks if _holds_roi(b, roi, patch_size, source.size.downsample)]
    order = image_rng(seed, STREAM_BLOCKS, source.id).permutation(len(blocks))
    counts = largest_remainder(len(blocks), split.fractions)
    assigned: dict[str, list[Rect]] = {}
    start = 0
    for name, count in zip(SPLITS, counts, strict=True):
        assigned[name] = [blocks[i] for i in sorted(order[start : start + count])]
        start += count
    return assigned


def _holds_roi(block: Rect, roi: Roi, patch_size: int, downsample: float) -> bool:
    """Whether some position of a random patch inside ``block`` lies enough in the ROI.

    Exact: a footprint's fraction depends only on which mask pixels it touches, which changes only
    where a footprint edge crosses a mask pixel edge, so one position per run of positions that touch
    the same mask pixels (:func:`_runs`) stands for them all. Most blocks are settled by a half-patch
    grid (accepted) or by holding no mask pixel at all (refused) before that.
    """
    step = max(1, patch_size // 2)
    corners = grid_positions((block,), patch_size, step)
    if not len(corners):
        return False
    if roi.keep(corners[:, 0], corners[:, 1], patch_size, downsample).any():
        return True
    side = max(block.y1 - block.y0, block.x1 - block.x0)
    anything = dataclasses.replace(roi, min_fraction=1e-12)  # any set mask pixel under the block
    if not anything.keep(np.array([block.y0]), np.array([block.x0]), side, downsample)[0]:
        return False
    ys = _runs(block.y0, block.y1 - patch_size, patch_size * downsample, downsample, roi.downsample)
    xs = _runs(block.x0, block.x1 - patch_size, patch_size * downsample, downsample, roi.downsample)
    grid = np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=-1).reshape(-1, 2)
    return bool(roi.keep(grid[:, 0], grid[:, 1], patch_size, downsample).any())


def _runs(
    low: int, high: int, side: float, downsample: float, mask_downsample: float
) -> np.ndarray:
    """Level positions in ``low..high`` that include one of every run of positions whose footprint
    (``side`` level-0 pixels from ``position * downsample``) touches the same mask rows: the first
    position, and those next to where the footprint's first or last mask row changes."""
    if high < low:
        return np.empty(0, np.int64)
    start, end = low * downsample, high * downsample + side
    rows = np.arange(np.floor(start / mask_downsample), np.ceil(end / mask_downsample) + 1)
    edges = rows * mask_downsample  # level-0 positions of mask row edges
    starts = np.ceil(edges / downsample)  # first position whose footprint starts past an edge
    ends = np.floor((edges - side) / downsample) + 1  # first whose footprint ends past an edge
    found = np.concatenate([[low], starts - 1, starts, starts + 1, ends - 1, ends, ends + 1])
    found = found[(found >= low) & (found <= high)]
    return np.unique(found.astype(np.int64))


def _region_draws(
    source: SourceImage,
    total: int,
    *,
    seed: int,
    split: SplitParams,
    roi: Roi | None = None,
    patch_size: int = 1,
) -> tuple[Draw, ...]:
    regions = region_splits(source, seed=seed, split=split, roi=roi, patch_size=patch_size)
    weights = [
        fraction if regions[name] else 0.0
        for name, fraction in zip(SPLITS, split.fractions, strict=True)
    ]
    counts = largest_remainder(total, weights)
    draws, first = [], 0
    for stream, (name, count) in enumerate(zip(SPLITS, counts, strict=True), start=1):
        if count:
            draws.append(Draw(name, count, first, tuple(regions[name]), stream))
        first += count
    return tuple(draws)


def draw_coords(
    plan: ImagePlan,
    draw: Draw,
    *,
    seed: int,
    patch_size: int,
    pixels: Pixels | None = None,
    min_std: float = 0.0,
    max_tries: int = 50,
    labeller: Labeller | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Top-left corners of ``draw.count`` patches inside ``draw.rects``, drawn from the image's stream.

    Candidates are drawn in fixed batches, so the first ``k`` coordinates are the same whatever
    ``count`` is. A candidate is skipped when less than the ROI's minimum fraction of it lies in the
    image's region of interest (``plan.roi``), when the ``labeller`` gives it no label (unlabelled
    or ambiguous), or when its pixel standard deviation is below ``min_std`` (this needs
    ``pixels``: the whole image, or windowed access to it). A skipped candidate is replaced by the
    next one of the same stream, so the result is still a function of the seed and the image.

    Returns
    -------
    coords : ndarray of shape (count, 2), int32, (y, x)
    labels : ndarray of shape (count,), int32, or None without a ``labeller``

    Raises
    ------
    SourceError
        When fewer than ``count`` candidates pass ``min_std`` within ``count * max_tries`` draws.
    """
    rng = image_rng(seed, STREAM_PATCHES, plan.source.id, draw.stream)
    rects = draw.rects
    spans = np.array([[r.y0, r.y1 - patch_size + 1, r.x0, r.x1 - patch_size + 1] for r in rects])
    weights = (spans[:, 1] - spans[:, 0]).astype(np.float64) * (spans[:, 3] - spans[:, 2])
    weights /= weights.sum()
    check = min_std > 0
    if check and pixels is None:
        raise ValueError("pixels are required when min_std > 0")
    downsample = plan.source.size.downsample
    accepted: list[np.ndarray] = []
    accepted_labels: list[np.ndarray] = []
    found, tried, budget = 0, 0, draw.count * max_tries
    while found < draw.count:
        if tried >= budget:
            raise SourceError(
                f"{plan.source.path}: only {found} of {draw.count} {draw.split} patches have pixel "
                f"std >= extract.min_std={min_std:g}{_roi_words(plan)}"
                f"{' and carry a label' if labeller else ''} after {tried} tries; lower "
                f"extract.min_std{' or extract.min_roi_fraction' if plan.roi else ''} or the "
                f"patch count{_label_advice(plan, labeller)}, or remove the image"
            )
        which = rng.choice(len(rects), size=DRAW_BATCH, p=weights)
        low_y, high_y = spans[which, 0], spans[which, 1]
        low_x, high_x = spans[which, 2], spans[which, 3]
        ys = low_y + (rng.random(DRAW_BATCH) * (high_y - low_y)).astype(np.int64)
        xs = low_x + (rng.random(DRAW_BATCH) * (high_x - low_x)).astype(np.int64)
        room = min(DRAW_BATCH, budget - tried)
        ys, xs = ys[:room], xs[:room]
        if plan.roi is not None:
            keep = plan.roi.keep(ys, xs, patch_size, downsample)
            ys, xs = ys[keep], xs[keep]
        labels = np.zeros(len(ys), np.int32)
        if labeller is not None and len(ys):
            labels = labeller.labels(ys, xs, patch_size, downsample)
            keep = labels >= 0
            ys, xs, labels = ys[keep], xs[keep], labels[keep]
        if check and pixels is not None and len(ys):
            keep = _kept_by_std(pixels, ys, xs, patch_size, min_std, draw.count - found)
            ys, xs, labels = ys[keep], xs[keep], labels[keep]
        tried += room
        take = min(len(ys), draw.count - found)
        accepted.append(np.stack([ys[:take], xs[:take]], axis=1))
        accepted_labels.append(labels[:take])
        found += take
    coords = np.concatenate(accepted).astype(np.int32)
    return coords, (np.concatenate(accepted_labels) if labeller is not None else None)


def _roi_words(plan: ImagePlan) -> str:
    if plan.roi is None:
        return ""
    return f" and lie at least {plan.roi.min_fraction:g} in the region of interest"


def _label_advice(plan: ImagePlan, labeller: Labeller | None) -> str:
    if labeller is None:
        return ""
    if plan.roi is None:
        return ", set extract.roi: mask so that every split draws from labelled area"
    return ", or label more of the image"


class WindowStds(Protocol):
    """Windowed access to an image too large to decode whole: the std of each candidate window."""

    def stds(self, ys: np.ndarray, xs: np.ndarray, size: int) -> np.ndarray: ...


Pixels = np.ndarray | WindowStds


def _kept_by_std(
    pixels: Pixels, ys: np.ndarray, xs: np.ndarray, size: int, min_std: float, needed: int
) -> np.ndarray:
    """Which candidates have pixel std >= ``min_std``, in order.

    A whole image is checked at once. A windowed one is checked one window at a time, stopping once
    ``needed`` candidates passed: only the first ``needed`` kept candidates are taken anyway, so the
    result is the same, and windows past them are never decoded.
    """
    if isinstance(pixels, np.ndarray):
        windows = np.lib.stride_tricks.sliding_window_view(pixels, (size, size), axis=(0, 1))
        kept: np.ndarray = windows[ys, xs].reshape(len(ys), -1).std(axis=1) >= min_std
        return kept
    keep = np.zeros(len(ys), bool)
    for i in range(len(ys)):
        keep[i] = pixels.stds(ys[i : i + 1], xs[i : i + 1], size)[0] >= min_std
        if keep.sum() >= needed:
            break
    return keep


def patch_splits(plan: ImagePlan, *, seed: int, fractions: Sequence[float]) -> np.ndarray:
    """Patch mode: the split of each of the image's patches, a seeded permutation of exact counts."""
    total = plan.draws[0].count
    counts = largest_remainder(total, fractions)
    labels = np.repeat(np.arange(len(SPLITS)), counts)
    return image_rng(seed, STREAM_SPLIT, plan.source.id).permutation(labels)


def split_counts(
    plans: Sequence[ImagePlan], *, mode: str, fractions: Sequence[float]
) -> list[dict[str, int]]:
    """Per image, how many of its patches land in each split."""
    result = []
    for plan in plans:
        if mode == "patch":
            counts = largest_remainder(plan.draws[0].count, fractions)
            result.append(dict(zip(SPLITS, counts, strict=True)))
        else:
            result.append({name: plan.count(name) for name in SPLITS})
    return result


def check_splits(
    plans: Sequence[ImagePlan],
    counts: Sequence[dict[str, int]],
    *,
    split: SplitParams,
    class_names: Sequence[str],
    by_folder: bool,
) -> None:
    """Refuse a plan in which a split with a fraction above 0 gets no patch, or (labels by folder)
    in which a class gets no patch in such a split: a dataset that exits 0 must hold every split.

    Raises
    ------
    SourceError
        Naming the split, the class and the images, with the fix.
    """
    for number, name in enumerate(SPLITS):
        if split.fractions[number] <= 0:
            continue
        groups = (
            [(class_names[label], label) for label in sorted({p.source.label for p in plans})]
            if by_folder and class_names
            else [(None, None)]
        )
        for class_name, label in groups:
            members = [
                (plan, count)
                for plan, count in zip(plans, counts, strict=True)
                if label is None or plan.source.label == label
            ]
            if sum(count[name] for _, count in members) == 0:
                raise SourceError(_empty_split(name, class_name, [p for p, _ in members], split))


def _empty_split(
    name: str, class_name: str | None, plans: Sequence[ImagePlan], split: SplitParams
) -> str:
    shown = ", ".join(str(plan.source.path) for plan in plans[:3])
    shown += f" and {len(plans) - 3} more" if len(plans) > 3 else ""
    what = f"the {name} split gets no patch" + (
        f" of class {class_name!r}" if class_name is not None else ""
    )
    if split.mode == "image":
        fix = (
            f"each split needs an image of every class: add images"
            f"{f' to {class_name}' if class_name else ''} or use split.mode: region"
        )
    elif split.mode == "region":
        blocks = sum(len(draw.rects) for plan in plans for draw in plan.draws)
        fix = (
            f"its {blocks} blocks with a usable position all went to other splits: lower "
            f"split.block_size ({split.block_size}) so it has more blocks, or add images"
        )
    else:
        fix = "ask for more patches per image"
    return f"{shown}: {what}; {fix}, or set split.fractions.{name} to 0"


def cut_shards(
    counts: Sequence[dict[str, int]], ids: Sequence[str], *, target: int
) -> list[ShardSpec]:
    """Group each split's rows into shards at content-defined boundaries between images."""
    specs = []
    for name in SPLITS:
        groups = _cut_split([c[name] for c in counts], ids, split=name, target=target)
        specs += [ShardSpec(split=name, index=i, pieces=group) for i, group in enumerate(groups)]
    return specs


def _cut_split(
    counts: Sequence[int], ids: Sequence[str], *, split: str, target: int
) -> list[tuple[Piece, ...]]:
    cap = 2 * target
    groups: list[tuple[Piece, ...]] = []
    pieces: list[Piece] = []
    filled = 0
    for image, (source_id, n) in enumerate(zip(ids, counts, strict=True)):
        for start in range(0, n, cap):
            stop = min(n, start + cap)
            if filled and filled + stop - start > cap:
                groups.append(tuple(pieces))
                pieces, filled = [], 0
            pieces.append(Piece(image, start, stop))
            filled += stop - start
        if n and _closes(source_id, split, n, target):
            groups.append(tuple(pieces))
            pieces, filled = [], 0
    if pieces:
        groups.append(tuple(pieces))
    return groups


def _closes(source_id: str, split: str, n: int, target: int) -> bool:
    u = id_hash(f"shard-boundary:{split}:{source_id}") / 2**63
    return u < n / target


def sample_image(
    plan: ImagePlan,
    *,
    seed: int,
    extract: ExtractParams,
    split: SplitParams,
    pixels: Pixels | None = None,
    only: str | None = None,
    labeller: Labeller | None = None,
) -> dict[str, Rows]:
    """Every patch of one image, by split, in patch-index order.

    ``only`` restricts the work to one split (the others are left out of the result).
    ``pixels`` (shape (height, width, channels)) is needed only when ``extract.min_std > 0``.
    ``labeller`` labels each patch when labels come from label files; without one every patch
    takes its image's label (its class folder).
    """
    rows: dict[str, Rows] = {}
    for draw in plan.draws:
        if only is not None and draw.split not in (only, "*"):
            continue
        if extract.sampling == "grid":
            coords, labels = grid_coords(
                draw.rects, extract, plan.source.size.downsample, plan.roi, labeller
            )
        else:
            coords, labels = draw_coords(
                plan,
                draw,
                seed=seed,
                patch_size=extract.patch_size,
                pixels=pixels,
                min_std=extract.min_std,
                max_tries=extract.max_tries,
                labeller=labeller,
            )
        if labels is None:
            labels = np.full(len(coords), plan.source.label, np.int32)
        index = np.arange(draw.first_index, draw.first_index + draw.count, dtype=np.int32)
        if draw.split != "*":
            rows[draw.split] = Rows(index, coords, labels)
            continue
        splits = patch_splits(plan, seed=seed, fractions=split.fractions)
        for number, name in enumerate(SPLITS):
            chosen = splits == number
            rows[name] = Rows(index[chosen], coords[chosen], labels[chosen])
    return {name: rows[name] for name in SPLITS if name in rows and len(rows[name].patch_index)}
