"""The models patchpack trains: a small baseline convnet and ResNet-50, both Keras 3 only.

Both take uint8 patches of shape (height, width, n_channels) and scale them to [0, 1] inside the
model, so a saved ``.keras`` file is all a partner needs to run it on raw patches.
"""

from __future__ import annotations

from collections.abc import Callable

import keras

from patchpack.errors import ModelError
from patchpack.training.models.cnn import build_cnn
from patchpack.training.models.resnet import build_resnet50

BUILDERS: dict[str, Callable[[tuple[int, int, int], int], keras.Model]] = {
    "cnn": build_cnn,
    "resnet50": build_resnet50,
}

__all__ = ["BUILDERS", "ModelError", "build_cnn", "build_model", "build_resnet50"]


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """Build the untrained model called ``name`` (``cnn`` or ``resnet50``).

    Parameters
    ----------
    name : str
        A key of :data:`BUILDERS`.
    input_shape : tuple of int
        ``(height, width, n_channels)`` of one patch.
    num_classes : int
        Number of classes, at least 2.
    """
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(BUILDERS)}")
    return BUILDERS[name](input_shape, num_classes)
