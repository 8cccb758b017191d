"""The integer ``min_std`` check decides exactly as NumPy's float64 standard deviation does."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from patchpack.dataset import pixelstd

# rows of 32x32x1, 100x100x3 (not a multiple of the 256-pixel block), 64x64x3 and 256x256x3 pixels
SIZES = (1024, 30_000, 12_288, 196_608)


def _rows(rng: np.random.Generator, k: int, n: int) -> np.ndarray:
    """Rows of every kind of spread: uniform, near-blank (a few levels), two levels, constant."""
    kinds = [
        rng.integers(0, 256, (k, n)),
        100 + rng.integers(0, 3, (k, n)),
        np.where(rng.random((k, n)) < 0.5, 0, 4),
        np.full((k, n), 7),
        rng.integers(250, 256, (k, n)),
    ]
    return np.concatenate(kinds).astype(np.uint8)


def _spreads(rows: np.ndarray) -> list[int]:
    """``n * sum(x**2) - sum(x)**2`` of each row, in Python integers."""
    n = rows.shape[1]
    wide = rows.astype(np.int64)
    return [n * int((r * r).sum()) - int(r.sum()) ** 2 for r in wide]


def _exact_decision(spreads: list[int], n: int, threshold: float) -> np.ndarray:
    """The comparison in exact rationals: what an integer check without the band would decide."""
    return np.array([Fraction(d, n * n) >= Fraction(threshold) ** 2 for d in spreads])


@pytest.mark.parametrize("n", SIZES)
def test_sums_are_exact(n: int) -> None:
    rows = _rows(np.random.default_rng(n), 4, n)
    total, total_sq = pixelstd.exact_sums(rows)
    wide = rows.astype(np.int64)
    assert total.tolist() == [int(r.sum()) for r in wide]
    assert total_sq.tolist() == [int((r * r).sum()) for r in wide]


@pytest.mark.parametrize("n", SIZES)
def test_decisions_equal_float64_std_at_ties_and_near_ties(n: int) -> None:
    """Thresholds at NumPy's own value of a row and one float step either side: where rounding
    decides, the integer check must decide as NumPy does (the exact comparison often does not)."""
    rng = np.random.default_rng(1000 + n)
    rows = _rows(rng, 6 if n < 50_000 else 2, n)
    reference = rows.std(axis=1)
    spreads = _spreads(rows)
    exact_disagrees = 0
    for value in reference[reference > 0]:
        for threshold in (np.nextafter(value, 0), value, np.nextafter(value, np.inf)):
            expected = reference >= threshold
            assert (pixelstd.at_least(rows, float(threshold)) == expected).all()
            exact_disagrees += int(
                (_exact_decision(spreads, n, float(threshold)) != expected).sum()
            )
    # the band is needed: exact arithmetic alone decides some of these ties otherwise
    assert exact_disagrees > 0


def test_decisions_equal_float64_std_on_thousands_of_rows() -> None:
    rng = np.random.default_rng(7)
    rows = np.concatenate([_rows(rng, 400, 1024), rng.integers(0, 256, (2000, 1024))]).astype(
        np.uint8
    )
    reference = rows.std(axis=1)
    for threshold in (0.5, 1.0, 1.2, 2.0, 2.5, 12.5, 70.0, 1e-9, 1e300, float("inf")):
        assert (pixelstd.at_least(rows, threshold) == (reference >= threshold)).all()


def test_two_levels_give_a_tie_at_the_threshold() -> None:
    """Half 0, half 4: the exact standard deviation is 2.0, the default ``min_std``."""
    row = np.tile(np.array([0, 4], np.uint8), 512)[np.newaxis]
    assert float(np.sqrt(pixelstd.exact_sums(row)[1][0] / 1024 - 4.0)) == 2.0
    assert pixelstd.at_least(row, 2.0).tolist() == (row.std(axis=1) >= 2.0).tolist()


def test_values_far_from_the_threshold_are_the_exact_std() -> None:
    rows = _rows(np.random.default_rng(3), 10, 30_000)
    values = pixelstd.stds(rows, 1e-3)
    assert np.allclose(values, rows.std(axis=1), rtol=1e-12, atol=0)
    assert pixelstd.stds(rows[:0], 2.0).shape == (0,)
