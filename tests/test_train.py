from __future__ import annotations

import csv
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from patchpack.cli import main
from patchpack.errors import ConfigError, IntegrityError, ModelError
from patchpack.params import Params, TrainParams, params_from_dict
from patchpack.training import compare
from patchpack.training.batchnorm import recalibrate_batchnorm
from patchpack.training.evaluate import evaluate_model, predict, score
from patchpack.training.loader import open_dataset
from patchpack.training.models import build_model
from patchpack.training.train import TrainingSpeed, accelerator, compute_settings, train_model
from support.datasets import make_dataset


def tiny_params(model: str = "cnn", **settings: object) -> Params:
    chosen = {"epochs": 2, "batch_size": 16, "learning_rate": 0.003, "patience": 1, **settings}
    return params_from_dict({"base": {"seed": 11}, "train": {"loader_workers": 2, model: chosen}})


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """A tiny dataset and a CNN trained on it for two epochs; returns the work folder and summary."""
    root = tmp_path_factory.mktemp("train")
    make_dataset(root / "patches")
    summary = train_model(
        tiny_params(),
        "cnn",
        data=root / "patches",
        models_dir=root / "models",
        live_dir=root / "dvclive" / "cnn",
    )
    return root, summary


def test_training_writes_the_best_model_and_live_metrics(
    trained: tuple[Path, dict[str, object]],
) -> None:
    root, summary = trained
    live = root / "dvclive" / "cnn"

    assert summary["model"] == "cnn" and summary["device"] == accelerator()
    assert summary["backend"] == keras.backend.backend()
    assert summary["epochs"] == 2
    # no BatchNorm: nothing re-estimated, only the batches' set-up timed (rounded to 1 ms, it
    # reached 0.001 on a loaded machine)
    assert summary["train_patches_per_s"] > 0 and summary["bn_seconds"] <= 0.01
    assert sorted(p.name for p in (root / "models").iterdir()) == ["cnn.keras"]  # no temp file left
    model = keras.saving.load_model(root / "models" / "cnn.keras")
    assert model.input_shape == (None, 32, 32, 1) and model.output_shape == (None, 3)
    metrics = json.loads((live / "metrics.json").read_text())
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "step"} <= set(metrics)
    assert metrics["best_val_loss"] == pytest.approx(summary["val_loss"])
    assert metrics["parameters"] == model.count_params() == summary["parameters"]
    assert metrics["train_patches_per_s"] == summary["train_patches_per_s"]
    assert metrics["train_seconds"] == summary["seconds"]
    assert (metrics["device"], metrics["backend"]) == (accelerator(), keras.backend.backend())
    rows = (live / "plots" / "metrics" / "val_loss.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["step", "val_loss"] and len(rows) == 3
    losses = [float(row.split("\t")[1]) for row in rows[1:]]
    assert summary["best_epoch"] == 1 + losses.index(
        min(losses)
    )  # the epoch the model was kept from
    assert not (root / "dvc.yaml").exists() and not (live / "dvc.yaml").exists()


def test_same_seed_same_model(trained: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    root, summary = trained
    again = train_model(
        tiny_params(),
        "cnn",
        data=root / "patches",
        models_dir=tmp_path / "models",
        live_dir=tmp_path / "live",
    )

    assert again["val_loss"] == pytest.approx(summary["val_loss"], rel=1e-5)


def test_evaluation_writes_metrics_and_plots(
    trained: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    root, _ = trained

    metrics = evaluate_model(
        tiny_params(),
        "cnn",
        data=root / "patches",
        models_dir=root / "models",
        out_dir=tmp_path / "eval",
    )

    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    per_class = json.loads((tmp_path / "eval" / "per_class.json").read_text())
    assert {**saved, "per_class": per_class} == metrics
    assert set(saved) == {
        "accuracy", "loss", "macro_f1", "macro_precision", "macro_recall", "test_patches",
        "parameters", "inference_patches_per_s", "device", "backend",
    }  # fmt: skip
    assert saved["inference_patches_per_s"] > 0
    assert (saved["device"], saved["backend"]) == (accelerator(), keras.backend.backend())
    assert saved["test_patches"] == 21 and 0 <= saved["accuracy"] <= 1 and saved["loss"] > 0
    assert set(per_class) == {"class_0", "class_1", "class_2"}
    assert sum(c["support"] for c in per_class.values()) == 21
    with open(tmp_path / "eval" / "confusion.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 21 and set(rows[0]) == {"actual", "predicted"}
    correct = sum(row["actual"] == row["predicted"] for row in rows)
    assert correct / 21 == pytest.approx(saved["accuracy"])
    assert (tmp_path / "eval" / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_score_on_known_predictions() -> None:
    labels = np.array([0, 0, 1, 2])
    probabilities = np.array([[0.9, 0.1, 0], [0.2, 0.8, 0], [0, 1.0, 0], [0.5, 0, 0.5]])

    metrics = score(labels, probabilities, ["a", "b", "c"])

    assert metrics["accuracy"] == 0.5  # the tie in the last row goes to the first class
    assert metrics["loss"] == pytest.approx(-np.mean(np.log([0.9, 0.2, 1.0, 0.5])))
    assert metrics["per_class"]["b"] == {"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1}
    assert metrics["macro_recall"] == pytest.approx((0.5 + 1 + 0) / 3)


def test_evaluate_without_model_says_how_to_fix(
    trained: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    root, _ = trained
    with pytest.raises(ModelError, match=r"no trained model.*patchpack train --model cnn"):
        evaluate_model(
            tiny_params(), "cnn", data=root / "patches", models_dir=tmp_path, out_dir=tmp_path
        )
    assert not (tmp_path / "metrics.json").exists()


def test_evaluate_rejects_a_model_for_other_patches(
    trained: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    root, _ = trained
    make_dataset(tmp_path / "rgb", channels=3)
    with pytest.raises(ModelError, match=r"shape \(32, 32, 1\).*\(32, 32, 3\)"):
        evaluate_model(
            tiny_params(),
            "cnn",
            data=tmp_path / "rgb",
            models_dir=root / "models",
            out_dir=tmp_path,
        )


def test_unreadable_model_file(trained: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    root, _ = trained
    (tmp_path / "cnn.keras").write_bytes(b"not a zip file")
    with pytest.raises(ModelError, match="unreadable model"):
        evaluate_model(
            tiny_params(), "cnn", data=root / "patches", models_dir=tmp_path, out_dir=tmp_path
        )


def test_training_without_dataset(tmp_path: Path) -> None:
    with pytest.raises(IntegrityError, match="no manifest"):
        train_model(
            tiny_params(), "cnn", data=tmp_path, models_dir=tmp_path, live_dir=tmp_path / "live"
        )
    assert not (tmp_path / "cnn.keras").exists()


def test_training_needs_a_val_split(tmp_path: Path) -> None:
    make_dataset(tmp_path / "patches", sizes={"train": [20], "test": [5]})
    with pytest.raises(ConfigError, match="val split has no patches"):
        train_model(
            tiny_params(),
            "cnn",
            data=tmp_path / "patches",
            models_dir=tmp_path,
            live_dir=tmp_path / "l",
        )


def test_cli_errors_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("base: {seed: 1}\n")

    code = main(["evaluate", "--model", "cnn", "--data", "missing"])

    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("patchpack evaluate: error:")


def test_cli_evaluate(trained: tuple[Path, dict[str, object]], tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    root, _ = trained
    (tmp_path / "params.yaml").write_text("train: {cnn: {batch_size: 8}}\n")
    code = main(
        [
            "evaluate", "--model", "cnn", "--params", str(tmp_path / "params.yaml"),
            "--data", str(root / "patches"), "--models", str(root / "models"),
            "--out", str(tmp_path / "eval"),
        ]
    )  # fmt: skip

    assert code == 0
    assert "cnn on 21 test patches: accuracy" in capsys.readouterr().out
    assert (tmp_path / "eval" / "cnn" / "metrics.json").is_file()


@pytest.mark.slow
def test_resnet50_trains_one_epoch_on_tiny_data(tmp_path: Path) -> None:
    make_dataset(tmp_path / "patches", sizes={"train": [24], "val": [8], "test": [6]}, channels=3)

    summary = train_model(
        tiny_params("resnet50", epochs=1, batch_size=8),
        "resnet50",
        data=tmp_path / "patches",
        models_dir=tmp_path / "models",
        live_dir=tmp_path / "live",
    )
    metrics = evaluate_model(
        tiny_params("resnet50", batch_size=8),
        "resnet50",
        data=tmp_path / "patches",
        models_dir=tmp_path / "models",
        out_dir=tmp_path / "eval",
    )

    assert summary["epochs"] == 1 and summary["best_epoch"] == 1
    assert np.isfinite(summary["val_loss"])
    assert summary["bn_seconds"] > 0  # the statistics were re-estimated before validation
    assert summary["parameters"] == metrics["parameters"] > 23_000_000
    assert metrics["test_patches"] == 6


def numpy(value: object) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(value))


def bn_model(input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """A tiny convnet with one BatchNorm layer: ResNet-50's problem, in a model that trains in seconds."""
    inputs = keras.Input(shape=input_shape, dtype="uint8")
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs)


def test_recalibration_sets_the_average_of_the_batch_statistics() -> None:
    inputs = keras.Input(shape=(3,))
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(inputs))
    layer = model.get_layer("bn")
    rng = np.random.default_rng(0)
    batches = [rng.normal(k, 1 + k, size=(5, 3)).astype("float32") for k in range(3)]
    before = [numpy(w) for w in layer.trainable_weights]

    used = recalibrate_batchnorm(model, iter(batches), limit=2)

    assert used == 2  # the limit, not the three batches offered
    expected_mean = np.mean([batch.mean(axis=0) for batch in batches[:2]], axis=0)
    expected_var = np.mean([batch.var(axis=0) for batch in batches[:2]], axis=0)
    np.testing.assert_allclose(numpy(layer.moving_mean), expected_mean, rtol=1e-5)
    np.testing.assert_allclose(numpy(layer.moving_variance), expected_var, rtol=1e-5)
    assert layer.momentum == 0.99  # restored
    for old, new in zip(before, layer.trainable_weights, strict=True):
        np.testing.assert_array_equal(old, numpy(new))  # gamma and beta untouched


def test_recalibration_leaves_models_without_batchnorm_and_limit_0_alone() -> None:
    batch = np.zeros((2, 32, 32, 1), np.uint8)
    cnn = build_model("cnn", (32, 32, 1), 3)
    weights = [numpy(w) for w in cnn.weights]
    model = bn_model((32, 32, 1), 3)
    layer = model.get_layer("bn")

    assert recalibrate_batchnorm(cnn, iter([batch]), limit=4) == 0
    assert recalibrate_batchnorm(model, iter([batch]), limit=0) == 0

    for old, new in zip(weights, cnn.weights, strict=True):
        np.testing.assert_array_equal(old, numpy(new))
    np.testing.assert_array_equal(numpy(layer.moving_variance), 1.0)  # still the initial value


def test_validation_and_the_saved_model_use_the_recalibrated_statistics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_dataset(tmp_path / "patches")
    monkeypatch.setattr(
        "patchpack.training.train.build_model",
        lambda _name, shape, classes: bn_model(shape, classes),
    )

    summary = train_model(
        tiny_params(bn_batches=2),
        "cnn",
        data=tmp_path / "patches",
        models_dir=tmp_path / "models",
        live_dir=tmp_path / "live",
    )

    model = keras.saving.load_model(tmp_path / "models" / "cnn.keras")
    layer = model.get_layer("bn")
    saved = [numpy(layer.moving_mean), numpy(layer.moving_variance)]
    with open_dataset(tmp_path / "patches") as dataset:
        train = dataset.split("train").batches(16, seed=11, epoch=0, workers=0)
        recalibrate_batchnorm(model, (images for images, _ in train), limit=2)
        val = list(dataset.split("val").batches(16, shuffle=False))
    val_images = np.concatenate([images for images, _ in val])
    val_labels = np.concatenate([labels for _, labels in val])
    # The saved statistics are those of the first two train batches under the saved weights ...
    np.testing.assert_allclose(saved[0], numpy(layer.moving_mean), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(saved[1], numpy(layer.moving_variance), rtol=1e-4, atol=1e-6)
    # ... and the val loss that chose the epoch was computed with them, not with stale ones.
    loss = model.evaluate(val_images, val_labels, batch_size=16, verbose=0, return_dict=True)[
        "loss"
    ]
    assert loss == pytest.approx(summary["val_loss"], rel=1e-4)
    assert summary["bn_seconds"] > 0


def test_training_speed_leaves_out_the_first_step_and_the_time_between_epochs() -> None:
    ticks = iter([0.0, 10.0, 11.0, 11.5, 100.0, 101.0, 102.0, 102.5])
    speed = TrainingSpeed(10, 4, clock=lambda: next(ticks))  # batches of 4, 4 and 2 patches

    for epoch in range(2):
        speed.on_epoch_begin(epoch)
        for batch in range(3):
            speed.on_train_batch_end(batch)

    # epoch 0: the first step (10 s, compiling) is left out, then 4 + 2 patches in 1.5 s;
    # epoch 1: 10 patches in 2.5 s, the 87.5 s between the epochs (validation) not counted.
    assert (speed.counted, speed.seconds) == (16, 4.0)
    assert speed.patches_per_second() == 4.0


def test_inference_speed_leaves_out_batches_of_a_new_shape() -> None:
    class Model:
        def predict_on_batch(self, images: np.ndarray) -> np.ndarray:
            return np.full((len(images), 2), 0.5)

    def batches(*sizes: int) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(np.zeros((n, 4, 4, 1), np.uint8), np.zeros(n, np.int32)) for n in sizes]

    # Batches of 4 (traces: 10 s), 4 (1 s) and 3 (retraces: 5 s): only the second counts.
    ticks = iter([0.0, 10.0, 10.0, 11.0, 11.0, 16.0])
    labels, probabilities, speed = predict(Model(), batches(4, 4, 3), clock=lambda: next(ticks))
    assert labels.shape == (11,) and probabilities.shape == (11, 2)
    assert speed == 4.0
    # With no batch of a shape seen before, every batch counts.
    ticks = iter([0.0, 2.0])
    assert predict(Model(), batches(5), clock=lambda: next(ticks))[2] == 2.5


def test_mixed_precision_and_xla_only_on_a_gpu() -> None:
    wanted = TrainParams(mixed_precision=True, jit_compile=True)

    settings = compute_settings(wanted)

    assert settings.device == accelerator() and settings.backend == keras.backend.backend()
    if settings.device == "CPU":
        assert settings.policy == "float32"
        assert settings.jit_compile == (settings.backend == "jax")  # JAX always compiles
    else:
        assert (settings.policy, settings.jit_compile) == ("mixed_float16", True)
    assert compute_settings(TrainParams()).policy == "float32"


def test_bn_batches_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"train\.resnet50\.bn_batches.*-1"):
        params_from_dict({"train": {"resnet50": {"bn_batches": -1}}})
    assert params_from_dict({}).train.model("resnet50").bn_batches == 16


def write_metrics(root: Path, model: str, accuracy: float, speed: float) -> None:
    (root / "eval" / model).mkdir(parents=True)
    (root / "dvclive" / model).mkdir(parents=True)
    (root / "eval" / model / "metrics.json").write_text(
        json.dumps({"accuracy": accuracy, "macro_f1": accuracy - 0.1, "inference_patches_per_s": speed,
                    "parameters": 1000, "device": "CPU", "backend": "jax"})
    )  # fmt: skip
    (root / "eval" / model / "per_class.json").write_text(json.dumps({name: {} for name in "abcd"}))
    (root / "dvclive" / model / "metrics.json").write_text(
        json.dumps({"accuracy": 0.99, "train_patches_per_s": speed / 3, "train_seconds": 12.0,
                    "parameters": 1000, "device": "CPU", "backend": "jax"})
    )  # fmt: skip


def test_compare_reads_both_stages_and_draws_the_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_metrics(tmp_path, "cnn", 0.75, 900.0)
    write_metrics(tmp_path, "resnet50", 0.5, 60.0)
    args = ["--eval", str(tmp_path / "eval"), "--live", str(tmp_path / "dvclive")]

    rows = compare.comparison_rows(
        ["cnn", "resnet50"], eval_dir=tmp_path / "eval", live_dir=tmp_path / "dvclive"
    )
    code = main(["compare", *args, "--out", str(tmp_path / "comparison.png")])

    assert [(r["model"], r["accuracy"], r["train_patches_per_s"], r["classes"]) for r in rows] == [
        ("cnn", 0.75, 300.0, 4),
        ("resnet50", 0.5, 20.0, 4),
    ]  # the test accuracy, not the train stage's training accuracy
    assert code == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| model | parameters | test accuracy |")
    assert table[2] == "| cnn | 1,000 | 0.750 | 0.650 | 300.0 | 900.0 | 12 | CPU | jax |"
    assert (tmp_path / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_without_metrics_says_how_to_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_metrics(tmp_path, "cnn", 0.75, 900.0)

    code = main(
        ["compare", "--eval", str(tmp_path / "eval"), "--live", str(tmp_path / "dvclive"),
         "--out", str(tmp_path / "c.png")]
    )  # fmt: skip

    assert code == 2
    assert "resnet50/metrics.json: no metrics here; run `patchpack train --model resnet50`" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "c.png").exists()


def test_prediction_maps_stitch_the_test_patches_of_a_grid_dataset(tmp_path: Path) -> None:
    from patchpack.dataset.extract import extract
    from patchpack.training.prediction_maps import PALETTE, test_provenance, write_maps
    from support.images import make_folder, small_params

    images = make_folder(tmp_path / "images", classes=2, per_class=2, size=(96, 96))
    grid = {"per_image": None, "sampling": "grid", "stride": 16, "min_std": 0.0}
    manifest = extract(small_params(images, extract=grid), out=tmp_path / "grid")
    ids, _ = test_provenance(manifest)
    labels = np.array([0 if source.startswith("class_0") else 1 for source in ids])
    probabilities = np.eye(2)[labels]  # a perfect model: each test patch's own class

    written = write_maps(manifest, probabilities, tmp_path / "maps")

    assert len(written) == len(set(ids)) == 4  # region splits put test blocks in every image
    for path in written:
        pixels = np.asarray(Image.open(path).convert("RGB"))
        assert pixels.shape == (6, 6, 3)  # 96 pixels / stride 16
        colours = {tuple(c) for c in pixels.reshape(-1, 3).tolist()} - {(255, 255, 255)}
        assert len(colours) == 1 and colours <= {tuple(PALETTE[0]), tuple(PALETTE[1])}
    random = extract(small_params(images), out=tmp_path / "random")
    assert write_maps(random, np.zeros((random.count("test"), 2)), tmp_path / "none") == []
