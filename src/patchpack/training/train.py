"""The train stage: fit one model on the train split, keep the best epoch on the val split.

Keras 3 only (``keras.*``), so the same code runs on the TensorFlow, JAX or PyTorch backend. One call
of :func:`train_model`:

* seeds Keras, NumPy and Python once (``keras.utils.set_random_seed(params.seed)``), and streams
  batches whose order is a function of (seed, epoch) only (:mod:`patchpack.training.loader`);
* uses a GPU when the backend sees one, and only there mixed precision (``train.mixed_precision``)
  and XLA-compiled steps (``train.jit_compile``); on a CPU both are ignored;
* stops early when the val loss has not improved for ``patience`` epochs, restoring the best weights;
* writes the best epoch's model to ``<models_dir>/<model>.keras`` whenever the val loss improves,
  through a temporary file and a rename, so the final path always holds a complete model;
* logs per-epoch metrics and plots through DVCLive into ``live_dir`` (``metrics.json``,
  ``plots/metrics/*.tsv``), without touching ``dvc.yaml`` or git: the stage declares those files.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import keras

from patchpack.dataset.io import atomic_output
from patchpack.errors import ConfigError, ModelError
from patchpack.params import Params
from patchpack.training.keras_adapter import ShardSequence
from patchpack.training.loader import BatchOptions, PatchDataset, open_dataset
from patchpack.training.models import build_model

logger = logging.getLogger(__name__)


def accelerator() -> str:
    """``"GPU"`` when the Keras backend sees a GPU, else ``"CPU"``."""
    devices = keras.distribution.list_devices()
    return "GPU" if any(device.lower().startswith(("gpu", "cuda")) for device in devices) else "CPU"


def train_model(
    params: Params,
    model_name: str,
    *,
    data: Path,
    models_dir: Path,
    live_dir: Path,
) -> dict[str, Any]:
    """Train ``model_name`` (``cnn`` or ``resnet50``) on the dataset in ``data``.

    Parameters
    ----------
    params : Params
        Reads ``seed``, ``train.<model_name>`` (epochs, batch_size, learning_rate, patience),
        ``train.loader_workers``, ``train.mixed_precision`` and ``train.jit_compile``.
    model_name : str
        ``cnn`` or ``resnet50``.
    data : Path
        An extracted dataset folder (``manifest.json`` and shards).
    models_dir : Path
        Where ``<model_name>.keras`` is written.
    live_dir : Path
        DVCLive's folder for this model, e.g. ``dvclive/cnn``.

    Returns
    -------
    dict
        ``model``, ``path``, ``device``, ``epochs`` (run), ``best_epoch`` (1-based), ``val_loss`` and
        ``val_accuracy`` of the best epoch, ``seconds`` and ``seconds_per_epoch`` (wall clock).

    Raises
    ------
    ConfigError
        When the model name is unknown, or the train or val split is empty.
    IntegrityError
        When the dataset is missing, incomplete or a shard is unreadable.
    ModelError
        When no epoch gave a finite val loss (training diverged), so no model was saved.
    """
    keras.utils.set_random_seed(params.seed)
    settings = params.train.model(model_name)
    device = accelerator()
    gpu = device == "GPU"
    policy = "mixed_float16" if gpu and params.train.mixed_precision else "float32"
    jit = gpu and params.train.jit_compile
    logger.info(
        "training %s on %s (backend %s, %s, jit_compile=%s)",
        model_name,
        device,
        keras.backend.backend(),
        policy,
        jit,
    )

    path = Path(models_dir) / f"{model_name}.keras"
    path.parent.mkdir(parents=True, exist_ok=True)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    live = _open_live(Path(live_dir))
    try:
        with open_dataset(data) as dataset:
            train, val = _splits(dataset, settings.batch_size, params)
            model = build_model(model_name, dataset.input_shape, len(dataset.class_names))
            model.compile(
                optimizer=keras.optimizers.Adam(learning_rate=settings.learning_rate),
                loss="sparse_categorical_crossentropy",
                metrics=["accuracy"],
                jit_compile=jit,
            )
            checkpoint = BestCheckpoint(path)
            started = time.perf_counter()
            history = model.fit(
                train,
                validation_data=val,
                epochs=settings.epochs,
                shuffle=False,  # the loader already shuffles, by seed and epoch
                callbacks=[
                    keras.callbacks.EarlyStopping(
                        monitor="val_loss",
                        patience=settings.patience,
                        restore_best_weights=True,
                    ),
                    checkpoint,
                    LiveMetrics(live),
                ],
                verbose=2,
            )
            seconds = time.perf_counter() - started
        if checkpoint.best_epoch is None:
            raise ModelError(
                f"{model_name}: no epoch gave a finite val loss, so nothing was saved to {path}; "
                f"lower train.{model_name}.learning_rate"
            )
        epochs = len(history.history["loss"])
        best = checkpoint.best_epoch
        summary = {
            "model": model_name,
            "path": str(path),
            "device": device,
            "epochs": epochs,
            "best_epoch": best + 1,
            "val_loss": float(history.history["val_loss"][best]),
            "val_accuracy": float(history.history["val_accuracy"][best]),
            "seconds": round(seconds, 3),
            "seconds_per_epoch": round(seconds / epochs, 3),
        }
        live.summary["best_epoch"] = summary["best_epoch"]
        live.summary["best_val_loss"] = summary["val_loss"]
        live.summary["best_val_accuracy"] = summary["val_accuracy"]
        logger.info(
            "%s: best epoch %d of %d (val loss %.4f, val accuracy %.4f), %.1f s per epoch, saved %s",
            model_name,
            best + 1,
            epochs,
            summary["val_loss"],
            summary["val_accuracy"],
            summary["seconds_per_epoch"],
            path,
        )
        return summary
    finally:
        live.end()
        keras.mixed_precision.set_global_policy(previous_policy)


class BestCheckpoint(keras.callbacks.Callback):  # type: ignore[misc]  # Keras ships no type hints
    """Save the model each time ``val_loss`` improves: to a temporary name beside ``path``, renamed.

    Keras' ``ModelCheckpoint(save_best_only=True)`` writes in place, so an interrupted save would leave
    a truncated model at the final path; this one never does.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.best = math.inf
        self.best_epoch: int | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("val_loss")
        if loss is None or not float(loss) < self.best:  # also skips NaN
            return
        self.best, self.best_epoch = float(loss), epoch
        with atomic_output(self.path) as tmp:  # keeps the .keras suffix Keras insists on
            self.model.save(tmp)


