"""Slide benchmark: peak memory against slide size, patchpack against histolab, TIAToolbox and
pyvips, and every workload against the per-core floor measured in the same run.

    python benchmarks/bench_slides.py [--quick] [--json out.json] [--repeats N] [--sides N N N]
                                      [--peer-python PY] [--tia-python PY] [--vips-python PY]

1. Memory is flat in slide size: ``patchpack extract`` (the CLI, in a child process) takes the same
   number of random 256x256 tissue patches at level 0 from demo slides of growing side; the peak
   resident memory of each child (``ru_maxrss`` from ``os.wait4``) and the ratio of the largest
   slide's peak to the smallest's are printed.
2. patchpack against its peers on one slide: the same number of random 256x256 tissue patches at
   level 0, patchpack into zstd HDF5 shards, histolab's ``RandomTiler`` and TIAToolbox's patch
   extractor one PNG file per patch, each with its own tissue detection (see ``_peers.py``). Patches
   per second, bytes and allocated bytes (``st_blocks * 512``) on disk, and the ratios against
   histolab, all measured in this run. pyvips (libvips, ``pip install patchpack[bench]``) crops
   the very corners patchpack drew, into memory and into one PNG file per patch: a tiler with no
   tissue detection, no checks and no container, the speed of reading tiles.
3. Against the floor (``_floor.py``): the primitives this workload cannot avoid (each distinct tile
   decoded once, the std sums, the hashes, zstd-3 into HDF5, the source file's hash), timed here on
   one core; ``patchpack extract`` from the command line (interpreter, imports and exit included) and
   ``extract()`` run a second time in one process (warm), the fastest of ``--repeats`` runs of each,
   in turns, and every tool of the comparison, as fractions of it.

The demo slides (``patchpack sources --slide``) are written once into ``.bench/slides/`` (ignored by
git), under a name that carries a hash of the code that draws them, so a changed drawing is rewritten.
The peers live in their own virtualenvs (``--peer-python``, ``--tia-python``); a missing one is
skipped with a message. ``--quick`` runs everything on tiny slides, as a smoke test. Setup (histolab
0.7.0 pins scikit-image < 0.19.4, which has no wheel for Python 3.11, and openslide-python 1.3.1,
which predates openslide-bin; TIAToolbox needs numpy >= 2 where histolab pins numpy <= 1.24.4)::

    python3 -m venv .bench/venv-peers
    .bench/venv-peers/bin/pip install numpy==1.24.4 scipy==1.10.0 "Pillow>=9.1,<11" \
        scikit-image==0.20.0 certifi openslide-python openslide-bin
    .bench/venv-peers/bin/pip install --no-deps histolab==0.7.0
    python3 -m venv .bench/venv-tia && .bench/venv-tia/bin/pip install tiatoolbox

Fairness: every tool reads the same file at level 0, draws the same number of patches of the same
size, keeps a patch only when at least ``TISSUE`` of it is tissue by its own detector, and writes into
an empty folder on the same file system. Each timed run starts in a fresh process after the slide
file has been read once (warm page cache for all), and the clock starts after imports, so only the
extraction is timed. With ``--repeats`` above 1 the fastest run of each tool is kept, and the highest
peak memory. The patchpack settings are its defaults except where the comparison fixes them:
``source.channels: 3`` (the peers keep RGB), ``extract.patch_size: 256``, ``extract.roi: tissue``,
``extract.min_roi_fraction`` equal to the peers' 80% tissue threshold, and ``split.block_size: 1024``
(region splits need blocks at least as large as a patch; the default 64 is for 32-pixel patches).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from _floor import Floor, measure_floor
from _harness import folder_bytes, interleaved, ratio, run_fresh, session, table, timed, write_json

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".bench"
PEERS = Path(__file__).resolve().parent / "_peers.py"
PATCH_SIZE = 256
TISSUE = 0.8  # least tissue fraction of a kept patch: histolab's default tissue_percent, for all
SEED = 2019
BLOCK_SIZE = 1024
MB = 1e6


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How large one run is: slide sides (pixels), patch counts and repetitions."""

    sides: tuple[int, ...]
    memory_patches: int
    compare_side: int
    compare_patches: int
    repeats: int


FULL = Sizes(
    sides=(5120, 10240, 20480),
    memory_patches=2000,
    compare_side=10240,
    compare_patches=500,
    repeats=2,
)
QUICK = Sizes(
    sides=(3072, 4096, 6144), memory_patches=40, compare_side=4096, compare_patches=20, repeats=1
)


