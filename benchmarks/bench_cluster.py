"""Parallel extraction: one process, a local process pool and a Dask LocalCluster, in one run.

Usage: ``python benchmarks/bench_cluster.py [--quick] [--json out.json]``

Two workloads, each extracted with ``--workers 1``, ``--workers 2`` and ``--cluster local:2``
(end to end, pool or cluster start-up included, in a fresh process each, fastest of ``--repeats``):

* the demo photographs with 10,000 random 32x32 patches per image (80,000 patches);
* the demo slide (``patchpack sources --slide --side 10240``), 4,000 random 128x128 tissue patches at
  0.5 µm/px.

It prints seconds and speed-ups against ``--workers 1`` measured in the same run, checks that all
three give byte-identical datasets, and estimates from the per-shard time what a cluster of 100 nodes
would need for 2,000 slides.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".bench" / "cluster"
ENGINES = (("--workers 1", ["--workers", "1"]), ("--workers 2", ["--workers", "2"]),
           ("--cluster local:2", ["--cluster", "local:2"]))  # fmt: skip


def digest(folder: Path) -> str:
    """One sha256 over every file of a dataset folder (paths and bytes)."""
    total = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        total.update(path.relative_to(folder).as_posix().encode())
        total.update(hashlib.sha256(path.read_bytes()).digest())
    return total.hexdigest()


def patchpack(*args: str, cwd: Path) -> float:
    """Run ``patchpack ARGS`` in a fresh process; return its wall time in seconds."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "patchpack.cli", *args], cwd=cwd, check=True,
                   capture_output=True)  # fmt: skip
    return time.perf_counter() - started


def workloads(quick: bool) -> list[tuple[str, dict[str, object]]]:
    """(name, params) of the two workloads; the sources are written under WORK."""
    per_image, side, slide_patches = (1000, 4096, 400) if quick else (10_000, 10_240, 4000)
    demo, slide = WORK / "demo", WORK / f"slide-{side}"
    if not demo.exists():
        patchpack("sources", "--out", str(demo), cwd=ROOT)
    if not slide.exists():
        patchpack("sources", "--slide", "--side", str(side), "--out", str(slide), cwd=ROOT)
    photographs = {
        "source": {"dir": str(demo)},
        "extract": {"per_image": per_image},
        "shards": {"target_patches": 1024},
    }
    slide_params = {
        "source": {"dir": str(slide), "channels": 3, "mpp": 0.5},
        "extract": {"patch_size": 128, "per_image": slide_patches, "roi": "tissue"},
        "split": {"block_size": 512},
        "shards": {"target_patches": 128, "chunk_patches": 16},
    }
    return [
        (f"demo photographs, {8 * per_image:,} patches of 32x32", photographs),
        (f"demo slide {side} x {side}, {slide_patches:,} tissue patches of 128x128", slide_params),
    ]


def measure(name: str, params: dict[str, object], repeats: int) -> dict[str, object]:
    """Seconds per engine (fastest of ``repeats``), the dataset digests and the shard count."""
    folder = WORK / "run"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    seconds, digests = {}, {}
    for label, args in ENGINES:
        times = []
        for _ in range(repeats):
            shutil.rmtree(folder / "out", ignore_errors=True)
            times.append(patchpack("extract", "--out", "out", *args, cwd=folder))
        seconds[label] = min(times)
        digests[label] = digest(folder / "out")
    shards = len(json.loads((folder / "out" / "manifest.json").read_text())["shards"])
    return {"workload": name, "seconds": seconds, "identical": len(set(digests.values())) == 1,
            "shards": shards}  # fmt: skip


def report(results: list[dict[str, object]]) -> None:
    print(f"{'workload':<58} {'engine':<18} {'seconds':>8} {'speed-up':>9}")
    for result in results:
        seconds: dict[str, float] = result["seconds"]  # type: ignore[assignment]
        base = seconds["--workers 1"]
        for label, value in seconds.items():
            print(f"{result['workload']:<58} {label:<18} {value:>8.2f} {base / value:>8.2f}x")
        ratio = seconds["--cluster local:2"] / seconds["--workers 2"]
        print(f"{'':<58} cluster / pool: {ratio:.2f} (target at most 1.15); byte-identical: "
              f"{result['identical']}")  # fmt: skip
    slide = results[-1]
    per_shard = slide["seconds"]["--workers 1"] / slide["shards"]  # type: ignore[index]
    print(f"\nestimate: {per_shard:.2f} s per shard of the slide workload on one core here; 2,000 "
          f"slides x {slide['shards']} shards on 100 nodes of 16 cores: "
          f"{2000 * slide['shards'] * per_shard / (100 * 16) / 60:.1f} minutes, if the shared "
          f"file system keeps up")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small workloads: a smoke run")
    parser.add_argument("--repeats", type=int, default=2, help="runs per engine (default 2)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    results = [measure(name, params, args.repeats) for name, params in workloads(args.quick)]
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
