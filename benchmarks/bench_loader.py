"""Loader throughput: batches/s from HDF5 shards, through each adapter, vs one PNG file per patch.

Every reader delivers the same patches in a shuffled order (a new one per epoch) as
``(images uint8 (n, h, w, c), labels (n,))`` batches; in one run:

* numpy loader: ``Split.batches`` (windows of whole chunks, a shuffle buffer, reader threads);
* Keras adapter: ``ShardSequence[i]`` for every batch in turn, as one Keras worker reads it;
* torch DataLoader: ``patchpack.torch.dataloader`` with ``num_workers`` 0 and ``--workers``
  (persistent workers, so process start-up is paid once, as in training);
* ImageFolder: the same patches as one PNG file per patch in one folder per class, read by a
  torchvision-style ``ImageFolder`` dataset (Pillow) through a ``DataLoader`` with ``--workers``
  workers and a seeded ``RandomSampler``;
* PNG files in threads (Pillow, a thread pool) and a numpy array in memory, the upper bound.

Usage::

    python benchmarks/bench_loader.py                      # synthetic dataset in a temp folder
    python benchmarks/bench_loader.py --quick              # 4096 patches, 2 rounds: about a minute
    python benchmarks/bench_loader.py --data data/patches  # an extracted dataset (its train split)

Targets: the torch DataLoader at least 0.8x the Keras adapter and at least 30x the ImageFolder
loader; the numpy loader at least 30x the PNG files and at least 0.5x in-memory.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from _harness import benchmark, interleaved, ratio, table, timed
from patchpack.dataset.manifest import Manifest, ShardEntry, SplitCount
from patchpack.dataset.shards import FORMAT_VERSION, ShardData, shard_name, write_shard
from patchpack.params import DatasetParams, ExtractParams, ShardParams
from patchpack.training.loader import BatchOptions, open_dataset


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
                "class_names": names,
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


def rate(batches: Callable[[int], Iterable[tuple[Any, Any]]], epochs: int) -> float:
    """Batches per second over ``epochs`` epochs (a warm-up epoch, -1, is run once before)."""

    def count() -> int:
        counted = 0
        for epoch in range(epochs):
            for images, labels in batches(epoch):
                counted += 1
                assert len(images) == len(labels) and images.dtype in (np.uint8, torch.uint8)
        return counted

    counted, seconds = timed(count)
    return counted / seconds


class ImageFolder(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """torchvision's ``ImageFolder`` in a few lines: one PNG per sample under ``root/<class>/``."""

    def __init__(self, root: Path) -> None:
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        self.samples = [
            (path, k) for k, c in enumerate(classes) for path in sorted((root / c).iterdir())
        ]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        with Image.open(path) as image:
            pixels = np.asarray(image)
        return torch.from_numpy(pixels.reshape(*pixels.shape[:2], -1)), label


def write_png_folders(root: Path, images: np.ndarray, labels: np.ndarray) -> list[Path]:
    """One PNG per patch under ``root/<label>/``; the paths in patch order."""
    paths = []
    for i, (patch, label) in enumerate(zip(images, labels, strict=True)):
        path = root / f"c{label:02d}" / f"{i:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(patch[:, :, 0] if patch.shape[2] == 1 else patch).save(path)
        paths.append(path)
    return paths


Readers = dict[str, Callable[[int], Iterable[tuple[Any, Any]]]]


def shard_readers(data: Path, args: argparse.Namespace) -> tuple[Readers, Callable[[], None]]:
    """The numpy loader, the Keras adapter and the torch DataLoaders over the train split."""
    from patchpack.torch import dataloader
    from patchpack.training.keras_adapter import ShardSequence

    bs = args.batch_size
    dataset = open_dataset(data)
    train = dataset.split("train")
    sequence = ShardSequence(train, BatchOptions(bs, seed=0, epoch=0, workers=args.workers))

    def keras(epoch: int) -> Iterable[tuple[np.ndarray, np.ndarray]]:
        sequence.on_epoch_end()  # the next epoch's order, as Keras calls it
        return (sequence[i] for i in range(len(sequence)))

    def torch_loader(workers: int) -> Callable[[int], Iterable[tuple[Any, Any]]]:
        extra = {"persistent_workers": True, "prefetch_factor": 4} if workers else {}
        loader = dataloader(data, "train", batch_size=bs, seed=0, num_workers=workers, **extra)

        def epoch_of(epoch: int) -> Iterable[tuple[Any, Any]]:
            loader.sampler.set_epoch(epoch + 1)  # type: ignore[attr-defined]
            return loader

        return epoch_of

    readers: Readers = {
        "numpy loader (threads)": lambda e: train.batches(
            bs, seed=0, epoch=e + 1, workers=args.workers
        ),
        "Keras adapter": keras,
        "torch DataLoader, 0 workers": torch_loader(0),
        f"torch DataLoader, {args.workers} workers": torch_loader(args.workers),
    }
    return readers, dataset.close


