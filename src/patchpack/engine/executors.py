"""Where shard tasks run: in this process, in a local process pool, or on a Dask cluster.

The plan fixes every shard's full content before any work starts, so an executor only runs
independent tasks and hands their results back in submission order; nothing it does can change a
byte. One small interface, three implementations:

* :class:`Serial`: this process (``--workers 1``);
* :class:`ProcessPool`: ``--workers N``: this process and N - 1 spawned ones, started at once so
  their imports overlap with the planning, taking tasks from one queue. Ctrl-C is this process's
  to handle: the workers ignore SIGINT from their very start (they are spawned with it blocked,
  then ignore it), so a Ctrl-C on the terminal, which signals the whole process group, reaches
  them as nothing; this process unwinds and terminates them, and no worker prints a traceback;
* :class:`DaskExecutor`: ``--cluster local:N`` (a ``distributed.LocalCluster`` of N worker processes)
  or ``--scheduler ADDRESS`` (a running scheduler: SSH, SLURM through dask-jobqueue ...), through
  ``Client.get_executor()``. Before any task runs, every worker reports the environment envelope the
  manifest records, and a worker whose envelope differs from this machine's is refused (unless the
  difference is explicitly accepted); a task lost with a worker is retried, which is safe because a
  task's output depends on its inputs only. Dask's own version-mismatch warning (a table of
  package versions printed when a client connects) is turned off: the envelope check says what
  differs in one line, and what it accepts.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import signal
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, Protocol, TypeVar, cast

from patchpack.engine.output import ignore_file_size_signal
from patchpack.errors import ClusterError, PatchpackError

T = TypeVar("T")
R = TypeVar("R")
RETRIES = 3


class Executor(Protocol):
    """Runs ``function`` over ``items``; results come back in the order of ``items``."""

    def map(self, function: Callable[[T], R], items: list[T]) -> Iterator[R]: ...

    def close(self) -> None: ...


class Serial:
    """Every task in this process, in order."""

    def map(self, function: Callable[[T], R], items: list[T]) -> Iterator[R]:
        return map(function, items)

    def close(self) -> None:
        """Nothing to release."""


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Hold back SIGINT in this thread; processes started meanwhile inherit the blocked mask, so a
    Ctrl-C cannot reach a worker before its initializer ignores it. A Ctrl-C that came meanwhile
    is delivered here when the block ends, not lost."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no signal masks
        yield
        return
    from multiprocessing import resource_tracker

    # started on first need, the tracker unblocks SIGINT once it runs (bpo-33613): start it first
    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _start_worker() -> None:
    """In each pool worker, first: Ctrl-C is the parent's to handle (it terminates the workers),
    and a file size limit fails a write instead of killing the worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):  # ignored now: a pending one is discarded
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    ignore_file_size_signal()


class ProcessPool:
    """``workers`` processes at work: this one and ``workers - 1`` spawned ones, started when the
    pool is made (so their imports overlap with the planning), all taking tasks from one queue.

    This process would otherwise only wait for the workers' results; taking tasks itself it needs
    one spawned interpreter fewer (whose imports, on a small machine, compete with the planning),
    and it has every module loaded already. A worker that finishes a task is handed the next one
    at once (from the pool's result thread), so none waits while this process runs a task.
    """

    def __init__(self, workers: int) -> None:
        import multiprocessing  # 7 ms to import: only where workers are spawned

        # spawn, not fork: forked children would inherit HDF5's library state from the parent
        context = multiprocessing.get_context("spawn")
        self._children = max(1, workers - 1)
        with _sigint_blocked():  # the pool's threads, and the workers they replace, inherit it
            self._pool = context.Pool(self._children, initializer=_start_worker)
        self._queues: list[_SharedQueue[Any, Any]] = []

    def map(self, function: Callable[[T], R], items: list[T]) -> Iterator[R]:
        if len(items) == 1:  # nothing to share out: sending it to a worker only adds the transfer
            return map(function, items)
        return self._shared(function, items)

    def _shared(self, function: Callable[[T], R], items: list[T]) -> Iterator[R]:
        """Every item through ``function``, here or in a worker; results in the order of items."""
        queue = _SharedQueue(self._pool, function, items, self._children)
        self._queues.append(queue)
        for index in range(len(items)):
            yield queue.result(index)

    def close(self) -> None:
        for queue in self._queues:  # no task handed out while the pool goes down
            queue.stop()
        self._pool.terminate()
        self._pool.join()


