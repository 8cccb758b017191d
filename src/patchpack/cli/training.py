"""``patchpack train``, ``evaluate`` and ``compare``: Keras loads only when one of them runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from patchpack.cli._common import (
    DEFAULT_DATA,
    Verb,
    _dataset_required,
    _log_progress,
    _params,
    _require,
    _with_params,
)
from patchpack.params import MODELS


def _training() -> tuple[str, ...]:
    """What training imports: Keras, its backend (KERAS_BACKEND, TensorFlow by default), DVCLive,
    Matplotlib and scikit-learn."""
    import os

    return (
        "keras",
        os.environ.get("KERAS_BACKEND") or "tensorflow",
        "dvclive",
        "matplotlib",
        "sklearn",
    )


def cmd_train(args: argparse.Namespace) -> int:
    _require("train", *_training())
    from patchpack.training.train import train_model

    params = _params(args)
    _log_progress()
    with _dataset_required():
        summary = train_model(
            params,
            args.model,
            data=Path(args.data),
            models_dir=Path(args.models),
            live_dir=Path(args.live) / args.model,
        )
    print(
        f"trained {args.model} on {summary['device']}: best epoch {summary['best_epoch']} of "
        f"{summary['epochs']}, val accuracy {summary['val_accuracy']:.4f}, "
        f"{summary['seconds_per_epoch']:.1f} s per epoch; wrote {summary['path']}"
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    _require("train", *_training())
    from patchpack.training.evaluate import evaluate_model

    params = _params(args)
    out = Path(args.out) / args.model
    with _dataset_required():
        metrics = evaluate_model(
            params, args.model, data=Path(args.data), models_dir=Path(args.models), out_dir=out
        )
    print(
        f"{args.model} on {metrics['test_patches']} test patches: accuracy {metrics['accuracy']:.4f}, "
        f"macro F1 {metrics['macro_f1']:.4f}, loss {metrics['loss']:.4f}; wrote {out}"
    )
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    _require("train", *_training())
    from patchpack.training.compare import comparison_rows, markdown_table, plot_comparison

    rows = comparison_rows(args.models, eval_dir=Path(args.eval), live_dir=Path(args.live))
    plot_comparison(Path(args.out), rows)
    print(markdown_table(rows), end="")
    print(f"wrote {args.out}")
    return 0


def _add_training_verbs(verb: Verb) -> None:
    """``patchpack train``, ``evaluate`` and ``compare``; Keras loads only when one of them runs."""
    sub = verb("train", cmd_train, "train a model on the train split, keeping the best val epoch")
    _with_params(sub)
    sub.add_argument("--model", required=True, choices=MODELS, help="which model to train")
    sub.add_argument(
        "--data", default=str(DEFAULT_DATA), help="dataset folder (default: data/patches)"
    )
    sub.add_argument(
        "--models", default="models", help="folder for <model>.keras (default: models)"
    )
    sub.add_argument("--live", default="dvclive", help="DVCLive folder, one subfolder per model")

    sub = verb(
        "evaluate", cmd_evaluate, "score a trained model on the test split: metrics and plots"
    )
    _with_params(sub)
    sub.add_argument("--model", required=True, choices=MODELS, help="which model to evaluate")
    sub.add_argument(
        "--data", default=str(DEFAULT_DATA), help="dataset folder (default: data/patches)"
    )
    sub.add_argument(
        "--models", default="models", help="folder holding <model>.keras (default: models)"
    )
    sub.add_argument(
        "--out", default="eval", help="output folder, one subfolder per model (default: eval)"
    )

    sub = verb("compare", cmd_compare, "both models side by side: a speed/accuracy table and plot")
    sub.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    sub.add_argument("--eval", default="eval", help="the evaluate stage's folder (default: eval)")
    sub.add_argument("--live", default="dvclive", help="the train stage's DVCLive folder")
    sub.add_argument("--out", default="eval/comparison.png", help="plot to write")
