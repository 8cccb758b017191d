"""The light install against the full one: time to install and size of the virtualenv.

Usage: ``python benchmarks/bench_install.py [--keep DIR] [--json out.json]``

Each install runs in a fresh virtualenv, ``pip install -e REPO[EXTRA] -c constraints.txt``, one
after the other, with pip's wheel cache as it is (run it twice to time a warm cache; the first run
on a new machine downloads). Sizes are the virtualenvs' bytes on disk (symlinks followed: a venv's
``python`` links to the interpreter it was made from, counted in both alike).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from _harness import benchmark, folder_bytes, ratio, run_fresh, table

REPO = Path(__file__).resolve().parents[1]
VARIANTS = (("core", ""), ("all", "[all]"))


def install(work: Path, name: str, extra: str) -> dict[str, object]:
    """One fresh virtualenv with patchpack installed, and what it took."""
    venv = work / name
    run_fresh([sys.executable, "-m", "venv", str(venv)])
    python = str(venv / "bin" / "python")
    run_fresh([python, "-m", "pip", "install", "-q", "--upgrade", "pip"])
    pip = [python, "-m", "pip", "install", "-q", "-e", f"{REPO}{extra}"]
    done = run_fresh([*pip, "-c", str(REPO / "constraints.txt")])
    probe = "import importlib.util as u; print(u.find_spec('tensorflow') is not None)"
    tensorflow = run_fresh([python, "-c", probe]).stdout.strip()
    size = folder_bytes(venv)
    return {"variant": name, "seconds": done.seconds, "bytes": size.bytes, "tensorflow": tensorflow}


def measure(keep: Path | None) -> list[dict[str, object]]:
    work = keep or Path(tempfile.mkdtemp(prefix="bench-install-"))
    try:
        rows = [install(work, name, extra) for name, extra in VARIANTS]
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    core, full = rows
    shown = [
        (str(r["variant"]), f"{float(r['seconds']):.1f}", f"{int(r['bytes']) / 1e6:,.0f}",  # type: ignore[call-overload]
         str(r["tensorflow"]))
        for r in rows
    ]  # fmt: skip
    print(table(shown, ("install", "seconds", "venv MB", "tensorflow")))
    print(
        f"core / all: {ratio(float(core['seconds']), float(full['seconds']))} the time, "  # type: ignore[arg-type]
        f"{ratio(int(core['bytes']), int(full['bytes']))} the size"  # type: ignore[call-overload]
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--keep", type=Path, help="build the virtualenvs here and keep them")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    benchmark(lambda: measure(args.keep), args.json)


if __name__ == "__main__":
    main()
