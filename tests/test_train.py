from __future__ import annotations

import csv
import json
from pathlib import Path

import keras
import numpy as np
import pytest

from patchpack.cli import main
from patchpack.errors import ConfigError, IntegrityError, ModelError
from patchpack.params import Params, params_from_dict
from patchpack.training.evaluate import evaluate_model, score
from patchpack.training.train import accelerator, train_model
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
    assert summary["epochs"] == 2
    assert sorted(p.name for p in (root / "models").iterdir()) == ["cnn.keras"]  # no temp file left
    model = keras.saving.load_model(root / "models" / "cnn.keras")
    assert model.input_shape == (None, 32, 32, 1) and model.output_shape == (None, 3)
    metrics = json.loads((live / "metrics.json").read_text())
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "step"} <= set(metrics)
    assert metrics["best_val_loss"] == pytest.approx(summary["val_loss"])
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
    }  # fmt: skip
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
    assert metrics["test_patches"] == 6
