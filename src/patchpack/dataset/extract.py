"""The extract stage: catalog -> plan -> shards written in parallel -> manifest -> atomic swap.

Atomicity and resumption: everything is built in a staging folder beside the output,
``.<out>.partial-<plan digest>``. Shards appear there under their final names only when complete; the
manifest is written last; then the staging folder replaces the output in one rename. A run killed at
any point leaves the previous output untouched (or no output, which ``verify`` rejects), and the next
run with the same plan reuses the complete shards it finds in staging.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import multiprocessing
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tqdm import tqdm

from patchpack.dataset.io import manifest_json, write_bytes_atomic
from patchpack.dataset.manifest import MANIFEST_NAME, Manifest, ShardEntry, SplitCount
from patchpack.dataset.output import (
    describe_write_error,
    exclusive_writer,
    ignore_file_size_signal,
    recover,
    remove_leftovers,
    swap_in,
)
from patchpack.dataset.plan import (
    ImagePlan,
    ShardSpec,
    cut_shards,
    plan_images,
    sample_image,
    split_counts,
)
from patchpack.dataset.readers import Reader
from patchpack.dataset.shards import FORMAT_VERSION, SHARD_GLOB, ShardData, read_shard, write_shard
from patchpack.dataset.sources import (
    SourceImage,
    SourceRecord,
    catalog,
    load_pixels,
    reader_for,
)
from patchpack.dataset.tissue import Roi, RoiMask, low_resolution_view, tissue_mask
from patchpack.errors import IntegrityError, OutputError, SourceError
from patchpack.params import SPLITS, Params

T = TypeVar("T")
R = TypeVar("R")
ROI_FOLDER = "roi"

# This folder holds exactly the code that decides a dataset's bytes (dvc.yaml's extract stage depends
# on it too): a change to any module in it invalidates staged shards.
PACKAGE = Path(__file__).parent


@dataclass(frozen=True)
class Job:
    """What one worker needs to write one shard: picklable, small."""

    spec: ShardSpec
    plans: Mapping[int, ImagePlan]
    params: Params
    class_names: tuple[str, ...]
    staging: Path


def extract(params: Params, *, out: Path, workers: int = 1) -> Manifest:
    """Extract the dataset that ``params`` describes into ``out`` and return its manifest.

    Raises
    ------
    ConfigError, SourceError
        For bad params or sources; nothing is written at ``out``.
    OutputError
        When another extract is writing ``out``, or ``out`` cannot be written (permissions, full
        disk, file size limit); the previous dataset at ``out`` stays intact.
    """
    shown = Path(out)
    out = _check_output(shown, Path(params.source.dir))
    with exclusive_writer(out, shown=shown):
        recover(out)
        _check_replaceable(out, shown)
        remove_leftovers(out)
        class_names, sources = catalog(
            params.source.dir,
            max_megapixels=params.source.max_megapixels,
            level=params.source.level,
            mpp=params.source.mpp,
        )
        staging = out.with_name(
            f".{out.name}.partial-{plan_digest(params, class_names, sources)[:16]}"
        )
        with _writing(out):
            for stale in out.parent.glob(f".{out.name}.partial-*"):
                if stale != staging:
                    shutil.rmtree(stale, ignore_errors=True)
            rois = _regions_of_interest(sources, params, staging, workers)
        plans = plan_images(
            sources,
            seed=params.seed,
            extract=params.extract,
            split=params.split,
            rois={source_id: roi for source_id, (roi, _) in rois.items()},
        )
        counts = split_counts(plans, mode=params.split.mode, fractions=params.split.fractions)
        specs = cut_shards(counts, [s.id for s in sources], target=params.shards.target_patches)
        _check_free_space(out, sum(spec.patches for spec in specs), params)
        staging = out.with_name(
            f".{out.name}.partial-{plan_digest(params, class_names, sources)[:16]}"
        )
        jobs = [
            Job(
                spec=spec,
                plans={piece.image: plans[piece.image] for piece in spec.pieces},
                params=params,
                class_names=tuple(class_names),
                staging=staging,
            )
            for spec in specs
        ]
        with _writing(out):
            entries = list(_progress(_run(jobs, workers), len(jobs)))
            manifest = Manifest.create(
                class_names=class_names,
                params=params.dataset,
                sources=[_record(source, rois.get(source.id)) for source in sources],
                counts=_counts(sources, counts, class_names),
                shards=entries,
            )
            keep = {entry.path for entry in entries} | {record.roi for _, record in rois.values()}
            _remove_strays(staging, {path for path in keep if path})
            manifest.write(staging)
            swap_in(staging, out)
    return dataclasses.replace(manifest, folder=out)


def _progress(entries: Iterator[ShardEntry], total: int) -> Iterator[ShardEntry]:
    return iter(
        tqdm(entries, total=total, desc="extract", unit="shard", disable=not sys.stderr.isatty())
    )


def _check_output(out: Path, source: Path) -> Path:
    """The resolved output folder, refused when it is the working folder or overlaps the sources."""
    resolved = out.resolve()
    here = Path.cwd().resolve()
    if resolved == here or resolved in here.parents:
        raise OutputError(
            f"--out {out} is the current folder or holds it; choose a subfolder such as data/patches"
        )
    source = source.resolve()
    if resolved == source or source in resolved.parents:
        raise OutputError(
            f"--out {out} is inside the source folder {source}; the next run would read the shards "
            f"as images: choose a folder outside it, such as data/patches"
        )
    if resolved in source.parents:
        raise OutputError(
            f"the source folder {source} is inside --out {out}, which extraction replaces; "
            f"choose another --out"
        )
    return resolved


@contextlib.contextmanager
def _writing(out: Path) -> Iterator[None]:
    """Turn a failed write (full disk, size limit, permissions) into one line; the output stays."""
    try:
        yield
    except OSError as exc:
        raise OutputError(describe_write_error(exc, out)) from exc


# Compressed patches of natural images take 5-60% of their raw size here; only a run that cannot fit
# even at the low end is refused up front. Anything else that runs out of space fails cleanly later.
_LOW_RATIO = {"none": 1.0, "gzip": 0.05, "zstd": 0.05}


def _check_free_space(out: Path, patches: int, params: Params) -> None:
    raw = patches * params.extract.patch_size**2 * params.source.channels
    needed = int(raw * _LOW_RATIO[params.shards.compression])
    free = shutil.disk_usage(_existing_parent(out)).free
    if needed > free:
        raise OutputError(
            f"{out}: the dataset needs at least {needed / 1e6:,.0f} MB ({patches:,} patches), but "
            f"only {free / 1e6:,.0f} MB are free there; free space or choose another --out"
        )


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def plan_digest(params: Params, class_names: list[str], sources: list[SourceImage]) -> str:
    """Identity of a run's intended output: params, sources, format and the byte-deciding code."""
    digest = hashlib.sha256()
    digest.update(manifest_json([FORMAT_VERSION, params.dataset_dict(), class_names]).encode())
    digest.update(manifest_json([source.record().to_dict() for source in sources]).encode())
    for module in sorted(PACKAGE.glob("*.py")):
        digest.update(f"{module.name}\0".encode())
        digest.update(module.read_bytes())
    return digest.hexdigest()


