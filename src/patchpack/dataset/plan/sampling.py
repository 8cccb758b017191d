"""The seeded patches of one image: random candidates or grid positions, kept by ROI, label and std.

Random patches of one (image, split) come in *segments* of :data:`SEGMENT` patches, each drawn from
its own stream (seed, image, split, segment) in fixed batches of candidates; a rejected candidate is
replaced by the next one of the same segment's stream. So the first ``k`` patches are the same
whatever the count, and any segment can be drawn without the others: the shards of one slide build
on many workers at once, in the same bytes (format 3; format 2 drew each (image, split) from one
stream). Grid sampling takes every grid position the ROI keeps and that carries a label.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from patchpack.dataset.labels.rule import Labeller
from patchpack.dataset.pixelstd import at_least
from patchpack.dataset.plan.draws import (
    STREAM_PATCHES,
    STREAM_SPLIT,
    Draw,
    ImagePlan,
    Rows,
    image_rng,
    largest_remainder,
)
from patchpack.dataset.plan.regions import grid_coords
from patchpack.errors import SourceError
from patchpack.params import SPLITS, ExtractParams, SplitParams

DRAW_BATCH = 256  # candidates drawn per generator call; fixed so prefixes of the stream are stable
SEGMENT = 128  # patches per stream segment: fixed, so a segment's patches never depend on the count


def segments_of(count: int) -> range:
    """The segments of a draw of ``count`` patches."""
    return range(-(-count // SEGMENT))


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
    segments: range | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Top-left corners of ``draw.count`` patches inside ``draw.rects`` (or of the patches of
    ``segments`` only), drawn segment by segment from the image's streams.

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
        When a segment's patches do not all pass within ``SEGMENT * max_tries`` candidates.
    """
    check = min_std > 0
    if check and pixels is None:
        raise ValueError("pixels are required when min_std > 0")
    rects = draw.rects
    spans = np.array([[r.y0, r.y1 - patch_size + 1, r.x0, r.x1 - patch_size + 1] for r in rects])
    weights = (spans[:, 1] - spans[:, 0]).astype(np.float64) * (spans[:, 3] - spans[:, 2])
    weights /= weights.sum()
    space = _Space(plan, draw, spans, weights, patch_size, pixels if check else None, min_std)
    parts = [
        space.segment(seed, number, max_tries, labeller)
        for number in (segments_of(draw.count) if segments is None else segments)
    ]
    coords = np.concatenate([c for c, _ in parts]).astype(np.int32)
    labels = np.concatenate([lab for _, lab in parts]) if parts else np.empty(0, np.int32)
    return coords.reshape(-1, 2), (labels if labeller is not None else None)


