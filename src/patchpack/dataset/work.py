"""What a worker runs: build one shard (or one tissue mask) from its job, wherever it runs.

A job carries everything that decides its output (the shard's spec, its images' plans, the params)
and the sha256 of every source it reads; the worker checks each source file against that hash before
decoding it, so a stale copy on one node of a cluster fails loudly instead of writing other pixels.
Jobs are grouped into tasks so that all shards of an image decoded whole run on one worker, which
decodes it once, while the shards of a slide spread over the workers (:func:`plan_tasks`); a task's
output depends on its jobs only, so a retried task gives the same bytes.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import stat
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from patchpack.dataset.card.index import ROWS_FOLDER, rows_path, shard_chunk
from patchpack.dataset.fetch import local_copy
from patchpack.dataset.io import file_sha256, manifest_json, write_bytes_atomic
from patchpack.dataset.labels import Labeller, open_labels
from patchpack.dataset.manifest import ShardEntry
from patchpack.dataset.plan import SEGMENT, ImagePlan, Rows, ShardSpec, sample_image, segmented
from patchpack.dataset.shards import FORMAT_VERSION, ShardData, read_shard, shard_bytes
from patchpack.dataset.sources import SourceImage, check_file, load_pixels, reader_for
from patchpack.dataset.tissue import RoiMask, low_resolution_view, tissue_mask
from patchpack.dataset.windows import Windows
from patchpack.errors import IntegrityError, SourceError
from patchpack.params import SPLITS, Params

PIXEL_CACHE_BYTES = (
    256 * 2**20
)  # decoded images kept per worker, so an image's shards decode it once
ROWS_CACHE = 64  # (image, split) coordinate lists kept per worker


@dataclass(frozen=True)
class Job:
    """What one worker needs to write one shard: picklable, small."""

    spec: ShardSpec
    plans: Mapping[int, ImagePlan]
    params: Params
    class_names: tuple[str, ...]
    staging: Path
    gather: bool = False  # return the shard's bytes instead of writing them (no shared file system)


@dataclass(frozen=True)
class Task:
    """Jobs that run together on one worker, with their positions in the canonical shard order.

    ``keep_windows``: leave the windowed sources (slides) open when the task ends, with their
    decoded tiles, for the run's next tasks on this worker: a slide's shards spread over several
    tasks, and each task would otherwise open the slide and decode its tiles again. Set where
    the worker's readers end with the run (this process, a local pool), not on a Dask worker.
    """

    indices: tuple[int, ...]
    jobs: tuple[Job, ...]
    keep_windows: bool = False


# (position in the canonical shard order, manifest entry, shard bytes when gathering, patches per
# class, the shard's index.csv rows when gathering)
Result = tuple[int, ShardEntry, bytes | None, tuple[int, ...], bytes | None]


def plan_tasks(jobs: Sequence[Job], workers: int, *, keep_windows: bool = False) -> list[Task]:
    """Group ``jobs`` so that an image's shards (in every split) share a task, about three tasks per
    worker, balanced by patch count; a task boundary falls between images, or between shards of a
    windowed source (a slide), whose patches each shard draws from its own segments' streams.

    One worker groups them too: a task's caches (the decoded image, its sampled rows) are released
    when it ends, so a task per shard would sample and decode an image once for each of its shards.
    """

    def first_image(i: int) -> tuple[int, int, int]:
        spec = jobs[i].spec
        return (min(p.image for p in spec.pieces), SPLITS.index(spec.split), spec.index)

    def windowed(i: int) -> bool:
        """A shard of windowed sources only: nothing is decoded whole, so it may run anywhere."""
        job = jobs[i]
        return all(job.plans[p.image].source.backend != "pillow" for p in job.spec.pieces)

    order = sorted(range(len(jobs)), key=first_image)
    target = max(1, sum(job.spec.patches for job in jobs) // (3 * max(1, workers)))
    tasks: list[list[int]] = [[]]
    filled, last_image = 0, -1
    for i in order:
        images = [p.image for p in jobs[i].spec.pieces]
        if filled >= target and (min(images) > last_image or windowed(i)):
            tasks.append([])
            filled = 0
        tasks[-1].append(i)
        filled += jobs[i].spec.patches
        last_image = max(last_image, *images)
    return [
        Task(tuple(group), tuple(jobs[i] for i in group), keep_windows) for group in tasks if group
    ]


def run_task(task: Task) -> list[Result]:
    """Every job of ``task``, in order: (position, manifest entry, shard bytes when gathering)."""
    try:
        return [
            (index, *write_job(job)) for index, job in zip(task.indices, task.jobs, strict=True)
        ]
    finally:
        release_pixels(keep_windows=task.keep_windows)


@dataclass(frozen=True)
class MaskJob:
    """What one worker needs to compute one source's tissue mask."""

    source: SourceImage
    max_megapixels: float


