"""The extract stage: catalog -> plan -> shards written in parallel -> manifest -> atomic swap.

Atomicity and resumption: everything is built in a staging folder beside the output,
``.<out>.partial-<plan digest>``. Shards appear there under their final names only when complete; the
manifest is written last; then the staging folder replaces the output in one rename. A run killed at
any point leaves the previous output untouched (or no output, which ``verify`` rejects), and the next
run with the same plan reuses the complete shards it finds in staging.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from patchpack.dataset import byte_deciding_modules
from patchpack.dataset.fetch import is_url, mirrored, with_urls
from patchpack.dataset.io import manifest_json, write_bytes_atomic
from patchpack.dataset.labels import Labeller, attach_labels, open_labels
from patchpack.dataset.manifest import (
    MANIFEST_NAME,
    Manifest,
    ShardEntry,
    SplitCount,
    annotated_environment,
    current_environment,
)
from patchpack.dataset.plan import (
    ImagePlan,
    ShardSpec,
    check_splits,
    cut_shards,
    plan_images,
    split_counts,
)
from patchpack.dataset.shards import FORMAT_VERSION, SHARD_GLOB
from patchpack.dataset.sources import SourceImage, SourceRecord, catalog
from patchpack.dataset.tissue import Roi, RoiMask
from patchpack.dataset.work import (
    Job,
    MaskJob,
    Result,
    Task,
    mask_job,
    plan_tasks,
    release_pixels,
    run_task,
)
from patchpack.engine.executors import DaskExecutor, Executor, open_executor
from patchpack.engine.output import (
    describe_write_error,
    exclusive_writer,
    recover,
    remove_leftovers,
    swap_in,
)
from patchpack.errors import OutputError, SourceError
from patchpack.params import SPLITS, Params

ROI_FOLDER = "roi"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Engine:
    """Where the work runs (see :mod:`patchpack.engine.executors`); the default is this machine.

    ``workers`` local processes, or ``cluster="local:N"`` (a Dask LocalCluster), or ``scheduler`` (the
    address of a running Dask scheduler). ``gather`` has workers return shard bytes for this process
    to write (no shared file system needed); ``accept_env`` accepts workers whose environment
    envelope differs from this machine's.
    """

    workers: int = 1
    cluster: str | None = None
    scheduler: str | None = None
    gather: bool = False
    accept_env: bool = False


@dataclass(frozen=True)
class _Planned:
    class_names: list[str]
    sources: list[SourceImage]
    staging: Path
    rois: dict[str, tuple[Roi, SourceRecord]]
    jobs: list[Job]


def extract(
    params: Params, *, out: Path, workers: int = 1, engine: Engine | None = None
) -> Manifest:
    """Extract the dataset that ``params`` describes into ``out`` and return its manifest.

    ``workers`` is a shorthand for ``Engine(workers=...)``; the result is the same bytes whatever
    runs it.

    Raises
    ------
    ConfigError, SourceError
        For bad params or sources; nothing is written at ``out``.
    OutputError
        When another extract is writing ``out``, or ``out`` cannot be written (permissions, full
        disk, file size limit); the previous dataset at ``out`` stays intact.
    ClusterError
        When the Dask cluster cannot be reached, goes away, or has a worker in another environment.
    """
    engine = engine or Engine(workers=workers)
    shown = Path(out)
    out = _check_output(shown, params.source.dir, params.labels.dir)
    with exclusive_writer(out, shown=shown):
        recover(out)
        _check_replaceable(out, shown)
        remove_leftovers(out)
        executor = open_executor(
            workers=engine.workers, cluster=engine.cluster, scheduler=engine.scheduler
        )
        try:
            if isinstance(executor, DaskExecutor):
                envelope = _envelope(params)
                for note in executor.check_environment(
                    envelope(), accept=engine.accept_env, report=envelope
                ):
                    logger.warning("%s", note)
            with _local_sources(params) as (local, url):
                planned = _plan(local, out, executor, engine, url)
                manifest = _write(local, out, executor, engine, planned)
        finally:
            executor.close()
    return dataclasses.replace(manifest, folder=out)


@contextlib.contextmanager
def _local_sources(params: Params) -> Iterator[tuple[Params, str | None]]:
    """``params`` reading a local folder: sources at a URL are fetched into the cache and read
    through a temporary folder of links to them (see :mod:`patchpack.dataset.fetch`)."""
    url = params.source.dir
    if not is_url(url):
        yield params, None
        return
    with mirrored(url) as tree:
        source = dataclasses.replace(params.source, dir=str(tree))
        yield dataclasses.replace(params, source=source), url


def _plan(
    params: Params,
    out: Path,
    executor: Executor | DaskExecutor,
    engine: Engine,
    url: str | None = None,
) -> _Planned:
    """Catalog, tissue masks, plan and shard jobs: everything decided before a shard is built."""
    class_names, sources = catalog(
        params.source.dir,
        max_megapixels=params.source.max_megapixels,
        level=params.source.level,
        mpp=params.source.mpp,
        by_folder=not params.labels.per_patch,
    )
    if url is not None:
        sources = with_urls(sources, url, Path(params.source.dir))
    if params.labels.per_patch:
        class_names = list(params.labels.classes)
    sources = attach_labels(
        sources,
        params.labels,
        roi=params.extract.roi,
        max_megapixels=params.source.max_megapixels,
        source_dir=Path(params.source.dir),
    )
    staging = out.with_name(f".{out.name}.partial-{plan_digest(params, class_names, sources)[:16]}")
    with _writing(out):
        for stale in out.parent.glob(f".{out.name}.partial-*"):
            if stale != staging:
                _remove(stale)
        _unlink_links(staging)
        rois = _regions_of_interest(sources, params, staging, executor)
    plans = plan_images(
        sources,
        seed=params.seed,
        extract=params.extract,
        split=params.split,
        rois={source_id: roi for source_id, (roi, _) in rois.items()},
        labellers=_GridLabellers(sources, params) if params.labels.per_patch else None,
    )
    counts = split_counts(plans, mode=params.split.mode, fractions=params.split.fractions)
    check_splits(
        plans,
        counts,
        split=params.split,
        class_names=class_names,
        by_folder=not params.labels.per_patch,
    )
    specs = cut_shards(counts, [s.id for s in sources], target=params.shards.target_patches)
    _check_free_space(out, sum(spec.patches for spec in specs), params)
    jobs = [_job(spec, plans, params, class_names, staging, engine.gather) for spec in specs]
    return _Planned(class_names, sources, staging, rois, jobs)


def _job(
    spec: ShardSpec,
    plans: list[ImagePlan],
    params: Params,
    class_names: list[str],
    staging: Path,
    gather: bool,
) -> Job:
    return Job(
        spec=spec,
        plans={piece.image: plans[piece.image] for piece in spec.pieces},
        params=params,
        class_names=tuple(class_names),
        staging=staging,
        gather=gather,
    )


def _write(
    params: Params, out: Path, executor: Executor | DaskExecutor, engine: Engine, planned: _Planned
) -> Manifest:
    """Build every shard, write the manifest last, swap the staging folder in."""
    staging = planned.staging
    # the envelope imports every decoder to read its version: do it while the shards are built
    with _writing(out), ThreadPoolExecutor(1) as side:
        environment = side.submit(_envelope(params))
        done = _run(planned.jobs, executor, _parallelism(executor, engine), staging)
        entries = [entry for entry, _ in done]
        counts = _counts(done, planned.class_names)
        if params.labels.per_patch:
            _check_labelled_splits(counts, params, planned.sources)
        manifest = Manifest.create(
            class_names=planned.class_names,
            params=params.dataset,
            sources=[_record(s, planned.rois.get(s.id)) for s in planned.sources],
            counts=counts,
            shards=entries,
            environment=environment.result(),
        )
        keep = {e.path for e in entries} | {record.roi for _, record in planned.rois.values()}
        _remove_strays(staging, {path for path in keep if path})
        manifest.write(staging)
        swap_in(staging, out)
    return manifest


class _GridLabellers(Mapping[str, Labeller]):
    """Each source's labeller, opened when the plan asks for it: only grid sampling does (to count
    the labelled positions), one source at a time, so they are never all held at once."""

    def __init__(self, sources: list[SourceImage], params: Params) -> None:
        self._sources = {source.id: source for source in sources}
        self._params = params

    def __getitem__(self, source_id: str) -> Labeller:
        source = self._sources[source_id]
        return open_labels(source, self._params.labels, self._params.source.max_megapixels)

    def __iter__(self) -> Iterator[str]:
        return iter(self._sources)

    def __len__(self) -> int:
        return len(self._sources)


def _envelope(params: Params) -> Callable[[], dict[str, str]]:
    """What reads the environment envelope: with GeoJSON labels it names shapely and GEOS too."""
    return annotated_environment if params.labels.origin == "annotations" else current_environment


def _parallelism(executor: Executor | DaskExecutor, engine: Engine) -> int:
    if isinstance(executor, DaskExecutor):
        return max(1, len(executor.client.scheduler_info().get("workers", {})))
    return engine.workers


def _run(
    jobs: list[Job], executor: Executor | DaskExecutor, parallelism: int, staging: Path
) -> list[tuple[ShardEntry, tuple[int, ...]]]:
    """Run the jobs as tasks; write gathered shard bytes here; (entry, patches per class) of each
    shard, in canonical order."""
    tasks = plan_tasks(jobs, parallelism)
    results: list[Result] = []
    try:
        _collect(executor, tasks, staging, results, len(jobs))
    finally:
        release_pixels()  # this process's readers (the serial engine runs tasks here)
    return [(entry, per_class) for _, entry, _, per_class in sorted(results, key=lambda r: r[0])]


def _collect(
    executor: Executor | DaskExecutor,
    tasks: list[Task],
    staging: Path,
    results: list[Result],
    total: int,
) -> None:
    with tqdm(total=total, desc="extract", unit="shard", disable=not sys.stderr.isatty()) as bar:
        for done in executor.map(run_task, tasks):
            for index, entry, image, per_class in done:
                if image is not None:  # gathered: this process writes what the worker built
                    write_bytes_atomic(staging / entry.path, image)
                results.append((index, entry, None, per_class))
            bar.update(len(done))


def _remove(path: Path) -> None:
    """Delete a file, a link (not what it points to) or a folder tree."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _unlink_links(staging: Path) -> None:
    """A staging folder that a killed run left holds only what patchpack writes: folders and regular
    files. Links planted there (the folder itself, a split folder, a shard) would have shards read
    from or written to somewhere else: they are removed, never followed."""
    if staging.is_symlink() or (staging.exists() and not staging.is_dir()):
        staging.unlink()
        return
    if not staging.is_dir():
        return
    for path in sorted(staging.rglob("*")):
        if path.is_symlink() or not (path.is_dir() or path.is_file()):
            path.unlink()


