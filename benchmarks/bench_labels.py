"""Labelling cost: patches per second with labels from 10,000 annotated polygons against folder labels.

Usage: ``python benchmarks/bench_labels.py [--quick] [--repeats N] [--json out.json]``

The demo slide (``patchpack sources --slide``) is extracted with the same sampling (random 128x128
tissue patches at 0.5 µm/px, region splits) three ways, in fresh processes taking turns, in one run:

* ``folder``: every patch takes the slide's class folder (the baseline);
* ``annotations``: each patch takes the class of the region under its centre, from a GeoJSON
  FeatureCollection of 10,000 polygons (each photograph's square cut into 1,250 rectangles, as
  fine-grained annotations exported from QuPath would be); parsing, repair checks, the per-class
  union and the STRtree are all inside the measured time;
* ``annotations + masks``: the same, also storing every patch's label mask (``extract.targets: mask``).

It prints seconds, patches per second and the ratio to ``folder`` (target: annotations at least
0.5x), and checks that the 10,000 polygons label every patch as the 8 squares they tile do.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".bench" / "labels"
sys.path.insert(0, str(ROOT / "src"))

from _harness import benchmark, interleaved, patchpack, ratio, table  # noqa: E402
from patchpack.dataset.demo_slide import demo_regions  # noqa: E402
from patchpack.dataset.sources import DEMO_CLASSES  # noqa: E402


def tiled_geojson(side: int, rows: int, cols: int) -> dict[str, object]:
    """Each demo region cut into ``rows`` x ``cols`` rectangles: one Feature per rectangle."""
    features = []
    for name, (x0, y0, x1, y1) in zip(
        DEMO_CLASSES, demo_regions(side, len(DEMO_CLASSES)), strict=True
    ):
        ys = [y0 + (y1 - y0) * i / rows for i in range(rows + 1)]
        xs = [x0 + (x1 - x0) * j / cols for j in range(cols + 1)]
        for i in range(rows):
            for j in range(cols):
                ring = [
                    [xs[j], ys[i]],
                    [xs[j + 1], ys[i]],
                    [xs[j + 1], ys[i + 1]],
                    [xs[j], ys[i + 1]],
                    [xs[j], ys[i]],
                ]
                features.append(
                    {
                        "type": "Feature",
                        "geometry": {"type": "Polygon", "coordinates": [ring]},
                        "properties": {
                            "objectType": "annotation",
                            "classification": {"name": name},
                        },
                    }
                )
    return {"type": "FeatureCollection", "features": features}


def setup(side: int, rows: int, cols: int) -> tuple[Path, Path, Path, int]:
    """The slide, its 8-square labels and the tiled labels; returns their folders and polygon count."""
    slide, squares, tiled = WORK / f"slide-{side}", WORK / f"squares-{side}", WORK / f"tiled-{side}"
    if not slide.exists() or not squares.exists():
        shutil.rmtree(slide, ignore_errors=True)
        shutil.rmtree(squares, ignore_errors=True)
        patchpack(
            "sources",
            "--slide",
            "--side",
            str(side),
            "--out",
            str(slide),
            "--labels",
            str(squares),
            cwd=ROOT,
        )
    document = tiled_geojson(side, rows, cols)
    (tiled / "demo").mkdir(parents=True, exist_ok=True)
    (tiled / "demo" / "slide.geojson").write_text(json.dumps(document), encoding="utf-8")
    return slide, squares, tiled, len(document["features"])  # type: ignore[arg-type]


def params(
    slide: Path, patches: int, labels: Path | None, targets: bool, block: int = 512
) -> dict[str, object]:
    raw: dict[str, object] = {
        "source": {"dir": str(slide), "channels": 3, "mpp": 0.5},
        "extract": {
            "patch_size": 128,
            "per_image": patches,
            "roi": "tissue",
            "targets": "mask" if targets else "none",
        },
        "split": {"block_size": block},
        "shards": {"target_patches": 256, "chunk_patches": 16},
    }
    if labels is not None:
        raw["labels"] = {"from": "annotations", "dir": str(labels), "classes": list(DEMO_CLASSES)}
    return raw


def folder_of(name: str) -> Path:
    """The working folder of one variant (its params.yaml and its dataset ``out``)."""
    return WORK / name.replace(" ", "-").replace("+", "")


def extract(name: str) -> float:
    """One extraction of a variant in a fresh process, into an empty ``out``; its seconds."""
    folder = folder_of(name)
    shutil.rmtree(folder / "out", ignore_errors=True)
    return patchpack("extract", "--out", "out", cwd=folder).seconds


Figures = tuple[dict[str, float], dict[str, str]]  # seconds and fingerprint per variant


def run(variants: dict[str, dict[str, object]], repeats: int) -> Figures:
    """Fastest of ``repeats`` extractions of each variant (in turns) and each dataset's fingerprint."""
    for name, raw in variants.items():
        folder = folder_of(name)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        (folder / "params.yaml").write_text(yaml.safe_dump(raw))
    times = interleaved({name: functools.partial(extract, name) for name in variants}, repeats)
    prints = {
        name: json.loads((folder_of(name) / "out" / "manifest.json").read_text())["fingerprint"]
        for name in variants
    }
    return {name: min(values) for name, values in times.items()}, prints


def measure(quick: bool, repeats: int) -> dict[str, object]:
    """Run the four variants, print the table; return the figures ``--json`` writes."""
    # a smaller slide and blocks: each split still gets blocks of all eight regions
    side, patches, block = (8192, 400, 256) if quick else (20480, 2000, 512)
    slide, squares, tiled, polygons = setup(side, 25, 50)
    variants = {
        "folder": params(slide, patches, None, False, block),
        "annotations": params(slide, patches, tiled, False, block),
        "annotations + masks": params(slide, patches, tiled, True, block),
        "8 squares": params(slide, patches, squares, False, block),
    }
    seconds, prints = run(variants, repeats)
    base = seconds["folder"]
    print(
        f"demo slide {side} x {side}, {patches:,} random 128x128 tissue patches at 0.5 µm/px; "
        f"annotations: {polygons:,} polygons"
    )
    rows = [
        (name, f"{seconds[name]:.2f}", f"{patches / seconds[name]:.1f}", ratio(base, seconds[name]))
        for name in ("folder", "annotations", "annotations + masks")
    ]
    print(table(rows, ("labels from", "seconds", "patches/s", "vs folder")))
    same = prints["annotations"] == prints["8 squares"]
    print(
        f"annotations / folder: {ratio(base, seconds['annotations'])} (target at least 0.5x); "
        f"{polygons:,} polygons label every patch as the 8 squares they tile: {same}"
    )
    return {
        "side": side,
        "patches": patches,
        "polygons": polygons,
        "seconds": seconds,
        "same_as_squares": same,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="an 8192 slide and 400 patches: a smoke run"
    )
    parser.add_argument("--repeats", type=int, default=2, help="runs per variant (default 2)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    benchmark(lambda: measure(args.quick, args.repeats), args.json)


if __name__ == "__main__":
    main()