class _SharedQueue(Generic[T, R]):
    """The tasks of one :meth:`ProcessPool.map`: the pool's workers and this process take them in
    order; a worker is handed the next task from the pool's result thread as it finishes one."""

    def __init__(self, pool: Any, function: Callable[[T], R], items: list[T], children: int):
        self._pool, self._function, self._items = pool, function, items
        self._lock = threading.Condition()
        self._pending = collections.deque(range(len(items)))
        self._finished: dict[int, tuple[bool, Any]] = {}  # index -> (succeeded, result or error)
        self._stopped = False
        with self._lock:
            for _ in range(children):
                self._submit()

    def stop(self) -> None:
        """Hand out no more tasks: the pool is being closed."""
        with self._lock:
            self._stopped = True

    def _submit(self) -> None:
        """The next task to a worker (with the lock held). Never raises: it runs in the pool's
        result thread too, which a callback's exception would end (and the pool's close with it)."""
        if self._pending and not self._stopped:
            index = self._pending[0]
            try:
                self._pool.apply_async(
                    self._function,
                    (self._items[index],),
                    callback=functools.partial(self._settle, index, True),
                    error_callback=functools.partial(self._settle, index, False),
                )
            except ValueError:  # the pool is no longer running: it is being closed
                self._stopped = True
                return
            self._pending.popleft()

    def _settle(self, index: int, succeeded: bool, outcome: Any) -> None:
        """A worker's task is done (in the pool's result thread): keep it, hand out the next."""
        with self._lock:
            self._finished[index] = (succeeded, outcome)
            self._submit()
            self._lock.notify_all()

    def result(self, index: int) -> R:
        """Task ``index``'s result (its exception raised), running other tasks here meanwhile."""
        while True:
            with self._lock:
                if index in self._finished:
                    succeeded, outcome = self._finished.pop(index)
                    if not succeeded:
                        raise outcome
                    return cast(R, outcome)
                if not self._pending:
                    self._lock.wait()
                    continue
                mine = self._pending.popleft()
            try:
                done: tuple[bool, Any] = (True, self._function(self._items[mine]))
            except Exception as exc:  # raised in its turn, as a worker's would be
                done = (False, exc)
            with self._lock:
                self._finished[mine] = done


class DaskExecutor:
    """Tasks on a Dask cluster; refuses workers whose environment differs from this machine's."""

    def __init__(self, client: Any, cluster: Any = None) -> None:
        self.client = client
        self._cluster = cluster
        self._executor = client.get_executor(retries=RETRIES, pure=False)

    def map(self, function: Callable[[T], R], items: list[T]) -> Iterator[R]:
        try:
            yield from self._executor.map(function, items)
        except PatchpackError:
            raise  # bad input found by a worker: its own one-line message
        except Exception as exc:  # the scheduler went away, a worker died too often (KilledWorker)
            first = (str(exc).strip().splitlines() or [""])[0]
            raise ClusterError(
                f"the Dask cluster failed during the run ({type(exc).__name__}: {first}); the "
                f"previous dataset is intact: check the workers' logs and memory, and rerun"
            ) from exc

    def check_environment(
        self,
        local: Mapping[str, str],
        *,
        accept: bool,
        report: Callable[[], Mapping[str, str]],
    ) -> list[str]:
        """Compare every worker's environment envelope (what ``report`` returns there: extract
        passes the manifest's, see :func:`~patchpack.dataset.envelope.current_environment`) with
        ``local``.

        Returns the differences as notes when ``accept``; otherwise raises :class:`ClusterError` on
        the first one, naming the worker and the package.
        """
        try:
            reports = self.client.run(report)
        except Exception as exc:
            raise ClusterError(
                f"the Dask workers did not report their environment ({type(exc).__name__}: {exc}); "
                f"check that patchpack is installed on every worker"
            ) from exc
        if not reports:
            raise ClusterError("the Dask cluster has no workers; start some and rerun")
        notes = []
        for worker in sorted(reports):
            for package in sorted(set(local) | set(reports[worker])):
                theirs, ours = reports[worker].get(package), local.get(package)
                if theirs == ours:
                    continue
                line = f"worker {worker} has {package} {theirs}, this machine {ours}"
                if not accept:
                    raise ClusterError(
                        f"{line}: install the same versions on every node (pip install -c "
                        f"constraints.txt), or pass --accept-env to accept workers whose pixels "
                        f"may be stored in other bytes"
                    )
                notes.append(line)
        return notes

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


def parse_cluster(text: str) -> int:
    """``local:N`` -> N (the number of worker processes of a LocalCluster)."""
    kind, _, count = text.partition(":")
    if kind != "local" or not count.isdigit() or int(count) < 1:
        raise ClusterError(
            f"--cluster {text!r}: expected local:N with N worker processes (e.g. local:4); for "
            f"other clusters start a Dask scheduler and pass --scheduler ADDRESS"
        )
    return int(count)


def open_executor(
    *, workers: int = 1, cluster: str | None = None, scheduler: str | None = None
) -> Executor | DaskExecutor:
    """The executor the command line asked for (a local pool by default)."""
    if cluster is not None and scheduler is not None:
        raise ClusterError("pass --cluster or --scheduler, not both")
    if cluster is not None:
        return _local_cluster(parse_cluster(cluster))
    if scheduler is not None:
        return _connect(scheduler)
    return ProcessPool(workers) if workers > 1 else Serial()


def _local_cluster(workers: int) -> DaskExecutor:
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=50,
    )
    with _without_version_table():
        client = Client(cluster)
    return DaskExecutor(client, cluster)


@contextlib.contextmanager
def _without_version_table() -> Iterator[None]:
    """No ``VersionMismatchWarning`` while a client connects: Dask prints it as a table of
    versions on stderr, and :meth:`DaskExecutor.check_environment` reports what differs in one
    line. (The filters are the process's, so the client's event-loop thread obeys them too.)"""
    from distributed.versions import VersionMismatchWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VersionMismatchWarning)
        yield


def _connect(address: str) -> DaskExecutor:
    from distributed import Client

    try:
        with _without_version_table():
            client = Client(address, timeout="5s")
    except (OSError, TimeoutError) as exc:
        raise ClusterError(
            f"cannot reach the Dask scheduler at {address} ({type(exc).__name__}); check the "
            f"address and that `dask scheduler` runs there"
        ) from exc
    return DaskExecutor(client)


def ordered(results: Iterable[tuple[int, R]]) -> list[R]:
    """Results tagged with their position, in position order."""
    return [value for _, value in sorted(results, key=lambda pair: pair[0])]
