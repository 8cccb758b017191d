from __future__ import annotations

import keras
import numpy as np
import pytest

from patchpack.training.models import build_model
from patchpack.training.models.resnet import STAGES, build_resnet50, stem_reduction


def conv_layers(model: keras.Model) -> dict[str, tuple[int, ...]]:
    return {
        layer.name: tuple(layer.kernel.shape)
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D)
    }


@pytest.mark.parametrize("name", ["cnn", "resnet50"])
@pytest.mark.parametrize("channels", [1, 3])
def test_output_shape_on_32x32_patches(name: str, channels: int) -> None:
    model = build_model(name, (32, 32, channels), 8)
    batch = np.random.default_rng(0).integers(0, 256, (2, 32, 32, channels), dtype=np.uint8)

    probabilities = np.asarray(model.predict_on_batch(batch))

    assert model.inputs[0].dtype == "uint8"
    assert model.output_shape == (None, 8)
    assert probabilities.shape == (2, 8)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_cnn_is_the_keras_mnist_convnet() -> None:
    model = build_model("cnn", (28, 28, 1), 10)

    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == [
        "Rescaling", "Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D",
        "Flatten", "Dropout", "Dense",
    ]  # fmt: skip
    assert model.count_params() == 34_826  # the count keras.io's MNIST example prints


def test_resnet50_matches_keras_applications() -> None:
    ours = build_resnet50((224, 224, 3), 1000)
    reference = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3), classes=1000)

    assert ours.count_params() == reference.count_params() == 25_636_712
    assert conv_layers(ours) == conv_layers(reference)
    # 1 stem conv + 16 blocks x 3 convs + 4 shortcut projections; with the dense layer, 50 layers.
    assert len(conv_layers(ours)) == 1 + 3 * sum(blocks for _, blocks, _ in STAGES) + 4 == 53


@pytest.mark.parametrize(
    ("side", "reduction", "last_map"),
    [
        (224, 4, 7),
        (128, 4, 4),
        (64, 4, 2),
        (63, 2, 4),
        (32, 2, 2),
        (31, 1, 4),
        (16, 1, 2),
        (8, 1, 1),
    ],
)
def test_stem_keeps_small_inputs_positive(side: int, reduction: int, last_map: int) -> None:
    model = build_resnet50((side, side, 1), 3)

    assert stem_reduction(side) == reduction
    assert model.get_layer("conv5_block3_out").output.shape[1:3] == (last_map, last_map)
    assert ("pool1_pool" in [layer.name for layer in model.layers]) == (reduction > 1)


@pytest.mark.parametrize("name", ["cnn", "resnet50"])
@pytest.mark.parametrize(
    ("shape", "classes", "match"),
    [
        ((32, 32), 4, "height, width, n_channels"),
        ((32, 0, 1), 4, "height, width, n_channels"),
        ((32, 32, 1), 1, "num_classes"),
    ],
)
def test_bad_arguments_are_rejected(
    name: str, shape: tuple[int, ...], classes: int, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        build_model(name, shape, classes)  # type: ignore[arg-type]


def test_cnn_rejects_patches_below_its_minimum() -> None:
    with pytest.raises(ValueError, match="at least 10x10"):
        build_model("cnn", (9, 9, 1), 2)


def test_unknown_model_name() -> None:
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        build_model("vgg", (32, 32, 1), 2)
