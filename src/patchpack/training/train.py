"""The train stage: fit one model on the train split, keep the best epoch on the val split.

Keras 3 only (``keras.*``), so the same code runs on the TensorFlow, JAX or PyTorch backend. One call
of :func:`train_model`:

* seeds Keras, NumPy and Python once (``keras.utils.set_random_seed(params.seed)``), and streams
  batches whose order is a function of (seed, epoch) only (:mod:`patchpack.training.loader`);
* uses a GPU when the backend sees one, and only there mixed precision (``train.mixed_precision``)
  and XLA-compiled steps (``train.jit_compile``); on a CPU both are ignored, except that the JAX
  backend always compiles its steps (JAX has no other fast path);
* before every validation, re-estimates the BatchNorm moving statistics from ``bn_batches`` train
  batches (:mod:`patchpack.training.batchnorm`), so a short run is scored, kept and saved with
  statistics that match its final weights;
* stops early when the val loss has not improved for ``patience`` epochs, restoring the best weights;
* writes the best epoch's model to ``<models_dir>/<model>.keras`` whenever the val loss improves,
  through a temporary file and a rename, so the final path always holds a complete model;
* logs per-epoch metrics and plots through DVCLive into ``live_dir`` (``metrics.json``,
  ``plots/metrics/*.tsv``), without touching ``dvc.yaml`` or git: the stage declares those files.
  ``metrics.json`` also holds the run's cost: ``parameters``, ``train_patches_per_s``,
  ``train_seconds``, ``device`` and ``backend``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import keras
import numpy as np

from patchpack.dataset.io import atomic_output
from patchpack.errors import ConfigError, ModelError
from patchpack.params import ModelParams, Params, TrainParams
from patchpack.training.batchnorm import BatchNormRecalibration, batchnorm_layers
from patchpack.training.device import accelerator
from patchpack.training.keras_adapter import ShardSequence
from patchpack.training.loader import BatchOptions, PatchDataset, Split, open_dataset
from patchpack.training.models import build_model

logger = logging.getLogger(__name__)

__all__ = [
    "BestCheckpoint",
    "Compute",
    "LiveMetrics",
    "TrainingSpeed",
    "accelerator",
    "compute_settings",
    "train_model",
]


@dataclasses.dataclass(frozen=True)
class Compute:
    """Where and how the steps run: ``device`` (``CPU``/``GPU``), Keras ``backend``, dtype
    ``policy`` (``float32`` or ``mixed_float16``) and ``jit_compile``."""

    device: str
    backend: str
    policy: str
    jit_compile: bool


def compute_settings(train: TrainParams) -> Compute:
    """Mixed precision and XLA only on a GPU, as ``train`` asks; JAX always compiles its steps."""
    device = accelerator()
    gpu = device == "GPU"
    backend = keras.backend.backend()
    return Compute(
        device=device,
        backend=backend,
        policy="mixed_float16" if gpu and train.mixed_precision else "float32",
        # With jit_compile=False the JAX backend runs every step op by op, about 100x slower: XLA
        # is JAX's only fast path, so it stays on there.
        jit_compile=backend == "jax" or (gpu and train.jit_compile),
    )


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
        Reads ``seed``, ``train.<model_name>`` (epochs, batch_size, learning_rate, patience,
        bn_batches), ``train.loader_workers``, ``train.mixed_precision`` and ``train.jit_compile``.
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
        ``model``, ``path``, ``device``, ``backend``, ``parameters`` (weights, trainable or not),
        ``epochs`` (run), ``best_epoch`` (1-based), ``val_loss`` and ``val_accuracy`` of the best
        epoch, ``seconds`` and ``seconds_per_epoch`` (wall clock of ``fit``, validation and BatchNorm
        re-estimation included), ``bn_seconds`` (of which BatchNorm re-estimation) and
        ``train_patches_per_s`` (training steps only, see :class:`TrainingSpeed`).

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
    compute = compute_settings(params.train)
    logger.info(
        "training %s on %s (backend %s, %s, jit_compile=%s)",
        model_name,
        compute.device,
        compute.backend,
        compute.policy,
        compute.jit_compile,
    )
    path = Path(models_dir) / f"{model_name}.keras"
    path.parent.mkdir(parents=True, exist_ok=True)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(compute.policy)
    live = _open_live(Path(live_dir))
    try:
        with open_dataset(data) as dataset:
            summary = _fit(dataset, model_name, settings, params, compute, path, live)
        live.summary.update(
            best_epoch=summary["best_epoch"],
            best_val_loss=summary["val_loss"],
            best_val_accuracy=summary["val_accuracy"],
            parameters=summary["parameters"],
            train_patches_per_s=summary["train_patches_per_s"],
            train_seconds=summary["seconds"],
            device=summary["device"],
            backend=summary["backend"],
        )
        logger.info(
            "%s: best epoch %d of %d (val loss %.4f, val accuracy %.4f), %.1f s per epoch, "
            "%.1f training patches/s, saved %s",
            model_name,
            summary["best_epoch"],
            summary["epochs"],
            summary["val_loss"],
            summary["val_accuracy"],
            summary["seconds_per_epoch"],
            summary["train_patches_per_s"],
            path,
        )
        return summary
    finally:
        live.end()
        keras.mixed_precision.set_global_policy(previous_policy)


def _fit(
    dataset: PatchDataset,
    model_name: str,
    settings: ModelParams,
    params: Params,
    compute: Compute,
    path: Path,
    live: Any,
) -> dict[str, Any]:
    """Build, compile and fit the model; the summary :func:`train_model` returns."""
    train, val = _splits(dataset, settings.batch_size, params)
    model = build_model(model_name, dataset.input_shape, len(dataset.class_names))
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=settings.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=compute.jit_compile,
    )
    speed = TrainingSpeed(len(train.split), settings.batch_size)
    recalibration = BatchNormRecalibration(
        partial(_recalibration_inputs, train.split, settings.batch_size, params.seed),
        limit=settings.bn_batches if batchnorm_layers(model) else 0,
    )
    checkpoint = BestCheckpoint(path)
    started = time.perf_counter()
    history = model.fit(
        train,
        validation_data=val,
        epochs=settings.epochs,
        shuffle=False,  # the loader already shuffles, by seed and epoch
        callbacks=[
            speed,  # first, so that its clock stops before the other callbacks run
            recalibration,  # on_test_begin: before every validation
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
    return {
        "model": model_name,
        "path": str(path),
        "device": compute.device,
        "backend": compute.backend,
        "parameters": int(model.count_params()),
        "epochs": epochs,
        "best_epoch": best + 1,
        "val_loss": float(history.history["val_loss"][best]),
        "val_accuracy": float(history.history["val_accuracy"][best]),
        "seconds": round(seconds, 3),
        "seconds_per_epoch": round(seconds / epochs, 3),
        "bn_seconds": round(recalibration.seconds, 3),
        "train_patches_per_s": round(speed.patches_per_second(), 2),
    }


def _recalibration_inputs(split: Split, batch_size: int, seed: int) -> Iterator[np.ndarray]:
    """The images of epoch 0's first batches (a shuffled sample), read in the calling thread."""
    for images, _ in split.batches(batch_size, seed=seed, epoch=0, workers=0, targets="labels"):
        yield images


class TrainingSpeed(keras.callbacks.Callback):  # type: ignore[misc]  # Keras ships no type hints
    """Training patches per second, from the end of one training step to the end of the next.

    Validation, BatchNorm re-estimation and checkpoints fall between epochs and are not counted; the
    first step of the run is left out too, since it traces and compiles the model.
    """

    def __init__(
        self, patches: int, batch_size: int, *, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        super().__init__()
        self.patches = patches
        self.batch_size = batch_size
        self.clock = clock
        self.seconds = 0.0
        self.counted = 0
        self.steps = 0
        self._clock = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._clock = self.clock()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        now = self.clock()
        if self.steps:
            self.seconds += now - self._clock
            self.counted += min(self.batch_size, self.patches - batch * self.batch_size)
        self._clock = now
        self.steps += 1

    def patches_per_second(self) -> float:
        """Counted patches over counted seconds; 0.0 when only one step ran."""
        return self.counted / self.seconds if self.seconds > 0 else 0.0


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
            batch_size,
            seed=params.seed,
            shuffle=name == "train",
            workers=workers,
            targets="labels",  # the models classify patches, also when masks are stored
        )
        sequences.append(ShardSequence(split, options))
    return sequences[0], sequences[1]
