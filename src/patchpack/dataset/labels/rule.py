"""The label of a patch, and what sampling needs of a source's labels.

``centre``: the class under the patch's centre pixel (row and column ``patch_size // 2``), which is
the centre pixel of its mask target. ``majority``: the class covering the largest share of the
patch, accepted when that share is at least ``labels.min_fraction``; the share is of the patch's
pixels for a raster, and of its area for annotations. A candidate that is unlabelled, or whose two
largest shares are equal, has no label and is redrawn from the same seeded stream.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from patchpack.dataset.tissue import RoiMask

COVERAGE_SIDE = 1024  # longer side of the mask that ``extract.roi: mask`` samples in


class Labeller(Protocol):
    """What sampling needs of a source's labels; coordinates are corners at the sampled level."""

    def labels(self, ys: np.ndarray, xs: np.ndarray, size: int, downsample: float) -> np.ndarray:
        """The label (class index, or -1 for none) of each candidate patch; int32 of shape (n,)."""
        ...

    def target(self, y: int, x: int, size: int, downsample: float) -> np.ndarray:
        """The class numbers under each pixel of one patch (0: none); uint8 of shape (size, size)."""
        ...

    def coverage(self) -> RoiMask:
        """Where any class is set, as a mask of at most about ``COVERAGE_SIDE`` pixels a side."""
        ...


def majority(shares: np.ndarray, min_fraction: float) -> np.ndarray:
    """Per row of ``shares`` (n, K), the class with the largest share, or -1 when it is below
    ``min_fraction`` or tied with another; int32 of shape (n,)."""
    if shares.shape[1] == 0:
        return np.full(len(shares), -1, np.int32)
    best = np.argmax(shares, axis=1)
    top = shares[np.arange(len(shares)), best]
    tied = (shares == top[:, None]).sum(axis=1) > 1
    # a share equal to the minimum passes, whatever rounding made of the division
    passed = top >= min_fraction - 1e-12
    return np.where(passed & ~tied, best, -1).astype(np.int32)
