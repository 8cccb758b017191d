"""The light install: reading, verifying and pulling need neither TensorFlow/Keras nor Dask, and a
verb that does need an extra says so in one line."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from support.commands import PATCHPACK

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("keras", "tensorflow", "distributed", "dask", "dvclive", "matplotlib", "sklearn",
         "torch", "jax")  # fmt: skip
CORE_MODULES = (
    "patchpack",
    "patchpack.cli",
    "patchpack.dataset.extract",
    "patchpack.audit.verify",
    "patchpack.audit.info",
    "patchpack.audit.preview",
    "patchpack.sharing.pull",
    "patchpack.sharing.splits",
    "patchpack.training.loader",
)


def _blocked_env(*names: str) -> dict[str, str]:
    paths = [str(REPO / "tests" / "support" / "blocked"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p),
            "PATCHPACK_TEST_BLOCK": ",".join(names)}  # fmt: skip


def test_the_core_imports_no_framework() -> None:
    code = (
        f"import importlib, sys\nfor m in {CORE_MODULES!r}: importlib.import_module(m)\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_core_dependencies_leave_training_and_dask_to_extras() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    core = " ".join(project["dependencies"])
    for name in ("tensorflow", "keras", "dvclive", "matplotlib", "scikit-learn", "distributed"):
        assert name not in core
    extras = project["optional-dependencies"]
    assert {"tensorflow>=2.16", "keras>=3.3"} <= set(extras["train"])
    assert extras["all"] == ["patchpack[train,cluster,index]"]


def test_extract_and_verify_run_with_the_frameworks_blocked(tmp_path: Path) -> None:
    from support.images import make_folder, write_params

    make_folder(tmp_path / "images")
    write_params(tmp_path / "params.yaml", tmp_path / "images")
    env = _blocked_env(*HEAVY)
    for args in (["extract", "--out", "out"], ["verify", "out"], ["info", "out"]):
        done = subprocess.run(
            [*PATCHPACK, *args], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, (args, done.stderr)


@pytest.mark.parametrize(
    ("args", "missing", "extra"),
    [
        (["train", "--model", "cnn"], "keras", "train"),
        (["evaluate", "--model", "cnn"], "keras", "train"),
        (["extract", "--cluster", "local:2"], "distributed", "cluster"),
    ],
)
def test_a_verb_without_its_extra_says_what_to_install(
    tmp_path: Path, args: list[str], missing: str, extra: str
) -> None:
    done = subprocess.run(
        [*PATCHPACK, *args], cwd=tmp_path, env=_blocked_env(*HEAVY), capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert f"{missing} is not installed" in line and f"pip install -e '.[{extra}]'" in line
