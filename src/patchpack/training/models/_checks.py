"""Argument checks shared by the model builders."""

from __future__ import annotations


def check_shape(input_shape: tuple[int, ...], num_classes: int, *, min_side: int = 1) -> None:
    """Validate a model's ``input_shape`` ``(height, width, n_channels)`` and ``num_classes``."""
    if len(input_shape) != 3 or not all(isinstance(v, int) and v >= 1 for v in input_shape):
        raise ValueError(
            f"input_shape must be (height, width, n_channels) of positive integers "
            f"(received {input_shape!r})"
        )
    if min(input_shape[:2]) < min_side:
        raise ValueError(
            f"input_shape {input_shape!r} is too small: this model needs patches of at least "
            f"{min_side}x{min_side} pixels"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer of at least 2 (received {num_classes!r})")