class _Space:
    """Where one draw's candidates come from, and the checks they pass."""

    def __init__(
        self,
        plan: ImagePlan,
        draw: Draw,
        spans: np.ndarray,
        weights: np.ndarray,
        patch_size: int,
        pixels: Pixels | None,
        min_std: float,
    ) -> None:
        self.plan, self.draw, self.spans, self.weights = plan, draw, spans, weights
        self.patch_size, self.pixels, self.min_std = patch_size, pixels, min_std

    def segment(
        self, seed: int, number: int, max_tries: int, labeller: Labeller | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The patches of segment ``number``: (coords (k, 2), labels (k,))."""
        plan, draw = self.plan, self.draw
        count = min(SEGMENT, draw.count - number * SEGMENT)
        rng = image_rng(seed, STREAM_PATCHES, plan.source.id, draw.stream, number)
        accepted: list[np.ndarray] = [np.empty((0, 2), np.int64)]
        accepted_labels: list[np.ndarray] = [np.empty(0, np.int32)]
        # the same budget for every segment, a short last one included: whether a draw fails
        # does not depend on where the count ends
        found, tried, budget = 0, 0, SEGMENT * max_tries
        while found < count:
            if tried >= budget:
                raise SourceError(self._too_few(number * SEGMENT + found, tried, labeller))
            ys, xs = self._candidates(rng, min(DRAW_BATCH, budget - tried))
            ys, xs, labels = self._kept(ys, xs, labeller, count - found)
            tried += min(DRAW_BATCH, budget - tried)
            take = min(len(ys), count - found)
            accepted.append(np.stack([ys[:take], xs[:take]], axis=1))
            accepted_labels.append(labels[:take])
            found += take
        return np.concatenate(accepted), np.concatenate(accepted_labels)

    def _candidates(self, rng: np.random.Generator, room: int) -> tuple[np.ndarray, np.ndarray]:
        spans = self.spans
        which = rng.choice(len(spans), size=DRAW_BATCH, p=self.weights)
        low_y, high_y = spans[which, 0], spans[which, 1]
        low_x, high_x = spans[which, 2], spans[which, 3]
        ys = low_y + (rng.random(DRAW_BATCH) * (high_y - low_y)).astype(np.int64)
        xs = low_x + (rng.random(DRAW_BATCH) * (high_x - low_x)).astype(np.int64)
        return ys[:room], xs[:room]

    def _kept(
        self, ys: np.ndarray, xs: np.ndarray, labeller: Labeller | None, needed: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The candidates the ROI keeps, that carry a label and pass the std check, in order."""
        plan, size = self.plan, self.patch_size
        downsample = plan.source.size.downsample
        if plan.roi is not None:
            keep = plan.roi.keep(ys, xs, size, downsample)
            ys, xs = ys[keep], xs[keep]
        labels = np.zeros(len(ys), np.int32)
        if labeller is not None and len(ys):
            labels = labeller.labels(ys, xs, size, downsample)
            keep = labels >= 0
            ys, xs, labels = ys[keep], xs[keep], labels[keep]
        if self.pixels is not None and len(ys):
            keep = _kept_by_std(self.pixels, ys, xs, size, self.min_std, needed)
            ys, xs, labels = ys[keep], xs[keep], labels[keep]
        return ys, xs, labels

    def _too_few(self, found: int, tried: int, labeller: Labeller | None) -> str:
        plan, draw = self.plan, self.draw
        return (
            f"{plan.source.path}: only {found} of {draw.count} {draw.split} patches have pixel "
            f"std >= extract.min_std={self.min_std:g}{_roi_words(plan)}"
            f"{' and carry a label' if labeller else ''} after {tried} tries; lower "
            f"extract.min_std{' or extract.min_roi_fraction' if plan.roi else ''} or the "
            f"patch count{_label_advice(plan, labeller)}, or remove the image"
        )


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
        kept: np.ndarray = at_least(windows[ys, xs].reshape(len(ys), -1), min_std)
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


def segmented(plan: ImagePlan, split: str, extract: ExtractParams) -> bool:
    """Whether the patches of ``split`` can be drawn segment by segment: random sampling, and the
    split has its own draw (patch mode shares one draw of the whole image among the splits)."""
    return extract.sampling == "random" and any(draw.split == split for draw in plan.draws)


def sample_image(
    plan: ImagePlan,
    *,
    seed: int,
    extract: ExtractParams,
    split: SplitParams,
    pixels: Pixels | None = None,
    only: str | None = None,
    labeller: Labeller | None = None,
    segment: int | None = None,
) -> dict[str, Rows]:
    """Every patch of one image, by split, in patch-index order.

    ``only`` restricts the work to one split (the others are left out of the result), and
    ``segment`` to one segment of its patches (when :func:`segmented` says the split has them).
    ``pixels`` (shape (height, width, channels)) is needed only when ``extract.min_std > 0``.
    ``labeller`` labels each patch when labels come from label files; without one every patch
    takes its image's label (its class folder).
    """
    rows: dict[str, Rows] = {}
    for draw in plan.draws:
        if only is not None and draw.split not in (only, "*"):
            continue
        if segment is not None and draw.split == only and extract.sampling == "random":
            coords, labels = draw_coords(
                plan,
                draw,
                seed=seed,
                patch_size=extract.patch_size,
                pixels=pixels,
                min_std=extract.min_std,
                max_tries=extract.max_tries,
                labeller=labeller,
                segments=range(segment, segment + 1),
            )
            first = draw.first_index + segment * SEGMENT
            index = np.arange(first, first + len(coords), dtype=np.int32)
            if labels is None:
                labels = np.full(len(coords), plan.source.label, np.int32)
            return {draw.split: Rows(index, coords, labels)}
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
