"""Loader throughput: batches/s from HDF5 shards vs one PNG file per patch vs an in-memory array.

All three read the same patches in a shuffled order (a new permutation per epoch) and deliver
``(images uint8 (n, h, w, c), labels int32 (n,))`` batches, in one process:

* shards: ``patchpack.training.loader`` (windows of whole chunks, a shuffle buffer, reader threads);
* PNG folder: one file per patch, decoded with Pillow in a thread pool of the same size;
* in memory: a numpy array indexed with the shuffled order, the upper bound.

Usage::

    python benchmarks/bench_loader.py                      # synthetic dataset in a temp folder
    python benchmarks/bench_loader.py --data data/patches  # an extracted dataset (its train split)

Targets: shards at least 30x the PNG folder and at least 0.5x in-memory.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from _harness import benchmark, ratio, table, timed
from patchpack.dataset.io import manifest_json
from patchpack.dataset.manifest import Manifest, ShardEntry, SplitCount
from patchpack.dataset.shards import FORMAT_VERSION, ShardData, shard_name, write_shard
from patchpack.params import DatasetParams, ExtractParams, ShardParams
from patchpack.training.loader import open_dataset


def synthetic_dataset(
    folder: Path, *, patches: int, patch_size: int, channels: int, per_shard: int, chunk: int
) -> Path:
    """A train split of textured patches in zstd shards, with a manifest built by the extractor's classes."""
    rng = np.random.default_rng(0)
    names = [f"c{k}" for k in range(8)]
    entries = []
    for index, start in enumerate(range(0, patches, per_shard)):
        n = min(per_shard, patches - start)
        yy, xx = np.mgrid[0:patch_size, 0:patch_size]
        tone = rng.integers(40, 200, size=(n, 1, 1, 1))
        waves = 30 * np.sin((xx + yy * rng.integers(1, 5)) / 4.0)[None, :, :, None]
        noise = rng.normal(0, 10, size=(n, patch_size, patch_size, channels))
        images = np.clip(tone + waves + noise, 0, 255).astype(np.uint8)
        labels = (np.arange(start, start + n) % 8).astype(np.int32)
        data = ShardData(
            images=images,
            labels=labels,
            sources=(f"img_{index}.png",),
            source_index=np.zeros(n, np.int32),
            patch_index=np.arange(n, dtype=np.int32),
            coords=np.zeros((n, 2), np.int32),
            attrs={
                "format_version": FORMAT_VERSION,
                "class_names": manifest_json(names).strip(),
                "split": "train",
                "patch_size": patch_size,
                "channels": channels,
            },
        )
        relative = f"train/{shard_name(index)}"
        write_shard(folder / relative, data, chunk_patches=chunk, compression="zstd", level=3)
        entries.append(ShardEntry.of(relative, "train", folder / relative, data))
    empty = dict.fromkeys(names, 0)
    counts = {
        "train": SplitCount(
            total=patches,
            per_class={n: patches // 8 + (k < patches % 8) for k, n in enumerate(names)},
        ),
        "val": SplitCount(total=0, per_class=empty),
        "test": SplitCount(total=0, per_class=empty),
    }
    params = DatasetParams(
        channels=channels,
        extract=ExtractParams(patch_size=patch_size),
        shards=ShardParams(target_patches=per_shard, chunk_patches=chunk),
    )
    Manifest.create(
        class_names=names, params=params, sources=[], counts=counts, shards=entries
    ).write(folder)
    return folder


def rate(batches: Callable[[int], Iterable[tuple[np.ndarray, np.ndarray]]], epochs: int) -> float:
    """Batches per second over ``epochs`` epochs, after one warm-up epoch (page cache, threads)."""
    for _ in batches(-1):
        pass

    def count() -> int:
        counted = 0
        for epoch in range(epochs):
            for images, labels in batches(epoch):
                counted += 1
                assert images.dtype == np.uint8 and labels.dtype == np.int32
        return counted

    counted, seconds = timed(count)
    return counted / seconds


def measure(args: argparse.Namespace) -> None:
    """Write the PNG copy, time the three readers, print the table."""
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        root = Path(tmp)
        data = args.data or synthetic_dataset(
            root / "patches",
            patches=args.patches,
            patch_size=args.patch_size,
            channels=args.channels,
            per_shard=512,
            chunk=64,
        )
        dataset = open_dataset(data)
        train = dataset.split("train")
        images, labels = zip(*train.batches(4096, shuffle=False, workers=0), strict=True)
        memory_images, memory_labels = np.concatenate(images), np.concatenate(labels)
        n = len(memory_labels)

        png_folder = root / "png"
        png_folder.mkdir()
        paths = [png_folder / f"{i:06d}.png" for i in range(n)]
        for path, patch in zip(paths, memory_images, strict=True):
            Image.fromarray(patch[:, :, 0] if patch.shape[2] == 1 else patch).save(path)
        bs = args.batch_size

        def order(epoch: int) -> np.ndarray:
            return np.random.default_rng([0, epoch + 1]).permutation(n)

        def from_shards(epoch: int) -> Iterable[tuple[np.ndarray, np.ndarray]]:
            return train.batches(bs, seed=0, epoch=epoch + 1, workers=args.workers)

        def from_memory(epoch: int) -> Iterable[tuple[np.ndarray, np.ndarray]]:
            rows = order(epoch)
            for start in range(0, n, bs):
                picked = rows[start : start + bs]
                yield memory_images[picked], memory_labels[picked]

        def read_png(path: Path) -> np.ndarray:
            with Image.open(path) as image:
                return np.asarray(image)

        def from_png(epoch: int) -> Iterable[tuple[np.ndarray, np.ndarray]]:
            rows = order(epoch)
            with ThreadPoolExecutor(max(1, args.workers)) as pool:
                for start in range(0, n, bs):
                    picked = rows[start : start + bs]
                    decoded = np.stack(list(pool.map(read_png, [paths[i] for i in picked])))
                    yield (
                        decoded.reshape(len(picked), *memory_images.shape[1:]),
                        memory_labels[picked],
                    )

        shards = rate(from_shards, args.epochs)
        memory = rate(from_memory, args.epochs)
        png = rate(from_png, max(1, args.epochs // 3))
        dataset.close()

    shape = "x".join(map(str, memory_images.shape[1:]))
    print(f"{n} patches of {shape}, batch {bs}, {args.workers} reader threads, source {data}")
    readers = (("shards", shards), ("PNG files", png), ("in memory", memory))
    print(table([(name, f"{speed:.1f}") for name, speed in readers], ("reader", "batches/s")))
    print(f"shards / PNG files = {ratio(shards, png, 1)} (target >= 30x)")
    print(f"shards / in memory = {ratio(shards, memory)} (target >= 0.5x)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="an extracted dataset (default: synthetic)")
    parser.add_argument(
        "--patches", type=int, default=8192, help="synthetic patches (default 8192)"
    )
    parser.add_argument("--patch-size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per reader")
    args = parser.parse_args(argv)
    benchmark(lambda: measure(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