def mask_job(job: MaskJob) -> tuple[bytes, float]:
    """The tissue mask of one source as PNG bytes, and how many level-0 pixels a mask pixel spans."""
    source = local_copy(job.source)
    check_source(source)
    with reader_for(source, 3, job.max_megapixels) as reader:
        view, downsample = low_resolution_view(reader)
    mask = tissue_mask(view, str(source.path))
    if not mask.any():
        raise SourceError(
            f"{job.source.path}: no tissue found (Otsu threshold on a {view.shape[1]}x{view.shape[0]} "
            f"view); remove the image or use extract.roi: all"
        )
    return RoiMask(mask, downsample).png(), downsample


def write_job(job: Job) -> tuple[ShardEntry, bytes | None, tuple[int, ...], bytes | None]:
    """Build one shard and write it to staging (or reuse a complete staged one), with its rows of
    the patch index beside it (:data:`~patchpack.dataset.card.index.ROWS_FOLDER`); with
    ``job.gather`` return both instead. Returns the manifest entry, the shard's bytes (``None``
    when written), its patches per class (labels from label files are known only once patches are
    drawn) and its index rows (``None`` when written)."""
    path = job.staging / job.spec.path
    if not job.gather:
        staged = _staged(job, path)
        if staged is not None:
            _write_rows(job, staged[0], staged[1])
            return staged[0], None, _per_class(staged[1], job.class_names), None
    data = build_shard(job)
    shards = job.params.shards
    image = shard_bytes(
        data, chunk_patches=shards.chunk_patches, compression=shards.compression, level=shards.level
    )
    entry = ShardEntry.of_bytes(
        job.spec.path, job.spec.split, hashlib.sha256(image).hexdigest(), data
    )
    per_class = _per_class(data, job.class_names)
    if job.gather:
        return entry, image, per_class, shard_chunk(job.class_names, entry, data)
    write_bytes_atomic(path, image)
    stamp = {"job": _job_digest(job), "sha256": entry.sha256, "content": entry.content_sha256}
    write_bytes_atomic(_stamp_path(path), manifest_json(stamp).encode())
    _write_rows(job, entry, data)
    return entry, None, per_class, None


def _write_rows(job: Job, entry: ShardEntry, data: ShardData) -> None:
    """The shard's rows of the patch index, beside the staged shards for extract to join
    (:func:`write_rows`). Written by every run, never reused from a killed one, and read only once
    this task has returned."""
    write_rows(job.staging / ROWS_FOLDER, entry.path, shard_chunk(job.class_names, entry, data))


def write_rows(rows: Path, shard: str, chunk: bytes) -> None:
    """Put a shard's index rows in ``rows`` by rename (never a part-written file there), without
    fsync and without creating ``rows`` (extract made its split folders; a worker still running
    after the run removed them, a lost Dask worker say, writes nothing). Nothing is lost when
    this fails: extract reads the shard instead (see ``csv_chunks``)."""
    path = rows_path(rows, shard)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    try:
        temporary.write_bytes(chunk)
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink()


def _stamp_path(path: Path) -> Path:
    """The record a worker writes beside a staged shard once it is complete."""
    return path.with_name(f".{path.name}.done")


def _job_digest(job: Job) -> str:
    """Which shard of which plan: the staging folder's name carries the plan's digest."""
    return hashlib.sha256(f"{job.staging.name}\0{job.spec!r}".encode()).hexdigest()


def _staged(job: Job, path: Path) -> tuple[ShardEntry, ShardData] | None:
    """The entry of a shard a killed run left complete in staging, when it can be reused: a regular
    file (never a link), recorded by the worker that wrote it for this very job, whose file and
    decoded content hash to what that record says. Anything else there is deleted and rebuilt."""
    stamp = _stamp_path(path)
    try:
        if not (stat.S_ISREG(path.lstat().st_mode) and stat.S_ISREG(stamp.lstat().st_mode)):
            raise ValueError("not a regular file")
        record = json.loads(stamp.read_bytes())
        if record.get("job") != _job_digest(job) or file_sha256(path) != record.get("sha256"):
            raise ValueError("not the shard this job writes")
        data = read_shard(path)
        if len(data) != job.spec.patches or data.content_sha256() != record.get("content"):
            raise ValueError("not the content this job writes")
    except (OSError, ValueError, IntegrityError):
        for leftover in (path, stamp):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        return None
    return ShardEntry.of_bytes(job.spec.path, job.spec.split, record["sha256"], data), data


