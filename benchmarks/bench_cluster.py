"""Parallel extraction: one process, a local process pool and a Dask LocalCluster, in one run.

Usage: ``python benchmarks/bench_cluster.py [--quick] [--scaling] [--repeats N] [--json out.json]``

Two workloads, each extracted with ``--workers 1``, ``--workers 2`` and ``--cluster local:2``
(end to end, pool or cluster start-up included, in a fresh process each, the engines in turns,
fastest of ``--repeats``):

* the demo photographs with 10,000 random 32x32 patches per image (80,000 patches);
* one demo slide (``patchpack sources --slide``, 20,480 pixels a side), 4,000 random 128x128 tissue
  patches at 0.5 µm/px: since format 3 its shards spread over the workers.

With ``--scaling`` two larger workloads join them, for the table of work against workers: the demo
photographs with 29,000 patches per image (232,000 patches), and eight demo slides (sides 10,240 to
13,824 pixels, so each is a different file) with 1,000 such patches each.

It prints seconds and speed-ups against ``--workers 1`` measured in the same run, checks that all
three give byte-identical datasets, and estimates from the per-shard time what a cluster of 100 nodes
would need for 2,000 slides. First it measures the machine's own ceiling: the same CPU-bound work
(zstd-3 and sha256 over pixels) in one process, then in two processes at once; no two-worker run can
gain more than that ratio here (on a machine whose two CPUs share a core, or share it with other
tenants, it is well under 2).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import multiprocessing
import shutil
import time
from pathlib import Path

import yaml

from _harness import benchmark, interleaved, patchpack, ratio, table

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".bench" / "cluster"
SIDES = (10_240, 10_752, 11_264, 11_776, 12_288, 12_800, 13_312, 13_824)  # eight distinct slides
ENGINES = (("--workers 1", ["--workers", "1"]), ("--workers 2", ["--workers", "2"]),
           ("--cluster local:2", ["--cluster", "local:2"]))  # fmt: skip


def digest(folder: Path) -> str:
    """One sha256 over every file of a dataset folder (paths and bytes)."""
    total = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        total.update(path.relative_to(folder).as_posix().encode())
        total.update(hashlib.sha256(path.read_bytes()).digest())
    return total.hexdigest()


def _demo() -> Path:
    """The demo photographs under WORK, written on first need."""
    demo = WORK / "demo"
    if not demo.exists():
        patchpack("sources", "--out", str(demo), cwd=ROOT)
    return demo


def _pair(
    demo: Path, per_image: int, slides: Path, slide_patches: int, slide_name: str
) -> list[tuple[str, dict[str, object]]]:
    """(name, params) of the photographs and of the slide folder, with the benchmark's settings."""
    photographs = {
        "source": {"dir": str(demo)},
        "extract": {"per_image": per_image},
        "shards": {"target_patches": 1024},
    }
    slide_params = {
        "source": {"dir": str(slides), "channels": 3, "mpp": 0.5},
        "extract": {"patch_size": 128, "per_image": slide_patches, "roi": "tissue"},
        "split": {"block_size": 512},
        "shards": {"target_patches": 128},
    }
    return [
        (f"demo photographs, {8 * per_image:,} patches of 32x32", photographs),
        (f"{slide_name}, {slide_patches:,} tissue patches of 128x128", slide_params),
    ]


def workloads(quick: bool) -> list[tuple[str, dict[str, object]]]:
    """(name, params) of the two workloads; the sources are written under WORK."""
    per_image, side, slide_patches = (1000, 4096, 400) if quick else (10_000, 20_480, 4000)
    slide = WORK / f"slide-{side}"
    if not slide.exists():
        patchpack("sources", "--slide", "--side", str(side), "--out", str(slide), cwd=ROOT)
    return _pair(_demo(), per_image, slide, slide_patches, f"demo slide {side} x {side}")


def scaling_workloads(quick: bool) -> list[tuple[str, dict[str, object]]]:
    """(name, params) of the two larger workloads of ``--scaling``."""
    per_image, sides, slide_patches = (3000, (4096, 4608), 100) if quick else (29_000, SIDES, 1000)
    slides = WORK / f"slides-{len(sides)}-{sides[0]}"
    if not slides.exists():
        building = WORK / "slides-building"
        shutil.rmtree(building, ignore_errors=True)
        for side in sides:
            patchpack(
                "sources", "--slide", "--side", str(side), "--out", str(WORK / "one"), cwd=ROOT
            )
            (building / "demo").mkdir(parents=True, exist_ok=True)
            (WORK / "one" / "demo" / "slide.tif").rename(building / "demo" / f"slide-{side}.tif")
            shutil.rmtree(WORK / "one")
        building.rename(slides)
    return _pair(_demo(), per_image, slides, slide_patches, f"{len(sides)} demo slides, each")


