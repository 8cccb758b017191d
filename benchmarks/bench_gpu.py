"""Both models on a GPU: training speed from the shard loader against in-memory batches, and accuracy.

One command, on any Keras backend (TensorFlow is not needed with ``KERAS_BACKEND=jax`` or ``torch``)::

    KERAS_BACKEND=torch python benchmarks/bench_gpu.py               # data/patches: `dvc pull` first
    python benchmarks/bench_gpu.py --smoke                           # CPU, tiny data, about a minute

For each model (``cnn``, ``resnet50``) and each step configuration (float32 or ``mixed_float16``,
with and without ``jit_compile``: XLA on TensorFlow and JAX, ``torch.compile`` on PyTorch) it trains
on the train split from

* the shard loader (:class:`~patchpack.training.keras_adapter.ShardSequence`, the real thing), and
* synthetic batches of the same shapes already in memory (a ``PyDataset`` that returns slices of a
  random uint8 array: no reading at all, the upper bound),

after one untimed epoch that compiles the step: three epochs from each source, alternating, twice,
and reports the best training patches/s of each (the first step of each run is left out, as in
``patchpack train``). Target: the shard loader reaches at least 0.9 of the in-memory speed, i.e. the
GPU never waits for the shards.

Then it runs ``patchpack train``'s and ``patchpack evaluate``'s code once per model (up to 30 CNN and
10 ResNet-50 epochs, early stopping as in params.yaml, mixed precision and XLA on, as
``train.mixed_precision``/``train.jit_compile`` do on a GPU) and reports the test accuracy, the
training and inference speeds and the wall time.

It writes everything, with the GPU's name and the versions, to ``--out`` (JSON) and prints tables.
On JAX, ``jit_compile=False`` would run every step op by op, so only compiled steps are measured.
``--smoke`` makes a tiny dataset from the demo photographs in a temporary folder and runs the same
code on the CPU with small sizes: it proves the script works, not how fast anything is.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import platform
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from patchpack.dataset.extract import extract
from patchpack.dataset.sources import export_demo
from patchpack.params import DEFAULT_MODELS, params_from_dict
from patchpack.training.device import accelerator, device_name
from patchpack.training.evaluate import evaluate_model
from patchpack.training.keras_adapter import ShardSequence
from patchpack.training.loader import BatchOptions, open_dataset
from patchpack.training.models import build_model
from patchpack.training.train import TrainingSpeed, train_model

# tests/test_backends.py runs this file with runpy.run_path, which leaves its folder off sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import interleaved, session, table, timed, write_json

MODELS = ("cnn", "resnet50")
POLICIES = ("float32", "mixed_float16")
TARGET_RATIO = 0.9


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much work each measurement does."""

    epochs: int  # passes over the train split per throughput run
    rounds: int  # alternating shard/in-memory runs; the best of each counts
    train_epochs: dict[str, int]  # epochs of the short training run, per model
    bn_batches: int  # BatchNorm re-estimation batches in the short training run
    matrix: tuple[str, ...]  # models whose throughput is measured; every model gets the short run
    jit: tuple[bool, ...]  # jit_compile settings measured (JAX: always True, its only fast path)


GPU_SIZES = Sizes(
    epochs=3,
    rounds=2,
    train_epochs={"cnn": 30, "resnet50": 10},
    bn_batches=16,
    matrix=MODELS,
    jit=(False, True),
)
# On a CPU, compiling takes tens of seconds per model and configuration (minutes for
# torch.compile): smoke measures the CNN's throughput without jit_compile, in both dtype policies,
# and gives ResNet-50 the short training run only.
SMOKE_SIZES = Sizes(
    epochs=1,
    rounds=1,
    train_epochs={"cnn": 1, "resnet50": 1},
    bn_batches=2,
    matrix=("cnn",),
    jit=(False,),
)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sizes = SMOKE_SIZES if args.smoke else GPU_SIZES
    if not args.smoke and not (Path(args.data) / "manifest.json").is_file():
        print(
            f"{args.data}: no dataset here; run `dvc pull` or `dvc repro extract` first, "
            f"or pass --data DIR (or --smoke for a tiny one)",
            file=sys.stderr,
        )
        return 2
    with session():
        report, seconds = timed(lambda: measure(args, sizes))
        report["seconds"] = round(seconds, 1)
        report["tensorflow_imported"] = "tensorflow" in sys.modules
        write_json(Path(args.out), report)
        print(render(report))
        print(f"wrote {args.out}")
    return 0