def _check_output(out: Path, source_dir: str, labels_dir: str | None = None) -> Path:
    """The resolved output folder, refused when it is the working folder or overlaps the sources
    or the label files (the swap replaces the whole folder)."""
    resolved = out.resolve()
    here = Path.cwd().resolve()
    if resolved == here or resolved in here.parents:
        raise OutputError(
            f"--out {out} is the current folder or holds it; choose a subfolder such as data/patches"
        )
    if labels_dir is not None:
        labels = Path(labels_dir).resolve()
        if labels == resolved or resolved in labels.parents:
            raise OutputError(
                f"labels.dir {labels} is inside --out {out}, which extraction replaces (its label "
                f"files would be deleted); move the label files out of it or choose another --out"
            )
    if is_url(source_dir):
        return resolved
    source = Path(source_dir).resolve()
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
    modules = byte_deciding_modules()
    for relative in sorted(modules):
        digest.update(f"{relative}\0".encode())
        digest.update(modules[relative].read_bytes())
    return digest.hexdigest()


def _regions_of_interest(
    sources: list[SourceImage], params: Params, staging: Path, executor: Executor | DaskExecutor
) -> dict[str, tuple[Roi, SourceRecord]]:
    """Each source's region of interest (``extract.roi`` other than ``all``), written to
    ``staging/roi/``, and its manifest record.

    ``tissue`` masks are computed by the workers; ``mask`` is where the source's label file sets a
    class (or, with folder labels, where its ROI mask is set); ``tissue+mask`` is where both hold.
    The saved mask is the one sampling uses.
    """
    parts = params.extract.roi.split("+")
    if params.extract.roi == "all":
        return {}
    tissue: dict[str, RoiMask] = {}
    if "tissue" in parts:
        jobs = [MaskJob(source, params.source.max_megapixels) for source in sources]
        for source, (png, downsample) in zip(sources, executor.map(mask_job, jobs), strict=True):
            tissue[source.id] = RoiMask.from_png(png, downsample)
    result = {}
    for source in sources:
        mask = tissue.get(source.id)
        if "mask" in parts:
            covered = open_labels(source, params.labels, params.source.max_megapixels).coverage()
            mask = covered if mask is None else mask.intersect(covered)
            _check_covered(source, mask, "tissue" in parts)
        assert mask is not None  # "tissue" or "mask" is in parts
        png = mask.png()
        relative = f"{ROI_FOLDER}/{hashlib.sha256(source.id.encode()).hexdigest()[:16]}.png"
        write_bytes_atomic(staging / relative, png)
        record = dataclasses.replace(
            source.record(),
            roi=relative,
            roi_sha256=hashlib.sha256(png).hexdigest(),
            roi_downsample=mask.downsample,
        )
        roi = Roi(png, mask.downsample, params.extract.min_roi_fraction)
        result[source.id] = (roi, record)
    return result


