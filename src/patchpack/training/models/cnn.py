"""The baseline: the small convnet of the Keras MNIST example (keras.io/examples/vision/mnist_convnet).

Two 3x3 convolutions (32 then 64 filters, ReLU), each followed by 2x2 max-pooling, then dropout 0.5 and
a softmax layer. Patches need a side of at least 10 pixels (10 -> 8 -> 4 -> 2 -> 1).
"""

from __future__ import annotations

import keras
from keras import layers

from patchpack.training.models._checks import check_shape

MIN_SIDE = 10


def build_cnn(input_shape: tuple[int, int, int], num_classes: int) -> keras.Sequential:
    """The Keras MNIST convnet for uint8 patches of ``input_shape`` ``(height, width, n_channels)``.

    The softmax layer computes in float32 so that the output stays float32 under mixed precision.
    """
    check_shape(input_shape, num_classes, min_side=MIN_SIDE)
    return keras.Sequential(
        [
            keras.Input(shape=input_shape, dtype="uint8"),
            layers.Rescaling(1.0 / 255),
            layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Flatten(),
            layers.Dropout(0.5),
            layers.Dense(num_classes, activation="softmax", dtype="float32"),
        ],
        name="cnn",
    )
