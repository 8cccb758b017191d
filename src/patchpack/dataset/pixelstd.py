"""The ``extract.min_std`` check from integer sums, with the float64 check's decisions exactly.

The reference is NumPy's float64 standard deviation, ``rows.std(axis=1) >= min_std``, over each
candidate's pixels: it converts every pixel to float64 and makes two passes. Here each row's sum
and sum of squares are computed exactly, in float32 over blocks of 256 pixels (a block's sum of
squares is at most ``256 * 255**2 < 2**24``, so every partial sum is an integer float32 holds
exactly, in any order of summation) and then added in float64 (exact below ``2**53``). That gives
``D = n * sum(x**2) - sum(x)**2``, and the exact standard deviation is ``sqrt(D) / n``.

Why the decisions are the same. NumPy computes the mean ``m`` (one rounding), ``(x - m)**2`` (two
roundings each) and their sum (at most ``(n - 1)`` roundings of nonnegative terms, whatever the
order), then divides and takes the root: its result is within ``(n + 10) * 2**-53`` of the exact
value, relatively (the rounded mean adds ``n * (mu - m)**2``, below ``2**-90`` of any nonzero
variance of integer pixels, which is at least ``(n - 1) / n**2``; a constant row gives exactly 0).
So wherever the exact value is further than ``DELTA`` (32 times that bound, plus the roundings of
the comparison itself) from ``min_std``, both sides of the comparison agree; a row closer than
that, which in practice is a row whose exact standard deviation equals ``min_std``, is decided by
NumPy's own float64 computation. tests/test_pixelstd.py checks ties, near ties and random rows.
"""

from __future__ import annotations

import math

import numpy as np

BLOCK = 256  # pixels per float32 block: 256 * 255**2 < 2**24, so the block sums are exact


def delta(n: int) -> float:
    """The relative band around ``min_std`` decided by the float64 reference, for rows of ``n``."""
    return (n + 64) * 2.0**-48


def exact_sums(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's sum and sum of squares, exactly, as int64 (rows of uint8, shape (k, n))."""
    k, n = rows.shape
    full = n - n % BLOCK
    blocks = rows[:, :full].reshape(k, -1, BLOCK).astype(np.float32)
    squares = np.einsum("ijk,ijk->ij", blocks, blocks).astype(np.float64).sum(axis=1)
    sums = blocks.sum(axis=2, dtype=np.float32).astype(np.float64).sum(axis=1)
    total, total_sq = sums.astype(np.int64), squares.astype(np.int64)
    if full < n:
        tail = rows[:, full:].astype(np.int64)
        total += tail.sum(axis=1)
        total_sq += (tail * tail).sum(axis=1)
    return total, total_sq


def stds(rows: np.ndarray, min_std: float) -> np.ndarray:
    """Each row's pixel standard deviation, as float64 values that compare with ``min_std``
    exactly as ``rows.std(axis=1)`` does (rows of uint8, shape (k, n)).

    A row far from ``min_std`` gets its exact standard deviation, a row within :func:`delta` of it
    the float64 reference value (see the module docstring).
    """
    k, n = rows.shape
    reference: np.ndarray
    low, high = _band(n, min_std)
    if k == 0 or low is None or high is None:  # nothing to decide, or a threshold out of range
        reference = rows.std(axis=1) if k else np.empty(0)
        return reference
    total, total_sq = exact_sums(rows)
    if n * n * 255**2 < 2**63:
        spread = (n * total_sq - total * total).astype(np.float64)  # exact in int64, then rounded
    else:  # rows of more than 11.8 million pixels: Python integers
        pairs = zip(total.tolist(), total_sq.tolist(), strict=True)
        spread = np.array([float(n * sq - s * s) for s, sq in pairs])
    values: np.ndarray = np.sqrt(spread) / n
    near = (spread >= low) & (spread < high)
    if near.any():
        values[near] = rows[near].std(axis=1)
    return values


def at_least(rows: np.ndarray, min_std: float) -> np.ndarray:
    """Which rows have pixel std >= ``min_std``: ``rows.std(axis=1) >= min_std``, decided from
    integer sums (rows of uint8, shape (k, n))."""
    kept: np.ndarray = stds(rows, min_std) >= min_std
    return kept


def _band(n: int, min_std: float) -> tuple[float | None, float | None]:
    """``(n * min_std * (1 -+ delta))**2``: the values of ``D`` decided by the reference, or
    ``None`` where they under- or overflow."""
    width = delta(n)
    try:
        low = (n * min_std * (1 - width)) ** 2
        high = (n * min_std * (1 + width)) ** 2
    except OverflowError:
        return None, None
    if not (low > 0 and math.isfinite(high)):
        return None, None
    return low, high
