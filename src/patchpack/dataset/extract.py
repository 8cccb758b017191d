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
import sys
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from patchpack.dataset import byte_deciding_modules
from patchpack.dataset.card import write_card
from patchpack.dataset.card.index import ROWS_FOLDER
from patchpack.dataset.counts import _check_labelled_splits, _counts
from patchpack.dataset.fetch import is_url, mirrored, with_urls
from patchpack.dataset.io import manifest_json, write_bytes_atomic
from patchpack.dataset.labels import Labeller, attach_labels, open_labels
from patchpack.dataset.manifest import (
    Manifest,
    ShardEntry,
    annotated_environment,
    current_environment,
)
from patchpack.dataset.outdir import ROI_FOLDER as ROI_FOLDER  # still importable from here
from patchpack.dataset.outdir import (
    _check_free_space,
    _check_output,
    _check_replaceable,
    _remove,
    _remove_strays,
    _unlink_links,
    _writing,
)
from patchpack.dataset.plan import (
    ImagePlan,
    ShardSpec,
    check_splits,
    cut_shards,
    plan_images,
    split_counts,
)
from patchpack.dataset.roi import _record, _regions_of_interest
from patchpack.dataset.shards import FORMAT_VERSION
from patchpack.dataset.sources import SourceImage, SourceRecord, catalog
from patchpack.dataset.tissue import Roi
from patchpack.dataset.work import (
    Job,
    Result,
    Task,
    plan_tasks,
    release_pixels,
    run_task,
    write_rows,
)
from patchpack.engine.executors import DaskExecutor, Executor, open_executor
from patchpack.engine.output import exclusive_writer, recover, remove_leftovers, swap_in
from patchpack.params import Params

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
        extract=params.extract,
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
        # README.md, croissant.json, index.csv: before the manifest, the index from the rows the
        # workers wrote beside the shards (a shard without them is read)
        rows = staging / ROWS_FOLDER
        cards = write_card(manifest, staging, rows)
        _remove(rows)
        keep = {e.path for e in entries} | {record.roi for _, record in planned.rois.values()}
        _remove_strays(staging, {path for path in keep | set(cards) if path})
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
    # a local worker's readers end with the run (the pool is closed after it): let them outlive a task
    tasks = plan_tasks(jobs, parallelism, keep_windows=not isinstance(executor, DaskExecutor))
    for split in {job.spec.split for job in jobs}:  # the workers write the index rows in there
        (staging / ROWS_FOLDER / split).mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    try:
        _collect(executor, tasks, staging, results, len(jobs))
    finally:
        release_pixels()  # this process's readers (the serial engine runs tasks here)
    return [(entry, per_class) for _, entry, _, per_class, _ in sorted(results, key=lambda r: r[0])]


def _collect(
    executor: Executor | DaskExecutor,
    tasks: list[Task],
    staging: Path,
    results: list[Result],
    total: int,
) -> None:
    with _progress(total) as advance:
        for done in executor.map(run_task, tasks):
            for index, entry, image, per_class, rows in done:
                if image is not None:  # gathered: this process writes what the worker built
                    write_bytes_atomic(staging / entry.path, image)
                if rows is not None:
                    write_rows(staging / ROWS_FOLDER, entry.path, rows)
                results.append((index, entry, None, per_class, None))
            advance(len(done))


@contextlib.contextmanager
def _progress(total: int) -> Iterator[Callable[[int], object]]:
    """A progress bar of ``total`` shards on a terminal; nothing (and no tqdm import) otherwise."""
    if not sys.stderr.isatty():
        yield lambda count: None
        return
    from tqdm import tqdm

    with tqdm(total=total, desc="extract", unit="shard") as bar:
        yield bar.update


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