class LiveMetrics(keras.callbacks.Callback):  # type: ignore[misc]  # Keras ships no type hints
    """Log every epoch's metrics (``loss``, ``accuracy``, ``val_loss`` ...) to a DVCLive ``Live``.

    dvclive's own ``DVCLiveCallback`` subclasses ``tf.keras``; this one works on any Keras backend.
    """

    def __init__(self, live: Any) -> None:
        super().__init__()
        self.live = live

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for name, value in sorted((logs or {}).items()):
            self.live.log_metric(name, float(value))
        self.live.next_step()


def _open_live(live_dir: Path) -> Any:
    from dvclive.live import Live

    # dvc.yaml declares this stage's metrics and plots, and `dvc exp run` records experiments, so
    # DVCLive neither edits dvc.yaml nor makes git commits of its own.
    return Live(str(live_dir), save_dvc_exp=False, dvcyaml=None, report=None)


def _splits(
    dataset: PatchDataset, batch_size: int, params: Params
) -> tuple[ShardSequence, ShardSequence]:
    workers = params.train.loader_workers
    sequences = []
    for name in ("train", "val"):
        split = dataset.split(name)
        if len(split) == 0:
            raise ConfigError(
                f"{dataset.folder}: the {name} split has no patches, and training needs both train "
                f"and val; raise split.fractions.{name} above 0 and run patchpack extract again"
            )
        options = BatchOptions(
            batch_size, seed=params.seed, shuffle=name == "train", workers=workers
        )
        sequences.append(ShardSequence(split, options))
    return sequences[0], sequences[1]
