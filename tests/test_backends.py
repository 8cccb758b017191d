"""Every Keras backend the README names, tested: TensorFlow, JAX and PyTorch, each in its own process.

Keras fixes its backend at import time, so each backend runs in a subprocess with ``KERAS_BACKEND``
set. The JAX and PyTorch runs also hide TensorFlow from the import system, as if it were not
installed: the README says the code and the GPU benchmark run there without it. A backend that is
not installed is skipped, with the reason; ``.ci/run`` installs the pinned CPU builds, so CI runs
every one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]

# Run `python -c WITHOUT_TENSORFLOW [-m module | script] args...` to run a module or script with
# `import tensorflow` failing (and importlib.util.find_spec finding nothing), as where it is absent.
WITHOUT_TENSORFLOW = """
import importlib.machinery, runpy, sys

class WithoutTensorFlow(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.partition(".")[0] == "tensorflow":
            return None
        return super().find_spec(name, path, target)

finders = sys.meta_path
finders[:] = [WithoutTensorFlow if f is importlib.machinery.PathFinder else f for f in finders]
del sys.argv[0]
if sys.argv[0] == "-m":
    del sys.argv[0]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
else:
    runpy.run_path(sys.argv[0], run_name="__main__")
"""

# The tests that touch Keras: both models, the Keras adapter of the loader, training, evaluation,
# BatchNorm re-estimation, the CLI's train and evaluate verbs.
KERAS_TESTS = (
    "tests/test_models.py",
    "tests/test_train.py",
    "tests/test_loader.py::test_pydataset_moves_to_the_next_epoch",
)


def needs(backend: str) -> None:
    """Skip the calling test when ``backend``'s package is not installed here."""
    if importlib.util.find_spec(backend) is None:
        pytest.skip(
            f"{backend} is not installed; `pip install -e '.[{backend}]' -c constraints.txt` "
            f"(as .ci/run does) runs this test"
        )


def run(backend: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python args...`` from the repository root with ``KERAS_BACKEND=backend``."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    prefix = [] if backend == "tensorflow" else ["-c", WITHOUT_TENSORFLOW]
    return subprocess.run(
        [sys.executable, *prefix, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_keras_tests_pass_without_tensorflow(backend: str) -> None:
    needs(backend)

    result = run(
        backend, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", *KERAS_TESTS
    )

    assert result.returncode == 0, output(result)
    assert " passed" in result.stdout and " failed" not in result.stdout, output(result)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backend", "models"),
    [
        ("tensorflow", ()),  # the README's command as written: both models
        ("jax", ("cnn",)),  # ResNet-50 compiles for minutes on a CPU under JAX: the CNN only
        ("torch", ("cnn",)),
    ],
)
def test_gpu_benchmark_smoke(backend: str, models: tuple[str, ...], tmp_path: Path) -> None:
    needs(backend)
    out = tmp_path / "gpu.json"
    chosen = ("--models", *models) if models else ()

    result = run(backend, "benchmarks/bench_gpu.py", "--smoke", *chosen, "--out", str(out))

    assert result.returncode == 0, output(result)
    report = json.loads(out.read_text())
    assert report["smoke"] is True
    assert report["environment"]["backend"] == backend
    assert report["environment"]["device_name"]
    assert report["tensorflow_imported"] == (backend == "tensorflow")
    policies = {(row["policy"], row["jit_compile"]) for row in report["throughput"]}
    jit = backend == "jax"  # JAX always compiles; smoke leaves jit_compile off elsewhere
    assert policies == {("float32", jit), ("mixed_float16", jit)}
    assert {row["model"] for row in report["throughput"]} == {"cnn"}
    for row in report["throughput"]:
        assert row["shards_patches_per_s"] > 0 and row["memory_patches_per_s"] > 0
    trained = [row["model"] for row in report["training"]]
    assert trained == (list(models) or ["cnn", "resnet50"])
    for row in report["training"]:
        assert 0 <= row["test_accuracy"] <= 1 and row["inference_patches_per_s"] > 0
    assert "test acc" in result.stdout  # the printed table
