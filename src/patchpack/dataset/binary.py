"""The tissue mask's image operations in NumPy alone: Otsu's threshold, an opening, small pieces out.

Each gives exactly what scikit-image's ``threshold_otsu`` and SciPy's ``ndimage.binary_opening``
and ``ndimage.label`` give for the tissue mask's inputs (tests/test_slides.py checks them against
both on random and structured images), without importing SciPy: ``scipy.ndimage`` takes about
0.4 s to import, more than computing a slide's whole mask.

Connectivity is 4 (the cross ``ndimage.generate_binary_structure(2, 1)``), and pixels outside the
image count as background, as with SciPy's defaults.
"""

from __future__ import annotations

import numpy as np


def otsu_threshold(image: np.ndarray) -> int:
    """Otsu's threshold of a non-uniform uint8 image, with scikit-image's arithmetic.

    The histogram runs from the image's lowest to its highest value, its counts as float32, the
    bin centres as int64, and the between-class variance is evaluated in the same order, so ties
    and rounding fall the same way.
    """
    low, high = int(image.min()), int(image.max())
    counts = np.bincount(image.ravel(), minlength=high + 1)[low:].astype(np.float32)
    centres = np.arange(low, high + 1)
    weight1 = np.cumsum(counts)
    weight2 = np.cumsum(counts[::-1])[::-1]
    mean1 = np.cumsum(counts * centres) / weight1
    mean2 = (np.cumsum((counts * centres)[::-1]) / weight2[::-1])[::-1]
    variance12 = weight1[:-1] * weight2[1:] * (mean1[:-1] - mean2[1:]) ** 2
    return int(centres[np.argmax(variance12)])


def opened(mask: np.ndarray) -> np.ndarray:
    """The opening of a boolean mask by the cross: an erosion, then a dilation."""
    eroded = mask.copy()
    eroded[1:] &= mask[:-1]
    eroded[:-1] &= mask[1:]
    eroded[:, 1:] &= mask[:, :-1]
    eroded[:, :-1] &= mask[:, 1:]
    eroded[0] = eroded[-1] = False  # a neighbour outside the image is background
    eroded[:, 0] = eroded[:, -1] = False
    dilated = eroded.copy()
    dilated[1:] |= eroded[:-1]
    dilated[:-1] |= eroded[1:]
    dilated[:, 1:] |= eroded[:, :-1]
    dilated[:, :-1] |= eroded[:, 1:]
    return dilated


def without_small_pieces(mask: np.ndarray, least: int) -> np.ndarray:
    """``mask`` without its 4-connected pieces of fewer than ``least`` pixels.

    The pieces are found over runs of set pixels along rows: runs in neighbouring rows that share a
    column are joined (union-find by hooking roots onto the smallest and jumping pointers, all in
    array operations, a few rounds for any shape), and a piece's size is the sum of its runs.
    """
    height, width = mask.shape
    padded = np.zeros((height, width + 2), np.int8)
    padded[:, 1:-1] = mask
    steps = np.diff(padded, axis=1)
    rows, starts = np.nonzero(steps == 1)  # row-major: the runs in order, each row's by column
    _, ends = np.nonzero(steps == -1)
    if not len(rows):
        return np.zeros_like(mask, dtype=bool)
    # runs of the next row that overlap each run: those ending after it starts and starting before
    # it ends, a contiguous range in the row-major order of the runs
    span = width + 1
    start_keys, end_keys = rows * span + starts, rows * span + ends
    first = np.searchsorted(end_keys, (rows + 1) * span + starts, side="right")
    last = np.searchsorted(start_keys, (rows + 1) * span + ends, side="left")
    counts = np.maximum(last - first, 0)
    left = np.repeat(np.arange(len(rows)), counts)
    right = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    right += np.repeat(first, counts)
    parent = np.arange(len(rows))
    while True:
        a, b = parent[left], parent[right]
        apart = a != b
        if not apart.any():
            break
        np.minimum.at(parent, np.maximum(a, b)[apart], np.minimum(a, b)[apart])
        while True:  # every run points straight at its root
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    sizes = np.bincount(parent, weights=ends - starts, minlength=len(rows))
    kept = sizes[parent] >= least
    marks = np.zeros((height, width + 1), np.int8)
    marks[rows[kept], starts[kept]] = 1  # a run never starts where another ends: a gap parts them
    marks[rows[kept], ends[kept]] = -1
    cleaned: np.ndarray = np.cumsum(marks, axis=1)[:, :width] > 0
    return cleaned
