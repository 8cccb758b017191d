"""The compare stage: both models side by side, speed against accuracy, from their metrics files.

Reads, for each model, what the train stage wrote (``dvclive/<model>/metrics.json``: parameters,
training patches/s, wall time, device, backend) and what the evaluate stage wrote
(``eval/<model>/metrics.json``: test accuracy, macro F1, inference patches/s), and writes
``eval/comparison.png``: test accuracy against inference patches per second, one labelled point per
model, on a log scale (the two models differ by orders of magnitude). It prints the same rows as a
Markdown table. No Keras here: it runs in a second.

Run as ``patchpack compare`` (what the ``compare`` stage of ``dvc.yaml`` does).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from patchpack.dataset.io import atomic_output
from patchpack.errors import ModelError

COLUMNS = (
    ("model", "model", "{}"),
    ("parameters", "parameters", "{:,}"),
    ("test accuracy", "accuracy", "{:.3f}"),
    ("test macro F1", "macro_f1", "{:.3f}"),
    ("training patches/s", "train_patches_per_s", "{:,.1f}"),
    ("inference patches/s", "inference_patches_per_s", "{:,.1f}"),
    ("training wall time (s)", "train_seconds", "{:,.0f}"),
    ("device", "device", "{}"),
    ("backend", "backend", "{}"),
)
"""The table's columns: (heading, key of a row, format)."""


def comparison_rows(
    models: Sequence[str], *, eval_dir: Path, live_dir: Path
) -> list[dict[str, Any]]:
    """One row per model: its train metrics, overlaid with its evaluation metrics, and ``classes``.

    Raises
    ------
    ModelError
        When a model's metrics file is missing or unreadable.
    """
    rows = []
    for model in models:
        trained = _read(Path(live_dir) / model / "metrics.json", f"patchpack train --model {model}")
        folder = Path(eval_dir) / model
        scored = _read(folder / "metrics.json", f"patchpack evaluate --model {model}")
        classes = len(_read(folder / "per_class.json", f"patchpack evaluate --model {model}"))
        rows.append({**trained, **scored, "model": model, "classes": classes})
    return rows


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """``rows`` as a Markdown table of :data:`COLUMNS`; a missing value shows as ``-``."""
    lines = [
        "| " + " | ".join(heading for heading, _, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in rows:
        cells = ["-" if row.get(key) is None else form.format(row[key]) for _, key, form in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_comparison(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Test accuracy against inference patches/s (log scale), one labelled point per model, as PNG."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.0, 4.0), layout="constrained")
    axes = figure.add_subplot()
    for row in rows:
        speed, accuracy = row["inference_patches_per_s"], row["accuracy"]
        axes.scatter([speed], [accuracy], s=60)
        axes.annotate(
            f"{row['model']}\n{row['parameters']:,} parameters\n"
            f"trains at {row['train_patches_per_s']:,.0f} patches/s",
            (speed, accuracy),
            xytext=(8, -4),
            textcoords="offset points",
            va="top",
        )
    speeds = [row["inference_patches_per_s"] for row in rows]
    axes.set_xscale("log")
    axes.set_xlim(min(speeds) / 3, max(speeds) * 10)
    axes.set_ylim(0, 1)
    chance = 1 / max(row["classes"] for row in rows)
    axes.axhline(chance, color="grey", linestyle=":", linewidth=1)
    axes.annotate("chance", (min(speeds) / 3, chance), xytext=(4, 3), textcoords="offset points")
    axes.set_xlabel(f"inference patches per second ({_where(rows)}, log scale)")
    axes.set_ylabel("test accuracy")
    axes.grid(True, which="both", alpha=0.3)
    with atomic_output(path) as tmp:
        figure.savefig(tmp, dpi=100)


def _where(rows: Sequence[dict[str, Any]]) -> str:
    places = sorted({f"{row.get('device', '?')}, {row.get('backend', '?')}" for row in rows})
    return "; ".join(places)


def _read(path: Path, how: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path}: no metrics here; run `{how}` (or `dvc repro`)") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable metrics ({exc}); run `{how}` again") from exc
    if not isinstance(value, dict):
        raise ModelError(f"{path}: expected a JSON object; run `{how}` again")
    return value
