"""What a plan is made of, and the two rules every step of planning shares.

A plan is, per image, a tuple of :class:`Draw`: a split, a count of patches, the rectangles they lie
in and the stream they are drawn from. Its rows (patch indices, corners, labels) come later, from
:mod:`~patchpack.dataset.plan.sampling`. Every random choice comes from :func:`image_rng`, one
generator per (seed, purpose, image), and every share-out of a count from
:func:`largest_remainder`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from patchpack.dataset.sources import SourceImage
from patchpack.dataset.tissue import Roi

STREAM_SPLIT = 1
STREAM_BLOCKS = 2
STREAM_PATCHES = 3


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
