"""Extraction benchmark: the same patches written three ways, in one process.

    python benchmarks/bench_extract.py [--per-image 1000] [--workers 1]

1. patchpack: ``extract()`` end to end (decode, sample, zstd HDF5 shards, hashes, manifest);
2. one PNG file per patch, what researchers do by hand (``<split>/<class>/<source>_<n>.png``);
3. one numpy ``.npz`` per split (``np.savez_compressed``).

All three start from the same demo photographs and the same seeded coordinates, and pay for decoding the
sources and cutting patches; they differ in how the patches are stored. It prints patches/s and bytes per
patch for each, the ratios against the PNG baseline, and the peak memory of extraction at two dataset
sizes (in child processes) to show that it does not grow with the dataset.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from _harness import benchmark, folder_bytes, interleaved, ratio, run_fresh, table, timed
from patchpack.dataset.extract import extract
from patchpack.dataset.io import file_sha256
from patchpack.dataset.plan import cut_shards, plan_images, split_counts
from patchpack.dataset.shards import ShardData, write_shard
from patchpack.dataset.sources import catalog, export_demo
from patchpack.dataset.work import Job, build_shard
from patchpack.params import SPLITS, Params, params_from_dict


def demo_params(source: Path, per_image: int) -> Params:
    return params_from_dict(
        {"source": {"dir": str(source)}, "extract": {"per_image": per_image, "min_std": 2.0}}
    )


def jobs(params: Params, staging: Path) -> tuple[list[str], list[Job]]:
    """The same shard jobs extract() runs, for the baselines to sample identical patches."""
    class_names, sources = catalog(params.source.dir, max_megapixels=params.source.max_megapixels)
    plans = plan_images(sources, seed=params.seed, extract=params.extract, split=params.split)
    counts = split_counts(plans, mode=params.split.mode, fractions=params.split.fractions)
    specs = cut_shards(counts, [s.id for s in sources], target=params.shards.target_patches)
    return class_names, [
        Job(
            spec,
            {p.image: plans[p.image] for p in spec.pieces},
            params,
            tuple(class_names),
            staging,
        )
        for spec in specs
    ]


def write_pngs(params: Params, out: Path) -> int:
    """End to end: each shard job's patches cut, then saved one PNG file per patch."""
    class_names, all_jobs = jobs(params, out)
    return sum(
        store_pngs([(job.spec.split, build_shard(job))], class_names, out) for job in all_jobs
    )


def write_npz(params: Params, out: Path) -> int:
    _, all_jobs = jobs(params, out)
    out.mkdir(parents=True)
    written = 0
    for split in SPLITS:
        parts = [build_shard(job) for job in all_jobs if job.spec.split == split]
        if parts:
            images = np.concatenate([p.images for p in parts])
            labels = np.concatenate([p.labels for p in parts])
            np.savez_compressed(out / f"{split}.npz", images=images, labels=labels)
            written += len(labels)
    return written


def store_shards(parts: list[tuple[str, ShardData]], params: Params, out: Path) -> int:
    """Storage only: write shards and hash them, as extract() does, from patches in memory."""
    for index, (split, data) in enumerate(parts):
        path = out / split / f"shard-{index:05d}.h5"
        write_shard(
            path,
            data,
            chunk_patches=params.shards.chunk_patches,
            compression=params.shards.compression,
            level=params.shards.level,
        )
        file_sha256(path), data.content_sha256(), data.patch_digests()
    return sum(len(data) for _, data in parts)


def store_pngs(parts: list[tuple[str, ShardData]], class_names: list[str], out: Path) -> int:
    """Storage only: one PNG file per patch, from patches in memory."""
    for split, data in parts:
        for row in range(len(data)):
            folder = out / split / class_names[int(data.labels[row])]
            folder.mkdir(parents=True, exist_ok=True)
            patch = data.images[row]
            name = f"{data.source_of(row).replace('/', '_')}_{int(data.patch_index[row]):06d}.png"
            Image.fromarray(patch[:, :, 0] if patch.shape[2] == 1 else patch).save(folder / name)
    return sum(len(data) for _, data in parts)


def store_npz(parts: list[tuple[str, ShardData]], out: Path) -> int:
    """Storage only: one compressed .npz per split, from patches in memory."""
    out.mkdir(parents=True)
    for split in SPLITS:
        chosen = [data for name, data in parts if name == split]
        if chosen:
            np.savez_compressed(
                out / f"{split}.npz",
                images=np.concatenate([d.images for d in chosen]),
                labels=np.concatenate([d.labels for d in chosen]),
            )
    return sum(len(data) for _, data in parts)


Row = tuple[str, float, int, int, int]  # label, seconds, patches, bytes, allocated bytes


def measured(label: str, func: Callable[[Path], int], out: Path) -> Row:
    """Time ``func(out)`` (it returns the patches written), then size what it wrote."""
    count, seconds = timed(lambda: func(out))
    size = folder_bytes(out)
    return label, seconds, count, size.bytes, size.allocated