def file_readers(
    root: Path, images: np.ndarray, labels: np.ndarray, args: argparse.Namespace
) -> Readers:
    """ImageFolder through a DataLoader, PNG files in threads, and the in-memory array."""
    paths = write_png_folders(root / "png", images, labels)
    n, bs = len(labels), args.batch_size
    folder = ImageFolder(root / "png")
    generator = torch.Generator()
    image_folder = torch.utils.data.DataLoader(
        folder,
        batch_size=bs,
        sampler=torch.utils.data.RandomSampler(folder, generator=generator),
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
    )

    def from_image_folder(epoch: int) -> Iterable[tuple[Any, Any]]:
        generator.manual_seed(epoch + 1)
        return image_folder

    def order(epoch: int) -> np.ndarray:
        return np.random.default_rng([0, epoch + 1]).permutation(n)

    def from_memory(epoch: int) -> Iterable[tuple[np.ndarray, np.ndarray]]:
        rows = order(epoch)
        for start in range(0, n, bs):
            picked = rows[start : start + bs]
            yield images[picked], labels[picked]

    def read_png(path: Path) -> np.ndarray:
        with Image.open(path) as image:
            return np.asarray(image)

    def from_png(epoch: int) -> Iterable[tuple[np.ndarray, np.ndarray]]:
        rows = order(epoch)
        with ThreadPoolExecutor(max(1, args.workers)) as pool:
            for start in range(0, n, bs):
                picked = rows[start : start + bs]
                decoded = np.stack(list(pool.map(read_png, [paths[i] for i in picked])))
                yield decoded.reshape(len(picked), *images.shape[1:]), labels[picked]

    return {
        "ImageFolder (Pillow) DataLoader": from_image_folder,
        "PNG files (Pillow, threads)": from_png,
        "in memory": from_memory,
    }


def measure(args: argparse.Namespace) -> dict[str, float]:
    """Write the PNG copies, time every reader, print the table and the ratios."""
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
        with open_dataset(data) as dataset:
            batches = dataset.split("train").batches(4096, shuffle=False, workers=0)
            images, labels = (np.concatenate(parts) for parts in zip(*batches, strict=True))
        readers, close = shard_readers(data, args)
        readers |= file_readers(root, images, labels, args)
        slow = ("ImageFolder (Pillow) DataLoader", "PNG files (Pillow, threads)")
        for read in readers.values():  # page cache, worker processes, thread pools
            for _ in read(-1):
                pass
        workloads = {
            name: functools.partial(
                rate, read, max(1, args.epochs // 3) if name in slow else args.epochs
            )
            for name, read in readers.items()
        }
        speeds = {name: max(v) for name, v in interleaved(workloads, args.repeats).items()}
        close()

    shape = "x".join(map(str, images.shape[1:]))
    print(
        f"{len(labels)} patches of {shape}, batch {args.batch_size}, {args.workers} workers, source {data}"
    )
    print(
        table([(name, f"{speed:.1f}") for name, speed in speeds.items()], ("reader", "batches/s"))
    )
    best_torch = max(
        speeds["torch DataLoader, 0 workers"], speeds[f"torch DataLoader, {args.workers} workers"]
    )
    keras, folder = speeds["Keras adapter"], speeds["ImageFolder (Pillow) DataLoader"]
    for workers in (0, args.workers):
        value = speeds[f"torch DataLoader, {workers} workers"]
        print(
            f"torch DataLoader ({workers} workers) / Keras adapter = {ratio(value, keras)} (target >= 0.8x)"
        )
        print(
            f"torch DataLoader ({workers} workers) / ImageFolder = {ratio(value, folder, 1)} (target >= 30x)"
        )
    numpy_loader = speeds["numpy loader (threads)"]
    print(
        f"numpy loader / PNG files = {ratio(numpy_loader, speeds['PNG files (Pillow, threads)'], 1)} (target >= 30x)"
    )
    print(f"numpy loader / in memory = {ratio(numpy_loader, speeds['in memory'])} (target >= 0.5x)")
    print(f"best torch DataLoader / Keras adapter = {ratio(best_torch, keras)}")
    return speeds


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
    parser.add_argument(
        "--repeats", type=int, default=3, help="rounds of every reader in turn; the best counts"
    )
    parser.add_argument("--quick", action="store_true", help="4096 patches, 2 epochs, 2 rounds")
    parser.add_argument("--json", type=Path, help="also write the figures (batches/s) here")
    args = parser.parse_args(argv)
    if args.quick:
        args.patches, args.epochs, args.repeats = 4096, 2, 2
    benchmark(lambda: measure(args), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
