"""Running patchpack as a user does (a separate process) and fingerprinting the folders it writes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

PATCHPACK = [sys.executable, "-m", "patchpack.cli"]


def run_patchpack(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``patchpack ARGS`` in a new process, with a random ``PYTHONHASHSEED`` (results must not care)."""
    environment = {**os.environ, "PYTHONHASHSEED": "random", **(env or {})}
    return subprocess.run(
        [*PATCHPACK, *args], cwd=cwd, capture_output=True, text=True, env=environment
    )


def file_digests(folder: Path, algorithm: str = "sha256") -> dict[str, str]:
    """Relative POSIX path -> hex digest of every file under ``folder``."""
    return {
        path.relative_to(folder).as_posix(): hashlib.new(algorithm, path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