def measure(args: argparse.Namespace, sizes: Sizes) -> dict[str, Any]:
    """The throughput matrix and the short training runs, on ``--data`` or a smoke dataset."""
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        data = smoke_dataset(Path(tmp)) if args.smoke else Path(args.data)
        report: dict[str, Any] = {"environment": environment(), "smoke": args.smoke}
        report["throughput"] = [
            throughput(data, model, policy, jit, sizes=sizes, workers=args.workers)
            for model in args.models
            if model in sizes.matrix
            for policy, jit in configurations(sizes)
        ]
        report["training"] = [
            short_run(data, Path(tmp) / "runs", model, sizes=sizes) for model in args.models
        ]
    return report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/patches", help="an extracted dataset folder")
    parser.add_argument("--out", default=".bench/gpu.json", help="the JSON report")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument(
        "--workers", type=int, default=2, help="loader threads (train.loader_workers)"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny data on the CPU: checks the script in a minute"
    )
    return parser


def configurations(sizes: Sizes) -> list[tuple[str, bool]]:
    """(dtype policy, jit_compile) pairs to measure on this backend."""
    # JAX without jit runs op by op (about 100x slower): XLA is its only fast path.
    jits = (True,) if keras.backend.backend() == "jax" else sizes.jit
    return [(policy, jit) for policy in POLICIES for jit in jits]