@dataclasses.dataclass(frozen=True)
class MemoryRow:
    """Peak memory of ``patchpack extract`` on one slide."""

    side: int  # pixels
    file_bytes: int
    patches: int
    seconds: float  # the fastest run, wall clock, interpreter start-up included
    peak_rss: int  # bytes, the highest of the runs
    peak_rss_runs: tuple[int, ...]

    @property
    def pixels(self) -> int:
        return self.side * self.side


@dataclasses.dataclass(frozen=True)
class ToolRow:
    """One tool's fastest run in the comparison (seconds exclude imports; see the module docstring)."""

    label: str
    tool: str
    version: str
    patches: int
    seconds: float
    mask_seconds: float  # the slide-level tissue mask's share of ``seconds``
    bytes: int
    allocated: int
    peak_rss: int  # bytes, the highest of the runs, imports included

    @property
    def rate(self) -> float:
        """Patches per second, end to end."""
        return self.patches / self.seconds

    @property
    def rate_after_mask(self) -> float:
        """Patches per second once the slide's tissue mask exists."""
        return self.patches / (self.seconds - self.mask_seconds)


def demo_slide(side: int) -> Path:
    """The source folder holding the ``side`` x ``side`` demo slide, written once into the cache.

    Parameters
    ----------
    side : int
        Level-0 width and height, pixels (at least 1536, ``export_demo_slide``'s minimum).

    Returns
    -------
    Path
        A folder whose only content is ``demo/slide.tif``: a patchpack source folder.
    """
    from patchpack.dataset import demo_slide as drawing
    from patchpack.dataset.sources import DEMO_SLIDE, export_demo_slide

    code = hashlib.sha256(Path(drawing.__file__).read_bytes()).hexdigest()[:12]
    folder = CACHE / "slides" / f"side-{side}-{code}"
    if not (folder / DEMO_SLIDE).exists():
        print(f"writing the {side}x{side} demo slide into {folder} (once) ...", flush=True)
        export_demo_slide(folder, side=side)
    return folder


def slide_file(source: Path) -> Path:
    """The slide file inside a source folder made by :func:`demo_slide`."""
    from patchpack.dataset.sources import DEMO_SLIDE

    return source / DEMO_SLIDE


def warm(path: Path) -> None:
    """Read ``path`` once so every tool starts with the slide in the page cache."""
    with path.open("rb") as handle:
        while handle.read(1 << 24):
            pass


def write_params(folder: Path, source: Path, patches: int) -> Path:
    """Write ``folder/params.yaml`` for ``patches`` random tissue patches from ``source``.

    Parameters
    ----------
    folder : Path
        Where the params file goes.
    source : Path
        The source folder (one class folder holding the slide).
    patches : int
        ``extract.per_image``: patches drawn from the slide.

    Returns
    -------
    Path
        The params file.
    """
    params = {
        "base": {"seed": SEED},
        "source": {"dir": str(source), "channels": 3, "level": 0},
        "extract": {
            "patch_size": PATCH_SIZE,
            "per_image": patches,
            "roi": "tissue",
            "min_roi_fraction": TISSUE,
        },
        "split": {"block_size": BLOCK_SIZE},
    }
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def patchpack_command() -> list[str]:
    """The ``patchpack`` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "patchpack"
    return [str(script)] if script.exists() else [sys.executable, "-m", "patchpack.cli"]


def memory_row(source: Path, patches: int, work: Path, repeats: int) -> MemoryRow:
    """Peak RSS of ``patchpack extract`` on one slide: the highest of ``repeats`` fresh runs.

    Parameters
    ----------
    source : Path
        Source folder from :func:`demo_slide`.
    patches : int
        Patches to extract, the same for every slide.
    work : Path
        Scratch folder for the params files and datasets (each removed once measured).
    repeats : int
        Runs, each in a fresh process.

    Returns
    -------
    MemoryRow
    """
    import tifffile

    slide = slide_file(source)
    with tifffile.TiffFile(slide) as tif:
        side = int(tif.pages.first.imagewidth)
    peaks, seconds = [], []
    for attempt in range(repeats):
        folder = Path(tempfile.mkdtemp(prefix=f"memory-{side}-{attempt}-", dir=work))
        params = write_params(folder, source, patches)
        warm(slide)
        options = ["--params", str(params), "--out", str(folder / "out")]
        run = run_fresh([*patchpack_command(), "extract", *options], ROOT)
        peaks.append(run.peak_rss_bytes)
        seconds.append(run.seconds)
        shutil.rmtree(folder)
    return MemoryRow(
        side=side,
        file_bytes=slide.stat().st_size,
        patches=patches,
        seconds=min(seconds),
        peak_rss=max(peaks),
        peak_rss_runs=tuple(peaks),
    )


def timed_extract(params_path: str, out: str, warm_out: str = "") -> None:
    """Child side of the comparison: print the JSON line ``_peers.py`` describes, for patchpack.

    ``seconds`` is ``extract()`` end to end (catalog and file hash, tissue mask, plan, shards,
    manifest), imports excluded. ``mask_seconds`` is the time one more tissue mask of each source
    takes, computed after the extraction (the extraction computed it once, inside ``seconds``).

    Parameters
    ----------
    params_path : str
        The params file from :func:`write_params`.
    out : str
        The dataset folder to write.
    warm_out : str, optional
        With a folder: extract once more into it, in the same process, and print only
        ``{"warm_seconds": ...}``, the time of that second run.
    """
    # extract() imports these lazily, inside the clock; every peer library is imported before its
    # clock starts, so these are too (patchpack imports neither zarr nor SciPy)
    import imagecodecs  # noqa: F401
    import tifffile  # noqa: F401

    import patchpack
    from patchpack.dataset.extract import extract
    from patchpack.dataset.sources import catalog
    from patchpack.dataset.work import MaskJob, mask_job
    from patchpack.params import load_params

    params = load_params(params_path)
    manifest, seconds = timed(lambda: extract(params, out=Path(out)))
    _, sources = catalog(params.source.dir, max_megapixels=params.source.max_megapixels)

    def masks() -> None:
        for source in sources:
            mask_job(MaskJob(source, params.source.max_megapixels))

    _, mask_seconds = timed(masks)
    if warm_out:
        _, warm = timed(lambda: extract(params, out=Path(warm_out)))
        print(json.dumps({"warm_seconds": warm}))
        return
    result = {
        "tool": "patchpack",
        "version": patchpack.__version__,
        "patches": sum(shard.patches for shard in manifest.shards),
        "seconds": seconds,
        "mask_seconds": mask_seconds,
    }
    print(json.dumps(result))


def patchpack_run(slide: Path, count: int, out: Path, warm_out: str = "") -> list[str]:
    """The command for one timed patchpack run (``timed_extract`` in a fresh interpreter)."""
    params = write_params(out.parent, slide.parent.parent, count)
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        f"from bench_slides import timed_extract; "
        f"timed_extract({str(params)!r}, {str(out)!r}, {warm_out!r})"
    )
    return [sys.executable, "-c", code]


def vips_run(python: Path, slide: Path, corners: Path, store: str, out: Path) -> list[str]:
    """The command for one timed pyvips run: crops at patchpack's corners (see ``_peers.py``)."""
    count = len(json.loads(corners.read_text()))
    return [
        *peer_run(python, "pyvips", slide, count, out),
        f"--corners={corners}",
        f"--store={store}",
    ]


def peer_run(python: Path, tool: str, slide: Path, count: int, out: Path) -> list[str]:
    """The command for one timed run of a peer in its own interpreter (see ``_peers.py``)."""
    return [
        str(python),
        str(PEERS),
        tool,
        f"--slide={slide}",
        f"--out={out}",
        f"--count={count}",
        f"--size={PATCH_SIZE}",
        f"--seed={SEED}",
        f"--tissue={TISSUE}",
    ]


def measure_tool(
    label: str, command_for: Callable[[Path], list[str]], slide: Path, work: Path, repeats: int
) -> ToolRow | None:
    """Run one tool ``repeats`` times on ``slide``; keep the fastest run and the highest peak RSS.

    Parameters
    ----------
    label : str
        The tool's name in the table.
    command_for : callable
        Takes the (not yet existing) output folder, returns the command of one timed run; the
        command prints the JSON line that ``_peers.py`` describes.
    slide : Path
        The slide file, read once before each run so every run starts with it cached.
    work : Path
        Scratch folder; each run's output is removed once measured.
    repeats : int
        Runs, each in a fresh process.

    Returns
    -------
    ToolRow or None
        None when the tool reported itself skipped (not installed in its interpreter).
    """
    runs: list[ToolRow] = []
    for attempt in range(repeats):
        out = Path(tempfile.mkdtemp(prefix=f"{label.split()[0]}-{attempt}-", dir=work)) / "out"
        warm(slide)
        run = run_fresh(command_for(out), ROOT)
        result = json.loads(run.stdout.strip().splitlines()[-1])
        if "skipped" in result:
            print(f"{label}: skipped ({result['skipped']})")
            return None
        written = folder_bytes(out)
        shutil.rmtree(out.parent)
        runs.append(
            ToolRow(
                label=label,
                bytes=written.bytes,
                allocated=written.allocated,
                peak_rss=run.peak_rss_bytes,
                **result,
            )
        )
    fastest = min(runs, key=lambda run: run.seconds)
    return dataclasses.replace(fastest, peak_rss=max(run.peak_rss for run in runs))


def compare(sizes: Sizes, args: argparse.Namespace, work: Path, corners: Path) -> list[ToolRow]:
    """patchpack, histolab, TIAToolbox and pyvips on the same slide: one row per tool that ran
    (pyvips crops the corners patchpack drew, in ``corners``)."""
    slide = slide_file(demo_slide(sizes.compare_side))
    count = sizes.compare_patches
    vips = args.vips_python
    tools: list[tuple[str, Path | None, Callable[[Path], list[str]]]] = [
        ("patchpack (zstd HDF5)", None, lambda out: patchpack_run(slide, count, out)),
        ("pyvips crops (memory)", vips, lambda out: vips_run(vips, slide, corners, "memory", out)),
        ("pyvips crops (PNG)", vips, lambda out: vips_run(vips, slide, corners, "png", out)),
        (
            "histolab RandomTiler (PNG)",
            args.peer_python,
            lambda out: peer_run(args.peer_python, "histolab", slide, count, out),
        ),
        (
            "TIAToolbox extractor (PNG)",
            args.tia_python,
            lambda out: peer_run(args.tia_python, "tiatoolbox", slide, count, out),
        ),
    ]
    rows = []
    for label, python, command_for in tools:
        if python is not None and not python.exists():
            print(f"{label}: skipped (no interpreter at {python}; see the module docstring)")
            continue
        row = measure_tool(label, command_for, slide, work, sizes.repeats)
        if row is not None:
            rows.append(row)
    for row in rows:
        if row.patches != count:
            print(f"note: {row.label} wrote {row.patches} patches, not {count}")
    return rows


def drawn_patches(sizes: Sizes, work: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """patchpack's patches of the comparison, extracted once here: a JSON file of their level-0
    corners (for pyvips), the corners (n, 2) and the pixels (n, size, size, 3)."""
    from patchpack.dataset.extract import extract
    from patchpack.dataset.shards import read_shard
    from patchpack.params import load_params

    source = demo_slide(sizes.compare_side)
    folder = Path(tempfile.mkdtemp(prefix="drawn-", dir=work))
    manifest = extract(
        load_params(write_params(folder, source, sizes.compare_patches)), out=folder / "out"
    )
    shards = [read_shard(folder / "out" / shard.path) for shard in manifest.shards]
    corners = np.concatenate([shard.coords for shard in shards])
    pixels = np.concatenate([shard.images for shard in shards])
    path = work / "corners.json"
    path.write_text(json.dumps(corners.tolist()))
    shutil.rmtree(folder)
    return path, corners, pixels


@dataclasses.dataclass(frozen=True)
class FloorRow:
    """One workload's rate against the floor measured in the same run."""

    label: str
    rate: float  # patches per second
    fraction: float  # of the floor


def against_floor(
    sizes: Sizes, work: Path, corners: np.ndarray, pixels: np.ndarray, rows: list[ToolRow]
) -> tuple[Floor, list[FloorRow]]:
    """The floor, patchpack from the command line and warm (the fastest of ``sizes.repeats``
    each, in turns, so that a busy moment slows all three alike), and every tool of the comparison,
    as fractions of the floor."""
    slide = slide_file(demo_slide(sizes.compare_side))
    count = sizes.compare_patches
    runs = iter(range(10**6))

    def cli() -> float:
        folder = Path(tempfile.mkdtemp(prefix=f"cli-{next(runs)}-", dir=work))
        params = write_params(folder, slide.parent.parent, count)
        warm(slide)
        command = [
            *patchpack_command(),
            "extract",
            "--params",
            str(params),
            "--out",
            str(folder / "out"),
        ]
        seconds = run_fresh(command, ROOT).seconds
        shutil.rmtree(folder)
        return seconds

    def warm_run() -> float:
        folder = Path(tempfile.mkdtemp(prefix=f"warm-{next(runs)}-", dir=work))
        warm(slide)
        command = patchpack_run(slide, count, folder / "a", warm_out=str(folder / "b"))
        seconds = float(
            json.loads(run_fresh(command, ROOT).stdout.strip().splitlines()[-1])["warm_seconds"]
        )
        shutil.rmtree(folder)
        return seconds

    def floor_run() -> float:
        floors.append(measure_floor(slide, corners, pixels, candidates=len(corners)))
        return floors[-1].seconds

    floors: list[Floor] = []
    timings = interleaved({"floor": floor_run, "cli": cli, "warm": warm_run}, sizes.repeats)
    floor = min(floors, key=lambda measured: measured.seconds)
    table_rows = [
        FloorRow("patchpack extract, command line", count / min(timings["cli"]), 0.0),
        FloorRow("patchpack extract(), warm process", count / min(timings["warm"]), 0.0),
        *(FloorRow(row.label, row.rate, 0.0) for row in rows),
    ]
    return floor, [dataclasses.replace(row, fraction=row.rate / floor.rate) for row in table_rows]


def print_floor(floor: Floor, rows: list[FloorRow]) -> None:
    """Print the floor and each workload's fraction of it."""
    print(floor.describe())
    cells = [(row.label, f"{row.rate:,.1f}", f"{row.fraction:.2f}") for row in rows]
    print(table(cells, ("workload", "patches/s", "of floor")))
    print("(targets: the command line at least 0.6 of the floor, a warm process 0.8)")


def print_memory(rows: list[MemoryRow]) -> dict[str, float]:
    """Print the memory table; return the largest/smallest slide ratio and the highest/lowest one."""
    cells = [
        (
            f"{row.side} x {row.side}",
            f"{row.pixels / MB:,.0f} MP",
            f"{row.file_bytes / MB:.1f} MB",
            f"{row.seconds:.1f}",
            f"{row.peak_rss / MB:,.0f} MB",
            ratio(row.peak_rss, rows[0].peak_rss),
        )
        for row in rows
    ]
    print(table(cells, ("slide", "pixels", "file", "seconds", "peak RSS", "ratio")))
    peaks = [row.peak_rss for row in rows]
    ratios = {
        "largest_over_smallest": peaks[-1] / peaks[0],
        "max_over_min": max(peaks) / min(peaks),
    }
    print(
        f"peak RSS, largest slide / smallest ({rows[-1].pixels / rows[0].pixels:.0f}x the pixels): "
        f"{ratios['largest_over_smallest']:.2f} (target at most 1.2); "
        f"highest / lowest: {ratios['max_over_min']:.2f}"
    )
    return ratios


def print_compare(rows: list[ToolRow]) -> dict[str, float]:
    """Print the comparison table; return the ratios of patchpack to histolab (empty without both)."""
    base = next((row for row in rows if row.tool == "histolab"), None)
    rate = base.rate if base else None
    after = base.rate_after_mask if base else None
    size = base.bytes / base.patches if base else None
    alloc = base.allocated / base.patches if base else None
    cells = []
    for row in rows:
        per_patch, alloc_per_patch = row.bytes / row.patches, row.allocated / row.patches
        cells.append(
            (
                row.label,
                row.patches,
                f"{row.rate:,.1f}",
                ratio(row.rate, rate),
                f"{row.rate_after_mask:,.1f}",
                ratio(row.rate_after_mask, after),
                f"{per_patch:,.0f}",
                ratio(per_patch, size),
                f"{alloc_per_patch:,.0f}",
                ratio(alloc_per_patch, alloc),
                f"{row.peak_rss / MB:,.0f} MB",
            )
        )
    headers = ("tool", "patches", "patches/s", "speed", "w/o mask", "speed", "bytes/patch", "size",
               "alloc/patch", "size", "peak RSS")  # fmt: skip
    print(table(cells, headers))
    print(
        "(speed and size are ratios against histolab, measured in this run; 'w/o mask' leaves out "
        "the slide-level tissue mask each tool computes once; "
        + ", ".join(f"{row.tool} {row.version}" for row in rows)
        + ")"
    )
    ours = next((row for row in rows if row.tool == "patchpack"), None)
    if base is None or ours is None:
        return {}
    return {
        "speed": ours.rate / base.rate,
        "speed_without_mask": ours.rate_after_mask / base.rate_after_mask,
        "bytes": ours.bytes / ours.patches / (base.bytes / base.patches),
        "allocated": ours.allocated / ours.patches / (base.allocated / base.patches),
    }


def parse_args() -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny slides: a smoke test")
    parser.add_argument("--json", type=Path, help="also write the measurements to this JSON file")
    parser.add_argument(
        "--peer-python",
        type=Path,
        default=CACHE / "venv-peers" / "bin" / "python",
        help="interpreter with histolab, openslide-python and openslide-bin (default: %(default)s)",
    )
    parser.add_argument(
        "--tia-python",
        type=Path,
        default=CACHE / "venv-tia" / "bin" / "python",
        help="interpreter with tiatoolbox; it needs numpy 2, histolab numpy <= 1.24 (default: %(default)s)",
    )
    parser.add_argument(
        "--vips-python",
        type=Path,
        default=Path(sys.executable),
        help="interpreter with pyvips and pyvips-binary (default: this one, `pip install "
        "patchpack[bench]`)",
    )
    parser.add_argument(
        "--repeats", type=int, help="runs per measurement (default 2, 1 with --quick)"
    )
    parser.add_argument(
        "--sides",
        type=int,
        nargs="+",
        help="slide sides for the memory table, pixels (default 5120 10240 20480)",
    )
    return parser.parse_args()


def chosen_sizes(args: argparse.Namespace) -> Sizes:
    """The run's sizes: ``--quick`` or the full run, with ``--repeats`` and ``--sides`` applied."""
    sizes = QUICK if args.quick else FULL
    if args.repeats is not None:
        if args.repeats < 1:
            raise SystemExit(f"--repeats must be at least 1 (received {args.repeats})")
        sizes = dataclasses.replace(sizes, repeats=args.repeats)
    if args.sides:
        if min(args.sides) < 1536 or len(args.sides) < 2:
            raise SystemExit(
                f"--sides needs two or more sides of at least 1536 (received {args.sides})"
            )
        sizes = dataclasses.replace(sizes, sides=tuple(sorted(args.sides)))
    return sizes


def main() -> None:
    """Measure both tables, print them and, with ``--json``, write the measurements."""
    args = parse_args()
    sizes = chosen_sizes(args)
    # Other processes on the machine slow every tool alike but add noise: say how busy it was.
    with session() as load:
        memory, memory_ratios, rows, compare_ratios = measure(sizes, args)
    if args.json:
        report = {
            "sizes": dataclasses.asdict(sizes),
            "memory": [dataclasses.asdict(row) for row in memory],
            "memory_ratios": memory_ratios,
            "compare": [dataclasses.asdict(row) for row in rows],
            "compare_ratios": compare_ratios,
            "seconds": load.seconds,
            "load_average": [load.start_load, load.end_load],
            "cpu_count": os.cpu_count(),
        }
        write_json(args.json, report)


def measure(
    sizes: Sizes, args: argparse.Namespace
) -> tuple[list[MemoryRow], dict[str, float], list[ToolRow], dict[str, float]]:
    """Both measurements and their tables: the memory rows and ratios, the tool rows and ratios."""
    CACHE.mkdir(exist_ok=True)
    sources = [demo_slide(side) for side in sizes.sides]
    with tempfile.TemporaryDirectory(prefix="bench-slides-", dir=CACHE) as scratch:
        work = Path(scratch)
        memory = [memory_row(s, sizes.memory_patches, work, sizes.repeats) for s in sources]
        corners_file, corners, pixels = drawn_patches(sizes, work)
        rows = compare(sizes, args, work, corners_file)
        floor, floor_rows = against_floor(sizes, work, corners, pixels, rows)
    print(
        f"\n1. peak memory of `patchpack extract`: {sizes.memory_patches} random "
        f"{PATCH_SIZE}x{PATCH_SIZE}x3 tissue patches at level 0 from each demo slide "
        f"(highest of {sizes.repeats} runs)"
    )
    memory_ratios = print_memory(memory)
    print(
        f"\n2. {sizes.compare_patches} random {PATCH_SIZE}x{PATCH_SIZE} tissue patches (at least "
        f"{TISSUE:.0%} tissue) at level 0 of the {sizes.compare_side} x {sizes.compare_side} slide "
        f"(fastest of {sizes.repeats} runs)"
    )
    compare_ratios = print_compare(rows)
    print(
        f"\n3. against the per-core floor of the same {sizes.compare_patches} patches, measured here"
    )
    print_floor(floor, floor_rows)
    compare_ratios.update({f"floor {row.label}": row.fraction for row in floor_rows})
    return memory, memory_ratios, rows, compare_ratios


if __name__ == "__main__":
    main()