def _check_covered(source: SourceImage, mask: RoiMask, with_tissue: bool) -> None:
    if mask.mask.any():
        return
    labels = source.labels.path if source.labels is not None else "its label file"
    where = "no tissue inside the area" if with_tissue else "no area"
    raise SourceError(
        f"{source.path}: {where} that {labels} labels, so extract.roi: mask leaves nothing to "
        f"sample; fix the label file or use extract.roi: all"
    )


def _record(source: SourceImage, roi: tuple[Roi, SourceRecord] | None) -> SourceRecord:
    return roi[1] if roi is not None else source.record()


def _counts(
    done: list[tuple[ShardEntry, tuple[int, ...]]], class_names: list[str]
) -> dict[str, SplitCount]:
    """Patches per split and class, from the shards as written (a patch's label may come from a
    label file, known only once it is drawn)."""
    result: dict[str, SplitCount] = {}
    for name in SPLITS:
        per_class = dict.fromkeys(class_names, 0)
        for entry, counts in done:
            if entry.split == name:
                for class_name, count in zip(class_names, counts, strict=True):
                    per_class[class_name] += count
        result[name] = SplitCount(total=sum(per_class.values()), per_class=per_class)
    return result


def _check_labelled_splits(
    counts: dict[str, SplitCount], params: Params, sources: list[SourceImage]
) -> None:
    """With labels from label files, a patch's class is known once it is drawn: refuse a dataset in
    which a class has no patch in a split whose fraction is above 0 (the staged shards stay)."""
    for name, fraction in zip(SPLITS, params.split.fractions, strict=True):
        if fraction <= 0:
            continue
        for class_name, count in counts[name].per_class.items():
            if count:
                continue
            shown = ", ".join(str(source.path) for source in sources[:3])
            shown += f" and {len(sources) - 3} more" if len(sources) > 3 else ""
            raise SourceError(
                f"{shown}: the {name} split gets no patch labelled {class_name!r} by "
                f"{params.labels.dir}; label more of that class where the {name} split draws "
                f"(lower split.block_size), remove it from labels.classes, or set "
                f"split.fractions.{name} to 0"
            )


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
