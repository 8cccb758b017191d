"""The evaluate stage: score a trained model on the test split.

Writes into ``out_dir`` (e.g. ``eval/cnn``):

* ``metrics.json``: ``accuracy``, ``loss`` (mean cross-entropy), ``macro_f1``, ``macro_precision``,
  ``macro_recall`` and ``test_patches``, and the model's cost: ``parameters``,
  ``inference_patches_per_s`` (see :func:`predict`), ``device`` and ``backend``, for
  ``dvc metrics show`` / ``dvc metrics diff``;
* ``per_class.json``: ``precision``, ``recall``, ``f1`` and ``support`` for each class name (kept out
  of ``metrics.json`` so that ``dvc metrics show`` stays a readable table);
* ``confusion.csv``: one ``actual,predicted`` row of class names per test patch, in canonical order,
  for DVC's ``confusion`` plot template (``dvc plots show``);
* ``confusion.png``: the confusion matrix drawn with matplotlib (Agg, no display needed).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from patchpack.dataset.io import atomic_output, write_json_atomic
from patchpack.errors import ConfigError, ModelError
from patchpack.params import Params
from patchpack.training.device import accelerator
from patchpack.training.loader import open_dataset
from patchpack.training.prediction_maps import write_maps

# Probabilities are clipped away from 0 before the log, as Keras' cross-entropy does.
_EPSILON = 1e-7


def evaluate_model(
    params: Params,
    model_name: str,
    *,
    data: Path,
    models_dir: Path,
    out_dir: Path,
) -> dict[str, Any]:
    """Evaluate ``<models_dir>/<model_name>.keras`` on the test split of ``data``.

    Parameters
    ----------
    params : Params
        Reads ``train.<model_name>.batch_size`` (the batch size only changes speed) and
        ``train.loader_workers``.
    model_name : str
        ``cnn`` or ``resnet50``.
    data : Path
        An extracted dataset folder.
    models_dir : Path
        Where ``patchpack train`` wrote ``<model_name>.keras``.
    out_dir : Path
        Where ``metrics.json``, ``per_class.json``, ``confusion.csv`` and ``confusion.png`` are
        written.

    Returns
    -------
    dict
        The content of ``metrics.json``, and ``per_class``: the content of ``per_class.json``.
        ``inference_patches_per_s`` is the model's speed alone (reading shards is not counted).

    Raises
    ------
    ModelError
        When the model file is missing or unreadable, or does not take this dataset's patches.
    IntegrityError
        When the dataset is missing, incomplete or a shard is unreadable.
    ConfigError
        When the model name is unknown or the test split is empty.
    """
    settings = params.train.model(model_name)
    path = Path(models_dir) / f"{model_name}.keras"
    with open_dataset(data) as dataset:
        test = dataset.split("test")
        if len(test) == 0:
            raise ConfigError(
                f"{dataset.folder}: the test split has no patches; raise split.fractions.test "
                f"above 0 and run patchpack extract again"
            )
        model = load_model(path)
        expected = tuple(model.input_shape[1:])
        if expected != dataset.input_shape:
            raise ModelError(
                f"{path}: the model takes patches of shape {expected}, but {dataset.folder} has "
                f"{dataset.input_shape}; retrain with `patchpack train --model {model_name}`"
            )
        labels, probabilities, speed = predict(
            model,
            test.batches(
                settings.batch_size,
                shuffle=False,
                workers=params.train.loader_workers,
                targets="labels",
            ),
        )
        class_names = dataset.class_names
        manifest = dataset.manifest
    predicted = probabilities.argmax(axis=1)
    metrics = score(labels, probabilities, class_names)
    metrics.update(
        parameters=int(model.count_params()),
        inference_patches_per_s=round(speed, 2),
        device=accelerator(),
        backend=keras.backend.backend(),
    )
    out_dir = Path(out_dir)
    write_json_atomic(out_dir / "per_class.json", metrics["per_class"])
    write_json_atomic(
        out_dir / "metrics.json", {k: v for k, v in metrics.items() if k != "per_class"}
    )
    write_confusion_csv(out_dir / "confusion.csv", labels, predicted, class_names)
    plot_confusion(out_dir / "confusion.png", labels, predicted, class_names)
    write_maps(manifest, probabilities, out_dir / "maps")
    return metrics


def predict(
    model: Any,
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    *,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Run ``model`` over ``batches``; return the labels, the probabilities and patches per second.

    The speed counts the model's time only, and leaves out each batch of a shape not seen before:
    the first batch traces (and compiles) the model, and so may a shorter last batch. When every
    batch is of a new shape, all of them count.

    Returns
    -------
    labels : ndarray of shape (n_patches,), int32
    probabilities : ndarray of shape (n_patches, n_classes), float64
    patches_per_second : float
    """
    shapes: set[tuple[int, ...]] = set()
    label_parts, probability_parts = [], []
    warm = [0.0, 0]  # seconds, patches of batches whose shape was seen before
    every = [0.0, 0]
    for images, batch_labels in batches:
        started = clock()
        probability_parts.append(np.asarray(model.predict_on_batch(images), np.float64))
        seconds = clock() - started
        label_parts.append(batch_labels)
        counters = (warm, every) if images.shape in shapes else (every,)
        for counter in counters:
            counter[0] += seconds
            counter[1] += len(images)
        shapes.add(images.shape)
    seconds, patches = warm if warm[1] else every
    return (
        np.concatenate(label_parts),
        np.concatenate(probability_parts),
        patches / seconds if seconds > 0 else 0.0,
    )