def report(rows: list[Row]) -> None:
    _, png_seconds, png_count, png_bytes, png_alloc = rows[1]
    lines = [
        (
            label,
            f"{count / seconds:,.0f}",
            ratio(count / seconds, png_count / png_seconds, 1),
            f"{size / count:,.0f}",
            ratio(size / count, png_bytes / png_count),
            f"{alloc / count:,.0f}",
            ratio(alloc / count, png_alloc / png_count),
        )
        for label, seconds, count, size, alloc in rows
    ]
    headers = ("format", "patches/s", "speed", "bytes/patch", "size", "allocated/patch", "size")
    print(table(lines, headers))


def peak_rss_mb(source: Path, per_image: int, out: Path) -> float:
    """Peak resident memory (MiB) of a fresh process that extracts ``per_image`` patches per image."""
    code = (
        f"import sys; from pathlib import Path; sys.path.insert(0, {str(Path(__file__).parent)!r});"
        "from bench_extract import demo_params;"
        "from patchpack.dataset.extract import extract;"
        f"extract(demo_params(Path({str(source)!r}), {per_image}), out=Path({str(out)!r}))"
    )
    return run_fresh([sys.executable, "-c", code]).peak_rss_bytes / 2**20


def fixed_cost(root: Path, source: Path, per_image: int, repeats: int = 3) -> None:
    """What a ``patchpack extract`` process spends outside the per-patch work: the CLI's wall time
    (interpreter, imports, environment envelope, exit) less a warm ``extract()`` of the same params
    in this process (its modules loaded, its first run done), fastest of ``repeats`` of each, run in
    turns."""
    path = root / "fixed-params.yaml"
    path.write_text(
        f"source: {{dir: {str(source)!r}}}\nextract: {{per_image: {per_image}, min_std: 2.0}}\n"
    )
    params = demo_params(source, per_image)
    extract(params, out=root / "fixed-warmup")
    outs = iter(range(10**6))

    def cli() -> float:
        out = root / f"fixed-cli-{next(outs)}"
        command = [*_patchpack_command(), "extract", "--params", str(path), "--out", str(out)]
        return run_fresh(command).seconds  # with Python's bytecode cache, see child_env

    def warm() -> float:
        return timed(lambda: extract(params, out=root / f"fixed-warm-{next(outs)}"))[1]

    runs = interleaved({"cli": cli, "warm": warm}, repeats)
    best_cli, best_warm = min(runs["cli"]), min(runs["warm"])
    print(
        f"\nfixed cost of a `patchpack extract` process: {best_cli:.2f} s from the command line, "
        f"{best_warm:.2f} s warm in one process: {best_cli - best_warm:.2f} s outside the per-patch "
        f"work (target at most 0.35; fastest of {repeats} each, in turns)"
    )


def _patchpack_command() -> list[str]:
    """The ``patchpack`` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "patchpack"
    return [str(script)] if script.exists() else [sys.executable, "-m", "patchpack.cli"]


def measure(root: Path, per_image: int, workers: int) -> None:
    """Both tables and the peak memory, from the demo photographs exported into ``root``."""
    source = root / "demo"
    export_demo(source)
    params = demo_params(source, per_image)
    rows = [
        measured(
            "patchpack (zstd HDF5)",
            lambda out: sum(e.patches for e in extract(params, out=out, workers=workers).shards),
            root / "shards",
        ),
        measured("PNG file per patch", lambda out: write_pngs(params, out), root / "png"),
        measured("numpy .npz (compressed)", lambda out: write_npz(params, out), root / "npz"),
    ]
    print(
        f"demo: {len(list(source.rglob('*.*')))} photographs, {per_image} patches each, "
        f"{params.extract.patch_size}x{params.extract.patch_size}x{params.source.channels}"
    )
    print("\nend to end (decode photographs, cut patches, store):")
    report(rows)
    class_names, all_jobs = jobs(params, root)
    parts = [(job.spec.split, build_shard(job)) for job in all_jobs]
    stored = [
        measured(
            "patchpack (zstd HDF5)", lambda out: store_shards(parts, params, out), root / "s-shards"
        ),
        measured(
            "PNG file per patch", lambda out: store_pngs(parts, class_names, out), root / "s-png"
        ),
        measured("numpy .npz (compressed)", lambda out: store_npz(parts, out), root / "s-npz"),
    ]
    print("\nstorage only (the same patches already in memory):")
    report(stored)
    print("(speed and size are ratios against the PNG baseline, measured in this run)")
    fixed_cost(root, source, per_image)
    small = peak_rss_mb(source, per_image // 4, root / "rss-small")
    large = peak_rss_mb(source, per_image, root / "rss-large")
    print(
        f"peak RSS of extract: {small:.0f} MB at {per_image // 4} patches/image, "
        f"{large:.0f} MB at {per_image} (ratio {large / small:.2f} for 4x the data)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-image", type=int, default=1000, help="patches per demo image")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    try:
        benchmark(lambda: measure(root, args.per_image, args.workers))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
