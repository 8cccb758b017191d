"""Split assignment: which image, block or patch goes to which split, and how many patches each takes.

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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from patchpack.dataset.labels.rule import Labeller
from patchpack.dataset.plan.draws import (
    STREAM_SPLIT,
    Draw,
    ImagePlan,
    Rect,
    id_hash,
    largest_remainder,
)
from patchpack.dataset.plan.regions import (
    grid_coords,
    off_grid_blocks,
    positions,
    region_splits,
)
from patchpack.dataset.sources import SourceImage
from patchpack.dataset.tissue import Roi
from patchpack.errors import ConfigError, SourceError
from patchpack.params import SPLITS, ExtractParams, SplitParams


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
    extract: ExtractParams | None = None,
) -> None:
    """Refuse a plan in which a split with a fraction above 0 gets no patch, or (labels by folder)
    in which a class gets no patch in such a split: a dataset that exits 0 must hold every split.
    ``extract`` (the patch size, the ROI, the sampling) makes the fix it names exact.

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
                raise SourceError(
                    _empty_split(name, class_name, [p for p, _ in members], split, extract)
                )


def _half_grid_refused(
    split: SplitParams, extract: ExtractParams | None, plans: Sequence[ImagePlan]
) -> bool:
    """Whether format 3's rule for random sampling within an ROI (a block must hold a position on
    the half-patch grid, see :func:`~patchpack.dataset.plan.regions.region_splits`) refused a
    block of these images: blocks under 1.5 patches on a side can miss the grid."""
    if extract is None or extract.roi == "all" or extract.sampling == "grid":
        return False
    return any(
        off_grid_blocks(
            plan.source.size.height, plan.source.size.width, split.block_size, extract.patch_size
        )
        for plan in plans
    )


def _empty_split(
    name: str,
    class_name: str | None,
    plans: Sequence[ImagePlan],
    split: SplitParams,
    extract: ExtractParams | None = None,
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
    elif split.mode == "region" and _half_grid_refused(split, extract, plans):
        assert extract is not None
        least = -(-3 * extract.patch_size // 2)
        fix = (
            f"with an ROI a block is shared out only if it holds a position on the half-patch "
            f"grid, which blocks of split.block_size {split.block_size} under 1.5 x "
            f"extract.patch_size ({extract.patch_size}) here miss: raise split.block_size to at "
            f"least {least}, or add images"
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