def environment() -> dict[str, Any]:
    """Backend, device, the GPU's (or CPU's) name and the versions that decide the speed."""
    backend = keras.backend.backend()
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend, backend)
    return {
        "backend": backend,
        "backend_version": getattr(sys.modules.get(module), "__version__", "?"),
        "keras_version": keras.__version__,
        "device": accelerator(),
        "device_name": device_name(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }


def smoke_dataset(folder: Path) -> Path:
    """A tiny dataset (8 classes, 24 patches of 32x32 per demo photograph) extracted into ``folder``."""
    export_demo(folder / "demo")
    params = params_from_dict(
        {
            "base": {"seed": 7},
            "source": {"dir": str(folder / "demo")},
            "extract": {"patch_size": 32, "per_image": 24},
            "shards": {"target_patches": 64, "chunk_patches": 16},
        }
    )
    extract(params, out=folder / "patches")
    return folder / "patches"


class InMemoryBatches(keras.utils.PyDataset):  # type: ignore[misc]  # Keras ships no type hints
    """Batches sliced from a random uint8 array held in memory: no reading at all, the upper bound.

    Same batch shapes, worker threads and queue as the :class:`ShardSequence` it is compared with.
    """

    def __init__(
        self, shape: tuple[int, ...], classes: int, batch_size: int, *, workers: int
    ) -> None:
        super().__init__(workers=max(1, workers), max_queue_size=10)
        rng = np.random.default_rng(0)
        self.images = rng.integers(0, 256, size=shape, dtype=np.uint8)
        self.labels = rng.integers(0, classes, size=shape[0]).astype(np.int32)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.images[rows], self.labels[rows]


def throughput(
    data: Path, model_name: str, policy: str, jit: bool, *, sizes: Sizes, workers: int
) -> dict[str, Any]:
    """Training patches/s of one configuration, from the shards and from memory."""
    print(f"== throughput: {model_name}, {policy}, jit_compile={jit}", file=sys.stderr, flush=True)
    batch_size = DEFAULT_MODELS[model_name].batch_size
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        with open_dataset(data) as dataset:
            split = dataset.split("train")
            classes = len(dataset.class_names)
            keras.utils.set_random_seed(0)
            model = build_model(model_name, dataset.input_shape, classes)
            model.compile(
                optimizer=keras.optimizers.Adam(1e-3),
                loss="sparse_categorical_crossentropy",
                jit_compile=jit,
            )
            sources = {
                "memory": InMemoryBatches(
                    (len(split), *dataset.input_shape), classes, batch_size, workers=workers
                ),
                "shards": ShardSequence(split, BatchOptions(batch_size, seed=0, workers=workers)),
            }
            # One untimed epoch compiles the step for every batch shape (a shorter last batch too).
            model.fit(sources["memory"], epochs=1, shuffle=False, verbose=0)

            def speed_of(source: keras.utils.PyDataset) -> float:
                speed = TrainingSpeed(len(split), batch_size)
                model.fit(source, epochs=sizes.epochs, shuffle=False, callbacks=[speed], verbose=0)
                return speed.patches_per_second()

            speeds = interleaved(
                {name: functools.partial(speed_of, source) for name, source in sources.items()},
                sizes.rounds,
            )
    finally:
        keras.mixed_precision.set_global_policy(previous)
    best = {name: max(0.0, *values) for name, values in speeds.items()}
    ratio = best["shards"] / best["memory"] if best["memory"] else 0.0
    return {
        "model": model_name,
        "policy": policy,
        "jit_compile": jit,
        "batch_size": batch_size,
        "shards_patches_per_s": round(best["shards"], 1),
        "memory_patches_per_s": round(best["memory"], 1),
        "ratio": round(ratio, 3),
        "meets_target": ratio >= TARGET_RATIO,
    }


def short_run(data: Path, work: Path, model_name: str, *, sizes: Sizes) -> dict[str, Any]:
    """``train_model`` then ``evaluate_model`` with the default params, mixed precision and XLA on."""
    print(f"== short training run: {model_name}", file=sys.stderr, flush=True)
    params = params_from_dict(
        {
            "train": {
                "mixed_precision": True,
                "jit_compile": True,
                model_name: {
                    "epochs": sizes.train_epochs[model_name],
                    "bn_batches": sizes.bn_batches,
                    "patience": 3,
                },
            }
        }
    )
    paths = {"data": data, "models_dir": work / "models"}
    (trained, scored), seconds = timed(
        lambda: (
            train_model(params, model_name, **paths, live_dir=work / "live" / model_name),
            evaluate_model(params, model_name, **paths, out_dir=work / "eval" / model_name),
        )
    )
    return {
        "model": model_name,
        "epochs": trained["epochs"],
        "best_epoch": trained["best_epoch"],
        "test_accuracy": round(scored["accuracy"], 4),
        "train_patches_per_s": trained["train_patches_per_s"],
        "inference_patches_per_s": scored["inference_patches_per_s"],
        "seconds": round(seconds, 1),
    }


def render(report: dict[str, Any]) -> str:
    """The report as two plain-text tables."""
    env = report["environment"]
    speeds = [
        (
            row["model"],
            row["policy"],
            row["jit_compile"],
            f"{row['shards_patches_per_s']:,.1f}",
            f"{row['memory_patches_per_s']:,.1f}",
            f"{row['ratio']:.2f}" + ("" if row["meets_target"] else f"  (below {TARGET_RATIO})"),
        )
        for row in report["throughput"]
    ]
    runs = [
        (
            row["model"],
            row["epochs"],
            f"{row['test_accuracy']:.3f}",
            f"{row['train_patches_per_s']:,.1f}",
            f"{row['inference_patches_per_s']:,.1f}",
            f"{row['seconds']:.1f}",
        )
        for row in report["training"]
    ]
    return "\n".join(
        [
            f"{env['device_name']} ({env['device']}), Keras {env['keras_version']}, "
            f"{env['backend']} {env['backend_version']}" + ("  [smoke]" if report["smoke"] else ""),
            "",
            table(speeds, ("model", "policy", "jit", "shards p/s", "memory p/s", "ratio"), left=3),
            "",
            table(runs, ("model", "epochs", "test acc", "train p/s", "infer p/s", "seconds")),
            f"\ntotal {report['seconds']:.0f} s",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
