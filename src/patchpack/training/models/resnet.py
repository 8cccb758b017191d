"""ResNet-50 (He et al. 2015, "Deep Residual Learning for Image Recognition", table 1), Keras 3 only.

The same network as ``keras.applications.ResNet50``: a stem, then four stages of bottleneck blocks
(1x1 conv to ``filters`` channels, 3x3 conv, 1x1 conv to ``4 * filters``; the stride sits on the
first 1x1, as in the paper's v1), global average pooling and a softmax layer: 49 convolutions and one
dense layer, plus one 1x1 projection conv on the shortcut of each stage's first block. Layer names and
weight shapes match ``keras.applications.ResNet50`` (``conv2_block1_1_conv`` ...), channels last,
batch normalization on axis -1.

Small inputs
------------
The ImageNet stem (7x7 stride-2 conv, then 3x3 stride-2 max-pooling) divides the side by 4 and the
three strided stages divide it by 8 more: 224 pixels reach the last stage as 7x7, but a 32x32 patch
would reach it as a single pixel. The rule (:func:`stem_reduction`): the stem divides the side by
the largest of 4, 2 and 1 that still leaves the last stage a map of at least 2x2, that is:

=================  ==========================================================  ===================
shorter side       stem                                                        last stage
=================  ==========================================================  ===================
64 and above       ImageNet: 7x7 stride-2 conv, 3x3 stride-2 max-pool          side / 32 (2x2 ..)
32 to 63           3x3 stride-1 conv, 3x3 stride-2 max-pool                    side / 16 (2x2 ..)
below 32           3x3 stride-1 conv, no max-pool (the CIFAR ResNet stem)      side / 8
=================  ==========================================================  ===================

Why not the CIFAR stem for every small input: without any downsampling in the stem, a 32x32 patch
costs what a 128x128 image costs through the ImageNet stem, four times the cost with the max-pool,
and trains at about 4 patches/s on a 2-core CPU instead of about 15 (measured). Every layer is
zero-padded ('same' or explicit padding) and strided layers round up, so any side of at least one
pixel builds with positive dimensions everywhere; below 16 pixels the last stages see 1x1 maps.
"""

from __future__ import annotations

import keras
from keras import layers

from patchpack.training.models._checks import check_shape

STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))
"""ResNet-50's stages, conv2_x to conv5_x: (filters, blocks, stride of the first block)."""

MIN_LAST_MAP = 2
"""The stem downsamples only as far as leaves the last stage a map of at least this side."""

EXPANSION = 4
_BN_EPSILON = 1.001e-5  # keras.applications' value, so that the two networks compute the same thing


def identity_block(x: keras.KerasTensor, filters: int, *, name: str) -> keras.KerasTensor:
    """Bottleneck block whose shortcut is the input itself (no conv on the shortcut)."""
    shortcut = x
    x = _conv_bn(x, filters, 1, name=f"{name}_1", relu=True)
    x = _conv_bn(x, filters, 3, name=f"{name}_2", relu=True)
    x = _conv_bn(x, EXPANSION * filters, 1, name=f"{name}_3", relu=False)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def conv_block(x: keras.KerasTensor, filters: int, *, stride: int, name: str) -> keras.KerasTensor:
    """Bottleneck block with a strided 1x1 conv (and batch norm) on the shortcut."""
    shortcut = _conv_bn(x, EXPANSION * filters, 1, stride=stride, name=f"{name}_0", relu=False)
    x = _conv_bn(x, filters, 1, stride=stride, name=f"{name}_1", relu=True)
    x = _conv_bn(x, filters, 3, name=f"{name}_2", relu=True)
    x = _conv_bn(x, EXPANSION * filters, 1, name=f"{name}_3", relu=False)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def build_resnet50(input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """ResNet-50 for uint8 patches of ``input_shape`` ``(height, width, n_channels)``.

    The stem depends on the input size (see the module docstring). The softmax layer computes in
    float32 so that the output stays float32 under mixed precision.
    """
    check_shape(input_shape, num_classes)
    inputs = keras.Input(shape=input_shape, dtype="uint8", name="patches")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    x = _stem(x, reduction=stem_reduction(min(input_shape[:2])))
    for stage, (filters, blocks, stride) in enumerate(STAGES, start=2):
        x = conv_block(x, filters, stride=stride, name=f"conv{stage}_block1")
        for block in range(2, blocks + 1):
            x = identity_block(x, filters, name=f"conv{stage}_block{block}")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(
        x
    )
    return keras.Model(inputs, outputs, name="resnet50")


def stem_reduction(side: int) -> int:
    """By how much the stem divides a side of ``side`` pixels: 4 (ImageNet stem), 2 or 1."""
    strided_stages = 2 ** (len(STAGES) - 1)
    for reduction in (4, 2):
        if side // (reduction * strided_stages) >= MIN_LAST_MAP:
            return reduction
    return 1


def _stem(x: keras.KerasTensor, *, reduction: int) -> keras.KerasTensor:
    if reduction == 4:
        x = layers.ZeroPadding2D(padding=3, name="conv1_pad")(x)
        x = layers.Conv2D(64, 7, strides=2, name="conv1_conv")(x)
        x = layers.BatchNormalization(axis=-1, epsilon=_BN_EPSILON, name="conv1_bn")(x)
        x = layers.Activation("relu", name="conv1_relu")(x)
    else:
        x = _conv_bn(x, 64, 3, name="conv1", relu=True)
    if reduction == 1:
        return x
    x = layers.ZeroPadding2D(padding=1, name="pool1_pad")(x)
    return layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)


def _conv_bn(
    x: keras.KerasTensor,
    filters: int,
    kernel_size: int,
    *,
    name: str,
    relu: bool,
    stride: int = 1,
) -> keras.KerasTensor:
    # Convolutions keep their bias, as keras.applications does, so the weights have the same shapes.
    x = layers.Conv2D(filters, kernel_size, strides=stride, padding="same", name=f"{name}_conv")(x)
    x = layers.BatchNormalization(axis=-1, epsilon=_BN_EPSILON, name=f"{name}_bn")(x)
    if relu:
        x = layers.Activation("relu", name=f"{name}_relu")(x)
    return x