def load_model(path: Path) -> Any:
    """Load a ``.keras`` model written by ``patchpack train``.

    Raises
    ------
    ModelError
        When the file is missing or unreadable.
    """
    if not path.is_file():
        raise ModelError(
            f"{path}: no trained model here; run `patchpack train --model {path.stem}` "
            f"(or `dvc repro` / `dvc pull`)"
        )
    try:
        return keras.saving.load_model(path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(
            f"{path}: unreadable model ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            f"retrain with `patchpack train --model {path.stem}`"
        ) from exc


def score(labels: np.ndarray, probabilities: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """Accuracy, cross-entropy, macro and per-class precision/recall/F1.

    Parameters
    ----------
    labels : ndarray of shape (n_patches,), int
    probabilities : ndarray of shape (n_patches, n_classes), float
        The model's softmax output.
    class_names : list of str, n_classes names
    """
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    classes = list(range(len(class_names)))
    predicted = probabilities.argmax(axis=1)
    picked = probabilities[np.arange(len(labels)), labels]
    loss = float(-np.mean(np.log(np.clip(picked, _EPSILON, 1.0))))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0
    )
    macro = precision_recall_fscore_support(
        labels, predicted, labels=classes, average="macro", zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "loss": loss,
        "macro_precision": float(macro[0]),
        "macro_recall": float(macro[1]),
        "macro_f1": float(macro[2]),
        "test_patches": len(labels),
        "per_class": {
            name: {
                "precision": float(precision[k]),
                "recall": float(recall[k]),
                "f1": float(f1[k]),
                "support": int(support[k]),
            }
            for k, name in enumerate(class_names)
        },
    }


def write_confusion_csv(
    path: Path, labels: np.ndarray, predicted: np.ndarray, class_names: list[str]
) -> None:
    """One ``actual,predicted`` row of class names per patch, written atomically."""
    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["actual", "predicted"])
        for actual, guess in zip(labels, predicted, strict=True):
            writer.writerow([class_names[actual], class_names[guess]])


def plot_confusion(
    path: Path, labels: np.ndarray, predicted: np.ndarray, class_names: list[str]
) -> None:
    """Draw the confusion matrix (rows actual, columns predicted, counts in cells) as a PNG."""
    from matplotlib.figure import Figure
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(labels, predicted, labels=list(range(len(class_names))))
    side = 2.0 + 0.6 * len(class_names)
    figure = Figure(figsize=(side + 1.0, side), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes)
    ticks = range(len(class_names))
    axes.set_xticks(ticks, class_names, rotation=45, ha="right")
    axes.set_yticks(ticks, class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("actual")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), count in np.ndenumerate(matrix):
        axes.text(
            col,
            row,
            str(count),
            ha="center",
            va="center",
            color="white" if count > threshold else "black",
        )
    with atomic_output(path) as tmp:
        figure.savefig(tmp, dpi=100)