def _busy(seconds: float) -> float:
    """CPU-bound work like a shard's (zstd-3 and sha256 over pixels) for about ``seconds``; returns
    how much was done per second."""
    import hdf5plugin  # noqa: F401  (the zstd codec patchpack's shards use, through h5py)
    import numpy as np

    from patchpack.dataset.shard_format import ShardData
    from patchpack.dataset.shards import shard_bytes

    rng = np.random.default_rng(0)
    images = rng.integers(0, 64, (64, 128, 128, 3), dtype=np.uint8)
    data = ShardData(
        images=images,
        labels=np.zeros(64, np.int32),
        sources=("a",),
        source_index=np.zeros(64, np.int32),
        patch_index=np.arange(64, dtype=np.int32),
        coords=np.zeros((64, 2), np.int32),
        attrs={},
        levels=np.zeros(64, np.int32),
    )
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        hashlib.sha256(shard_bytes(data, chunk_patches=None, compression="zstd", level=3)).digest()
        done += 1
    return done / (time.perf_counter() - start)


def ceiling(seconds: float = 3.0) -> float:
    """How much more CPU-bound work two processes get done at once than one, on this machine."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        pool.map(_busy, [0.2, 0.2])  # imports and first calls off the clock
        one = pool.apply(_busy, (seconds,))
        two = sum(pool.map(_busy, [seconds, seconds]))
    return two / one


def measure(name: str, params: dict[str, object], repeats: int) -> dict[str, object]:
    """Seconds per engine (fastest of ``repeats``, engines in turns), dataset digests, shard count."""
    folder = WORK / "run"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    engines = dict(ENGINES)
    outs = {label: f"out-{index}" for index, label in enumerate(engines)}

    def extract(label: str) -> float:
        shutil.rmtree(folder / outs[label], ignore_errors=True)
        return patchpack("extract", "--out", outs[label], *engines[label], cwd=folder).seconds

    times = interleaved({label: functools.partial(extract, label) for label in engines}, repeats)
    seconds = {label: min(values) for label, values in times.items()}
    digests = {label: digest(folder / out) for label, out in outs.items()}
    manifest = folder / outs[ENGINES[-1][0]] / "manifest.json"
    shards = len(json.loads(manifest.read_text())["shards"])
    return {"workload": name, "seconds": seconds, "identical": len(set(digests.values())) == 1,
            "shards": shards}  # fmt: skip


def report(results: list[dict[str, object]]) -> None:
    rows = []
    for result in results:
        seconds: dict[str, float] = result["seconds"]  # type: ignore[assignment]
        base = seconds["--workers 1"]
        for label, value in seconds.items():
            rows.append((result["workload"], label, f"{value:.2f}", ratio(base, value)))
    print(table(rows, ("workload", "engine", "seconds", "speed-up"), left=2))
    for result in results:
        seconds = result["seconds"]  # type: ignore[assignment]
        print(f"{result['workload']}: cluster / pool: "
              f"{seconds['--cluster local:2'] / seconds['--workers 2']:.2f} (target at most 1.15); "
              f"byte-identical: {result['identical']}")  # fmt: skip
    slide = results[1]
    per_shard = slide["seconds"]["--workers 1"] / slide["shards"]  # type: ignore[index]
    print(f"\nestimate: {per_shard:.2f} s per shard of the slide workload on one core here; 2,000 "
          f"slides x {slide['shards']} shards on 100 nodes of 16 cores: "
          f"{2000 * slide['shards'] * per_shard / (100 * 16) / 60:.1f} minutes, if the shared "
          f"file system keeps up")  # fmt: skip


def run(quick: bool, repeats: int, scaling: bool) -> list[dict[str, object]]:
    """The workloads measured and reported; the figures ``--json`` writes."""
    limit = ceiling(1.0 if quick else 3.0)
    print(
        f"this machine's ceiling: two processes do {limit:.2f}x the CPU-bound work of one "
        f"(zstd-3 into HDF5 and sha256, the same work in each); no --workers 2 run can beat it"
    )
    chosen = workloads(quick) + (scaling_workloads(quick) if scaling else [])
    results = [measure(name, params, repeats) for name, params in chosen]
    report(results)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small workloads: a smoke run")
    parser.add_argument("--repeats", type=int, default=2, help="runs per engine (default 2)")
    parser.add_argument(
        "--scaling", action="store_true", help="also 232,000 demo patches and eight demo slides"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    benchmark(lambda: run(args.quick, args.repeats, args.scaling), args.json)


if __name__ == "__main__":
    main()