def _per_class(data: ShardData, class_names: Sequence[str]) -> tuple[int, ...]:
    counts = np.bincount(data.labels, minlength=len(class_names))[: len(class_names)]
    return tuple(int(count) for count in counts)


def build_shard(job: Job) -> ShardData:
    """Read the pixels of one shard's sources and cut its patches, in canonical row order.

    The patches are written straight into one array of the shard's size, so a shard is held once.
    """
    params = job.params
    size = params.extract.patch_size
    split = job.spec.split
    images = np.empty((job.spec.patches, size, size, params.source.channels), np.uint8)
    masks = (
        np.empty((job.spec.patches, size, size), np.uint8)
        if params.extract.targets == "mask"
        else None
    )
    sources: list[str] = []
    labels, source_index, patch_index, coords, levels = [], [], [], [], []
    row = 0
    for piece in job.spec.pieces:
        plan = job.plans[piece.image]
        pixels = _pixels(plan.source, params.source.channels, params.source.max_megapixels)
        if isinstance(pixels, Windows):
            drawn = _drawn_with(plan, split, piece.stop - piece.start, params)
            pixels.size_for(drawn, size, params.source.channels, params.source.cache_mb * 2**20)
        labeller = _labeller(plan.source, params)
        rows = _piece_rows(plan, split, piece.start, piece.stop, params, pixels, labeller)
        index, xy = rows.patch_index, rows.coords
        n = len(index)
        _cut_into(images[row : row + n], pixels, xy, size)
        if masks is not None and labeller is not None:
            downsample = plan.source.size.downsample
            for offset, (y, x) in enumerate(xy.tolist()):
                masks[row + offset] = labeller.target(y, x, size, downsample)
        row += n
        if not sources or sources[-1] != plan.source.id:
            sources.append(plan.source.id)
        labels.append(rows.labels)
        source_index.append(np.full(n, len(sources) - 1, np.int32))
        patch_index.append(index)
        coords.append(np.round(xy.astype(np.float64) * plan.source.size.downsample))
        levels.append(np.full(n, plan.source.level, np.int32))
    for piece in job.spec.pieces:  # a windowed source is read while the shard is cut: check again
        check_source(local_copy(job.plans[piece.image].source))
    return ShardData(
        images=images,
        labels=np.concatenate(labels),
        sources=tuple(sources),
        source_index=np.concatenate(source_index),
        patch_index=np.concatenate(patch_index).astype(np.int32),
        coords=np.concatenate(coords).astype(np.int32),
        attrs={
            "channels": params.source.channels,
            "class_names": list(job.class_names),
            "format_version": FORMAT_VERSION,
            "patch_size": size,
            "split": split,
        },
        levels=np.concatenate(levels),
        masks=masks,
    )


def _drawn_with(plan: ImagePlan, split: str, patches: int, params: Params) -> int:
    """How many patches are drawn (their windows read) to cut ``patches`` of ``split``: those of
    the segments they fall in, or the whole draw where it has no segments."""
    total = sum(draw.count for draw in plan.draws)
    if segmented(plan, split, params.extract):
        return min(patches + 2 * SEGMENT, total)
    return total


def _labeller(source: SourceImage, params: Params) -> Labeller | None:
    """The source's labeller when labels come from label files (checked against its sha256)."""
    if not params.labels.per_patch:
        return None
    return open_labels(source, params.labels, params.source.max_megapixels)


def _cut_into(target: np.ndarray, pixels: np.ndarray | Windows, xy: np.ndarray, size: int) -> None:
    """Write the patches at level corners ``xy`` into ``target``, shape (n, size, size, channels)."""
    if isinstance(pixels, Windows):
        for row, (y, x) in enumerate(xy):
            target[row] = pixels.window(y, x, size)
        return
    windows = np.lib.stride_tricks.sliding_window_view(pixels, (size, size), axis=(0, 1))
    target[...] = windows[xy[:, 0], xy[:, 1]].transpose(0, 2, 3, 1)


