"""The light install against the full one: time to install and size of the virtualenv.

Usage: ``python benchmarks/bench_install.py [--keep DIR] [--json out.json]``

Each install runs in a fresh virtualenv, ``pip install -e REPO[EXTRA] -c constraints.txt``, one
after the other in this process's machine, with pip's wheel cache as it is (run it twice to time a
warm cache; the first run on a new machine downloads). Sizes are the virtualenvs' bytes on disk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = (("core", ""), ("all", "[all]"))


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def install(work: Path, name: str, extra: str) -> dict[str, object]:
    venv = work / name
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    started = time.perf_counter()
    subprocess.run(
        [
            python,
            "-m",
            "pip",
            "install",
            "-q",
            "-e",
            f"{REPO}{extra}",
            "-c",
            str(REPO / "constraints.txt"),
        ],
        check=True,
    )
    seconds = time.perf_counter() - started
    has_tf = subprocess.run(
        [python, "-c", "import importlib.util as u; print(u.find_spec('tensorflow') is not None)"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    return {
        "variant": name,
        "seconds": round(seconds, 1),
        "bytes": folder_bytes(venv),
        "tensorflow": has_tf,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="build the virtualenvs here and keep them")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-install-"))
    try:
        rows = [install(work, name, extra) for name, extra in VARIANTS]
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    core, full = rows
    print(f"{'install':<8}{'seconds':>10}{'venv MB':>10}  tensorflow")
    for row in rows:
        print(
            f"{row['variant']:<8}{row['seconds']:>10}{int(row['bytes']) / 1e6:>10,.0f}  {row['tensorflow']}"
        )  # type: ignore[call-overload]
    print(
        f"core/all: {float(core['seconds']) / float(full['seconds']):.2f}x the time, "  # type: ignore[arg-type]
        f"{int(core['bytes']) / int(full['bytes']):.2f}x the size"  # type: ignore[call-overload]
    )
    print(f"load average {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
