"""The committed pipeline, run for real with DVC on a copy of this repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]


def dvc(*args: str, cwd: Path) -> str:
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    result = subprocess.run(["dvc", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"dvc {' '.join(args)}: {result.stdout}\n{result.stderr}"
    return result.stdout


def locked_outs(lock: Path) -> dict[str, str]:
    stages = yaml.safe_load(lock.read_text())["stages"]
    return {
        out["path"]: out["md5"] for name in ("sources", "extract") for out in stages[name]["outs"]
    }


@pytest.mark.slow
def test_dvc_repro_reproduces_the_committed_lock(tmp_path: Path) -> None:
    """A fresh clone's `dvc repro extract` gives the demo dataset whose md5s dvc.lock records."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    for name in (
        "dvc.yaml",
        "dvc.lock",
        "params.yaml",
        "src",
    ):  # the working tree, committed or not
        target = clone / name
        if target.is_dir():
            shutil.rmtree(target)
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copyfile)(source, target)
    committed = locked_outs(clone / "dvc.lock")
    dvc("repro", "extract", cwd=clone)
    assert locked_outs(clone / "dvc.lock") == committed
    assert "extract" not in dvc("status", "extract", cwd=clone)
    check = subprocess.run(
        [sys.executable, "-m", "patchpack.cli", "verify"], cwd=clone, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout
