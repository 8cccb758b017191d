"""What every benchmark shares: the clock, fresh processes, interleaved runs, the load, tables, JSON.

* :func:`timed` is the one clock (``time.perf_counter``) for work done in this process;
  :func:`run_fresh` runs a command in a fresh process and reports its wall time and the peak
  resident memory of that one child; :func:`patchpack` is ``python -m patchpack.cli`` through it.
  Children run with Python's default bytecode cache (:func:`child_env`), as an installed patchpack
  does, even where the benchmark's own environment sets ``PYTHONDONTWRITEBYTECODE``.
* :func:`interleaved` runs several workloads in turns (A, B, C, A, B, C, ...), so that a change in
  the machine's load during the run reaches every workload alike.
* :func:`session` prints the load average (:func:`load_average`) at the start and the end of a
  benchmark: the development machines are shared, and a busy one slows every tool but adds noise;
  :func:`benchmark` runs a benchmark's body in one and writes its figures for ``--json``.
* :func:`folder_bytes`, :func:`table`, :func:`ratio` and :func:`write_json` measure a dataset on disk
  and report the figures.

Only the standard library is imported at the top, so this module loads before patchpack is importable
(``bench_labels.py`` puts ``src`` on the path first); :func:`write_json` imports patchpack when called.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

T = TypeVar("T")


def timed(func: Callable[[], T]) -> tuple[T, float]:
    """Call ``func()``; return what it returned and the seconds it took (``time.perf_counter``)."""
    start = time.perf_counter()
    result = func()
    return result, time.perf_counter() - start


def child_env(*, bytecode_cache: bool = True) -> dict[str, str]:
    """This process's environment for a child, with or without Python's bytecode cache.

    By default Python compiles a module once and reuses the ``.pyc`` it writes; pip compiles an
    installed package at install time. An environment that sets ``PYTHONDONTWRITEBYTECODE`` (this
    project's development machines do) makes every fresh process compile patchpack's modules again,
    about 0.3 s here: not what a user's process pays, so children drop it unless asked to keep it.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if not bytecode_cache:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@dataclasses.dataclass(frozen=True)
class Run:
    """A finished child process: its wall time, peak resident memory, exit status and output."""

    seconds: float  # wall clock, interpreter start-up included
    # ru_maxrss of this child: the highest of its own and of the children it waited for
    peak_rss_bytes: int
    returncode: int
    stdout: str
    stderr: str


def run_fresh(
    command: Sequence[str],
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    *,
    check: bool = True,
) -> Run:
    """Run ``command`` in a fresh process; return its wall time, peak RSS, status and output.

    ``os.wait4`` gives the resource usage of this one child, where ``RUSAGE_CHILDREN`` would give
    the largest peak of every child so far. The output goes to temporary files, not pipes, so a
    child that writes a lot never blocks while this process waits for it.

    Parameters
    ----------
    command : sequence of str
        The program and its arguments.
    cwd : Path, optional
        The child's working folder (default: this process's).
    env : mapping, optional
        The child's environment (default: :func:`child_env`, this process's with the bytecode cache).
    check : bool, default True
        Raise when the command exits with a non-zero status.

    Returns
    -------
    Run

    Raises
    ------
    RuntimeError
        With ``check``, when the command fails; the message holds the last lines of its output.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(
            list(command), stdout=out, stderr=err, cwd=cwd, env=child_env() if env is None else env
        )
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        process.returncode = returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if check and returncode:
        tail = "\n".join([*stdout.strip().splitlines()[-10:], *stderr.strip().splitlines()[-10:]])
        where = cwd or Path.cwd()
        raise RuntimeError(f"{' '.join(command)} exited {returncode} in {where}:\n{tail}")
    return Run(seconds, usage.ru_maxrss * 1024, returncode, stdout, stderr)


def patchpack(*args: str, cwd: Path, env: Mapping[str, str] | None = None) -> Run:
    """``python -m patchpack.cli ARGS`` with this interpreter, in a fresh process (see :func:`run_fresh`)."""
    return run_fresh([sys.executable, "-m", "patchpack.cli", *args], cwd, env)


def interleaved(workloads: Mapping[str, Callable[[], T]], repeats: int) -> dict[str, list[T]]:
    """Run the workloads in turns, ``repeats`` rounds of A, B, C; return each one's results in order.

    Each workload returns its own figure (``run_fresh(...).seconds``, ``timed(f)[1]``, a speed),
    so what it clears before a run stays off the clock; the caller keeps the fastest (``min``) or
    the best (``max``) of each list.
    """
    results: dict[str, list[T]] = {name: [] for name in workloads}
    for _ in range(repeats):
        for name, func in workloads.items():
            results[name].append(func())
    return results


def load_average() -> str:
    """The 1, 5 and 15 minute load averages and the core count, as one phrase."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} (1, 5, 15 min) on {os.cpu_count()} cores"


@dataclasses.dataclass
class Session:
    """A benchmark's 1-minute load average at its start and its end, and its wall time in seconds."""

    start_load: float
    end_load: float = math.nan
    seconds: float = math.nan


@contextlib.contextmanager
def session() -> Iterator[Session]:
    """Print the load average before the block and, with the block's wall time, after it."""
    print(f"{load_average()}, at the start", flush=True)
    noted = Session(os.getloadavg()[0])
    start = time.perf_counter()
    try:
        yield noted
    finally:
        noted.seconds = time.perf_counter() - start
        noted.end_load = os.getloadavg()[0]
        print(f"\nbenchmark took {noted.seconds:.0f} s; {load_average()}, at the end", flush=True)


def benchmark(body: Callable[[], T], json_path: Path | None = None) -> T:
    """Run a benchmark's body in a :func:`session`; write the figures it returns to ``json_path``."""
    with session():
        figures = body()
    if json_path is not None:
        write_json(json_path, figures)
    return figures


class Folder(NamedTuple):
    """What the files under a folder hold: their count, their bytes and the bytes allocated."""

    files: int
    bytes: int  # sum of the file sizes
    allocated: int  # what the file system allocates for them (st_blocks * 512)


def folder_bytes(folder: Path) -> Folder:
    """Count and size every file under ``folder``."""
    stats = [path.stat() for path in folder.rglob("*") if path.is_file()]
    return Folder(len(stats), sum(s.st_size for s in stats), sum(s.st_blocks * 512 for s in stats))


def ratio(value: float, base: float | None, digits: int = 2) -> str:
    """``value / base`` as ``4.70x`` (``digits`` decimals), or ``-`` when there is no base."""
    return f"{value / base:.{digits}f}x" if base else "-"


def table(rows: Sequence[Sequence[object]], headers: Sequence[str], *, left: int = 1) -> str:
    """Rows of cells under their headers, in columns: the first ``left`` flush left, the rest right.

    Cells are printed with ``str``: format numbers before (``f"{rate:,.1f}"``, :func:`ratio`).
    """
    lines = [list(map(str, headers)), *(list(map(str, row)) for row in rows)]
    widths = [max(len(line[column]) for line in lines) for column in range(len(headers))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if column < left else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    )


def write_json(path: Path, figures: Any) -> None:
    """Write a benchmark's figures for ``--json``: patchpack's canonical JSON, written atomically."""
    from patchpack.dataset.io import write_json_atomic

    write_json_atomic(Path(path), figures)