def _run(jobs: list[Job], workers: int) -> Iterator[ShardEntry]:
    try:
        yield from _map(write_job, jobs, workers)
    finally:
        release_pixels()


def _map(function: Callable[[T], R], items: list[T], workers: int) -> Iterator[R]:
    """``function`` over ``items`` in order, in ``workers`` processes (results in input order)."""
    if workers <= 1 or len(items) <= 1:
        yield from map(function, items)
        return
    # spawn, not fork: forked children would inherit HDF5's library state from the parent
    context = multiprocessing.get_context("spawn")
    with context.Pool(min(workers, len(items)), initializer=ignore_file_size_signal) as pool:
        yield from pool.imap(function, items, chunksize=1)


@dataclass(frozen=True)
class MaskJob:
    """What one worker needs to compute one source's tissue mask."""

    source: SourceImage
    max_megapixels: float


def mask_job(job: MaskJob) -> tuple[bytes, float]:
    """The tissue mask of one source as PNG bytes, and how many level-0 pixels a mask pixel spans."""
    with reader_for(job.source, 3, job.max_megapixels) as reader:
        view, downsample = low_resolution_view(reader)
    mask = tissue_mask(view, str(job.source.path))
    if not mask.any():
        raise SourceError(
            f"{job.source.path}: no tissue found (Otsu threshold on a {view.shape[1]}x{view.shape[0]} "
            f"view); remove the image or use extract.roi: all"
        )
    return RoiMask(mask, downsample).png(), downsample


def _regions_of_interest(
    sources: list[SourceImage], params: Params, staging: Path, workers: int
) -> dict[str, tuple[Roi, SourceRecord]]:
    """With ``extract.roi: tissue``, each source's mask, written to ``staging/roi/``, and its record."""
    if params.extract.roi != "tissue":
        return {}
    jobs = [MaskJob(source, params.source.max_megapixels) for source in sources]
    result = {}
    for source, (png, downsample) in zip(sources, _map(mask_job, jobs, workers), strict=True):
        relative = f"{ROI_FOLDER}/{hashlib.sha256(source.id.encode()).hexdigest()[:16]}.png"
        write_bytes_atomic(staging / relative, png)
        record = dataclasses.replace(
            source.record(),
            roi=relative,
            roi_sha256=hashlib.sha256(png).hexdigest(),
            roi_downsample=downsample,
        )
        result[source.id] = (Roi(png, downsample, params.extract.min_roi_fraction), record)
    return result


def _record(source: SourceImage, roi: tuple[Roi, SourceRecord] | None) -> SourceRecord:
    return roi[1] if roi is not None else source.record()


def write_job(job: Job) -> ShardEntry:
    """Write (or reuse, when a complete one is staged) one shard; return its manifest entry."""
    path = job.staging / job.spec.path
    if path.exists():
        try:
            data = read_shard(path)
        except IntegrityError:
            path.unlink()
        else:
            if len(data) == job.spec.patches:
                return ShardEntry.of(job.spec.path, job.spec.split, path, data)
            path.unlink()
    data = build_shard(job)
    shards = job.params.shards
    write_shard(
        path,
        data,
        chunk_patches=shards.chunk_patches,
        compression=shards.compression,
        level=shards.level,
    )
    return ShardEntry.of(job.spec.path, job.spec.split, path, data)


def build_shard(job: Job) -> ShardData:
    """Read the pixels of one shard's sources and cut its patches, in canonical row order.

    The patches are written straight into one array of the shard's size, so a shard is held once.
    """
    params = job.params
    size = params.extract.patch_size
    split = job.spec.split
    images = np.empty((job.spec.patches, size, size, params.source.channels), np.uint8)
    sources: list[str] = []
    labels, source_index, patch_index, coords, levels = [], [], [], [], []
    row = 0
    for piece in job.spec.pieces:
        plan = job.plans[piece.image]
        pixels = _pixels(plan.source, params.source.channels, params.source.max_megapixels)
        index, xy = _rows(plan, split, params, pixels)
        index, xy = index[piece.start : piece.stop], xy[piece.start : piece.stop]
        n = len(index)
        _cut_into(images[row : row + n], pixels, xy, size)
        row += n
        if not sources or sources[-1] != plan.source.id:
            sources.append(plan.source.id)
        labels.append(np.full(n, plan.source.label, np.int32))
        source_index.append(np.full(n, len(sources) - 1, np.int32))
        patch_index.append(index)
        coords.append(np.round(xy.astype(np.float64) * plan.source.size.downsample))
        levels.append(np.full(n, plan.source.level, np.int32))
    return ShardData(
        images=images,
        labels=np.concatenate(labels),
        sources=tuple(sources),
        source_index=np.concatenate(source_index),
        patch_index=np.concatenate(patch_index).astype(np.int32),
        coords=np.concatenate(coords).astype(np.int32),
        attrs={
            "channels": params.source.channels,
            "class_names": manifest_json(list(job.class_names)).strip(),
            "format_version": FORMAT_VERSION,
            "patch_size": size,
            "split": split,
        },
        levels=np.concatenate(levels),
    )


class Windows:
    """Windowed access to the sampled level of a source too large to decode whole.

    The windows read while checking candidates are kept (up to ``KEEP_BYTES``), since the candidates
    that pass are the patches cut next: most patches are then decoded once.
    """

    KEEP_BYTES = 64 * 2**20

    def __init__(self, reader: Reader, level: int) -> None:
        self.reader = reader
        self.level = level
        self._kept: collections.OrderedDict[tuple[int, int, int], np.ndarray] = (
            collections.OrderedDict()
        )
        self._bytes = 0

    def window(self, y: int, x: int, size: int) -> np.ndarray:
        key = (int(y), int(x), size)
        found = self._kept.pop(key, None)
        if found is not None:
            self._bytes -= found.nbytes
            return found
        window = self.reader.read(self.level, key[0], key[1], size, size)
        self._kept[key] = window
        self._bytes += window.nbytes
        while self._bytes > self.KEEP_BYTES:
            self._bytes -= self._kept.popitem(last=False)[1].nbytes
        return window

    def stds(self, ys: np.ndarray, xs: np.ndarray, size: int) -> np.ndarray:
        """Pixel standard deviation of each candidate window (read, decoded, then dropped)."""
        return np.array(
            [
                self.window(y, x, size).reshape(1, -1).std(axis=1)[0]
                for y, x in zip(ys, xs, strict=True)
            ]
        )


def _cut_into(target: np.ndarray, pixels: np.ndarray | Windows, xy: np.ndarray, size: int) -> None:
    """Write the patches at level corners ``xy`` into ``target``, shape (n, size, size, channels)."""
    if isinstance(pixels, Windows):
        for row, (y, x) in enumerate(xy):
            target[row] = pixels.window(y, x, size)
        return
    windows = np.lib.stride_tricks.sliding_window_view(pixels, (size, size), axis=(0, 1))
    target[...] = windows[xy[:, 0], xy[:, 1]].transpose(0, 2, 3, 1)


def _pixels(source: SourceImage, channels: int, max_megapixels: float) -> np.ndarray | Windows:
    """Pixels, kept for the next shard (consecutive shards usually share an image): a small image
    decoded whole, or windowed access to a large one."""
    key = (source, channels, max_megapixels)
    if _PIXELS.get("key") != key:
        release_pixels()
        if source.backend != "pillow":
            value: np.ndarray | Windows = Windows(
                reader_for(source, channels, max_megapixels), source.level
            )
        else:
            value = load_pixels(source, channels, max_megapixels)
            value.flags.writeable = False
        _PIXELS.update(key=key, value=value)
    kept: np.ndarray | Windows = _PIXELS["value"]
    return kept


def release_pixels() -> None:
    """Forget the kept pixels and close the file a windowed source holds open."""
    value = _PIXELS.pop("value", None)
    _PIXELS.pop("key", None)
    if isinstance(value, Windows):
        value.reader.close()


_PIXELS: dict[str, Any] = {}


def _rows(
    plan: ImagePlan, split: str, params: Params, pixels: np.ndarray | Windows
) -> tuple[np.ndarray, np.ndarray]:
    """One image's (patch_index, coords) in one split; cached while its shards are being written."""
    key = (plan, split, params.seed, params.extract, params.split, params.source.channels)
    if _ROWS_CACHE.get("key") != key:
        _ROWS_CACHE["key"] = key
        _ROWS_CACHE["rows"] = sample_image(
            plan,
            seed=params.seed,
            extract=params.extract,
            split=params.split,
            pixels=pixels,
            only=split,
        )[split]
    rows: tuple[np.ndarray, np.ndarray] = _ROWS_CACHE["rows"]
    return rows


_ROWS_CACHE: dict[str, Any] = {}


def _counts(
    sources: list[SourceImage], counts: list[dict[str, int]], class_names: list[str]
) -> dict[str, SplitCount]:
    result: dict[str, SplitCount] = {}
    for name in SPLITS:
        per_class = dict.fromkeys(class_names, 0)
        for source, per_split in zip(sources, counts, strict=True):
            per_class[source.class_name] += per_split[name]
        result[name] = SplitCount(total=sum(per_class.values()), per_class=per_class)
    return result


def _is_dataset_file(relative: Path) -> bool:
    parts = relative.parts
    if parts == (MANIFEST_NAME,):
        return True
    if len(parts) == 1 and parts[0] in (*SPLITS, ROI_FOLDER):
        return True
    if len(parts) == 2 and parts[0] == ROI_FOLDER:
        return parts[1].endswith(".png")
    return (
        len(parts) == 2
        and parts[0] in SPLITS
        and (relative.match(SHARD_GLOB) or parts[1].startswith(".shard-"))
    )


def _check_replaceable(out: Path, shown: Path) -> None:
    """Refuse to replace a folder that holds anything but a patchpack dataset: never lose user data."""
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputError(f"{shown}: output exists and is not a folder; choose another --out")
    for path in sorted(out.rglob("*")):
        if not _is_dataset_file(path.relative_to(out)):
            raise OutputError(
                f"{shown}: output folder holds {path.relative_to(out)}, which is not part of a "
                f"patchpack dataset; choose an empty or new --out folder"
            )


def _remove_strays(staging: Path, keep: set[str]) -> None:
    for path in sorted(staging.rglob("*")):
        if path.is_file() and path.relative_to(staging).as_posix() not in keep:
            path.unlink()