def _pixels(source: SourceImage, channels: int, max_megapixels: float) -> np.ndarray | Windows:
    """Pixels, kept for the next shards (an image's shards usually follow each other): a small image
    decoded whole, or windowed access to a large one. The file is checked against the sha256 the
    catalog recorded before it is decoded."""
    key = (source, channels, max_megapixels)
    cache = _caches().pixels
    found = cache.pop(key, None)
    try:
        here = local_copy(source)
        # hashed once per process while it stays the same file (see sources.hashing): a reader kept
        # open reads what was hashed, unless the file was written since, which this check refuses
        check_source(here)
    except BaseException:
        if found is not None:
            _close(found)
        raise
    if found is None:
        if here.backend != "pillow":
            found = Windows(reader_for(here, channels, max_megapixels), here.level)
        else:
            found = load_pixels(here, channels, max_megapixels)
            found.flags.writeable = False
            check_source(here)  # the bytes decoded are those the catalog hashed
    cache[key] = found
    while len(cache) > 1 and sum(_size(value) for value in cache.values()) > PIXEL_CACHE_BYTES:
        _close(cache.popitem(last=False)[1])
    return found


def check_source(source: SourceImage) -> None:
    """Refuse a source file whose bytes are not those the catalog hashed (changed, or a stale copy)."""
    check_file(source.path, source.sha256)


def _size(value: np.ndarray | Windows) -> int:
    """Bytes a kept source may hold: a decoded image, or a windowed one's windows and tiles."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    return value.held_bytes()


def _close(value: np.ndarray | Windows) -> None:
    if isinstance(value, Windows):
        value.reader.close()


def release_pixels(*, keep_windows: bool = False) -> None:
    """Forget this thread's kept pixels and close the files its windowed sources hold open; with
    ``keep_windows``, forget only the images decoded whole (the windowed sources stay open, their
    tiles kept, within the same bound of ``PIXEL_CACHE_BYTES``)."""
    caches = _caches()
    for key in list(caches.pixels):
        if not (keep_windows and isinstance(caches.pixels[key], Windows)):
            _close(caches.pixels.pop(key))
    caches.rows.clear()


class _Caches(threading.local):
    """Per thread: a Dask worker runs tasks in several threads, and a reader is not thread-safe."""

    def __init__(self) -> None:
        self.pixels: collections.OrderedDict[
            tuple[SourceImage, int, float], np.ndarray | Windows
        ] = collections.OrderedDict()
        self.rows: collections.OrderedDict[Any, Rows] = collections.OrderedDict()


_CACHES = _Caches()


def _caches() -> _Caches:
    return _CACHES


def _piece_rows(
    plan: ImagePlan,
    split: str,
    start: int,
    stop: int,
    params: Params,
    pixels: np.ndarray | Windows,
    labeller: Labeller | None,
) -> Rows:
    """Patches ``start:stop`` of one image in one split: drawn from the segments they fall in only
    (random sampling), or sliced from the split's rows."""
    if not segmented(plan, split, params.extract):
        whole = _rows(plan, split, params, pixels, labeller, None)
        return Rows(*(values[start:stop] for values in whole))
    first = start // SEGMENT
    parts = [
        _rows(plan, split, params, pixels, labeller, number)
        for number in range(first, -(-stop // SEGMENT))
    ]
    lo, hi = start - first * SEGMENT, stop - first * SEGMENT
    return Rows(*(np.concatenate(values)[lo:hi] for values in zip(*parts, strict=True)))


def _rows(
    plan: ImagePlan,
    split: str,
    params: Params,
    pixels: np.ndarray | Windows,
    labeller: Labeller | None,
    segment: int | None,
) -> Rows:
    """One image's patches in one split (or one segment of them); kept while its shards are
    being written."""
    key = (
        plan,
        split,
        segment,
        params.seed,
        params.extract,
        params.split,
        params.labels,
        params.source.channels,
    )
    cache = _caches().rows
    rows = cache.pop(key, None)
    if rows is None:
        if isinstance(pixels, Windows):
            pixels.min_std = params.extract.min_std
        rows = sample_image(
            plan,
            seed=params.seed,
            extract=params.extract,
            split=params.split,
            pixels=pixels,
            only=split,
            labeller=labeller,
            segment=segment,
        )[split]
    cache[key] = rows
    while len(cache) > ROWS_CACHE:
        cache.popitem(last=False)
    return rows
