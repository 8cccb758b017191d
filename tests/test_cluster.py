"""Extraction on a Dask cluster: the same bytes as one process, retried workers, refused environments."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from patchpack.dataset.extract import Engine, extract
from patchpack.dataset.sources import catalog
from patchpack.dataset.work import _pixels
from patchpack.errors import ClusterError, SourceError
from patchpack.params import params_from_dict
from support.commands import PATCHPACK, file_digests, run_patchpack
from support.images import make_folder, small_params, small_raw, write_params

distributed = pytest.importorskip("distributed")

TESTS = str(Path(__file__).parent)


@pytest.fixture
def images(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "images", classes=3, per_class=3)


@pytest.fixture
def reference(images: Path, tmp_path: Path) -> dict[str, str]:
    extract(small_params(images), out=tmp_path / "reference", workers=1)
    return file_digests(tmp_path / "reference")


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A LocalCluster of two worker processes that can import the tests' helpers."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]))
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=50,
        ) as local,
        distributed.Client(local) as client,
    ):
        yield local, client


@pytest.mark.slow
@pytest.mark.parametrize("gather", [False, True], ids=["shared-staging", "gather"])
def test_a_local_cluster_builds_the_bytes_of_one_process(
    images: Path, tmp_path: Path, reference: dict[str, str], gather: bool
) -> None:
    engine = Engine(cluster="local:2", gather=gather)
    extract(small_params(images), out=tmp_path / "cluster", engine=engine)
    assert file_digests(tmp_path / "cluster") == reference


def slow_shards(delay: float) -> None:
    """Run in a worker: make each shard take ``delay`` seconds longer, so a kill lands mid-run."""
    from patchpack.dataset import work

    original = work.build_shard

    def slow(job: Any) -> Any:
        time.sleep(delay)
        return original(job)

    work.build_shard = slow  # type: ignore[assignment]


@pytest.mark.slow
def test_a_worker_killed_mid_run_is_retried_with_the_same_bytes(
    images: Path, tmp_path: Path, reference: dict[str, str], cluster: Any
) -> None:
    local, client = cluster
    client.run(slow_shards, 0.3)
    pids = client.run(os.getpid)
    params = small_params(images, shards={"target_patches": 8})
    raised: list[BaseException] = []

    def run() -> None:
        try:
            extract(params, out=tmp_path / "out", engine=Engine(scheduler=local.scheduler_address))
        except BaseException as exc:  # reported below
            raised.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(tmp_path.glob(".out.partial-*/*/shard-*.h5")):
        time.sleep(0.05)
    os.kill(next(iter(pids.values())), 9)  # a worker dies while tasks are still running
    thread.join(timeout=180)
    assert not raised, raised
    small = small_params(images, shards={"target_patches": 8})
    extract(small, out=tmp_path / "one", workers=1)
    assert file_digests(tmp_path / "out") == file_digests(tmp_path / "one")


def other_numpy() -> None:
    """Run in a worker: report another numpy version in the environment envelope."""
    from patchpack.dataset import envelope

    original = envelope.current_environment

    def claimed() -> dict[str, str]:
        return {**original(), "numpy": "1.0.0"}

    envelope.current_environment = claimed  # type: ignore[assignment]


@pytest.mark.slow
def test_a_worker_in_another_environment_is_refused_before_any_shard(
    images: Path, tmp_path: Path, cluster: Any
) -> None:
    local, client = cluster
    client.run(other_numpy)
    engine = Engine(scheduler=local.scheduler_address)
    with pytest.raises(
        ClusterError, match=r"worker tcp://.* has numpy 1.0.0, this machine .*--accept-env"
    ):
        extract(small_params(images), out=tmp_path / "out", engine=engine)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))
    accepted = dataclasses.replace(engine, accept_env=True)
    extract(small_params(images), out=tmp_path / "out", engine=accepted)
    assert (tmp_path / "out" / "manifest.json").is_file()


def test_a_stale_copy_of_a_source_fails_loudly(images: Path) -> None:
    _, sources = catalog(images, max_megapixels=100)
    stale = dataclasses.replace(sources[0], sha256="0" * 64)
    with pytest.raises(SourceError, match=r"its bytes differ from those the catalog hashed"):
        _pixels(stale, 1, 100)


def test_an_unreachable_scheduler_is_one_line(images: Path, tmp_path: Path) -> None:
    write_params(tmp_path / "params.yaml", images)
    done = run_patchpack("extract", "--scheduler", "tcp://127.0.0.1:9", cwd=tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in lines[0]


@pytest.mark.parametrize("value", ["local", "local:0", "slurm:4", "4"])
def test_a_bad_cluster_spec_is_one_line(images: Path, tmp_path: Path, value: str) -> None:
    write_params(tmp_path / "params.yaml", images)
    done = run_patchpack("extract", "--cluster", value, cwd=tmp_path)
    assert done.returncode == 2 and "expected local:N" in done.stderr


@pytest.mark.slow
def test_workers_with_several_threads_give_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's threads each keep their own decoded images and readers (a reader is not
    thread-safe); tiled slides make every task read windows."""
    from support.slides import tissue_image, write_pyramid

    for k in range(4):
        write_pyramid(tmp_path / "slides" / f"c{k % 2}" / f"s{k}.tif", tissue_image(384, 384, k))
    raw = params_from_dict(
        {
            **small_raw(tmp_path / "slides", extract={"min_std": 1.0, "per_image": 60}),
            "source": {"dir": str(tmp_path / "slides"), "channels": 3},
            "shards": {"target_patches": 8, "chunk_patches": 8},
        }
    )
    extract(raw, out=tmp_path / "serial", workers=1)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]))
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=4, processes=True, dashboard_address=None, silence_logs=50
    ) as local:
        extract(raw, out=tmp_path / "threads", engine=Engine(scheduler=local.scheduler_address))
    assert file_digests(tmp_path / "threads") == file_digests(tmp_path / "serial")


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _dask(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A Dask scheduler or worker in a process of its own (``python -m distributed.cli...``)."""
    return subprocess.Popen(
        [sys.executable, "-m", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _wait_for_workers(address: str, count: int, deadline: float) -> None:
    with distributed.Client(address, timeout="20s") as client:
        client.wait_for_workers(count, timeout=max(1.0, deadline - time.monotonic()))
        client.run(slow_shards, 0.4)


@pytest.mark.slow
def test_a_scheduler_that_goes_away_is_one_line_and_the_dataset_stays(
    images: Path, tmp_path: Path
) -> None:
    """The scheduler is killed mid-run: exit 2, one line, and the previous dataset intact."""
    write_params(tmp_path / "params.yaml", images, shards={"target_patches": 8})
    first = run_patchpack("extract", "--out", "out", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = file_digests(tmp_path / "out")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])}
    address = f"tcp://127.0.0.1:{_free_port()}"
    port = address.rsplit(":", 1)[1]
    scheduler = _dask("distributed.cli.dask_scheduler", "--port", port, "--no-dashboard", env=env)
    worker = _dask(
        "distributed.cli.dask_worker", address, "--nthreads", "1", "--no-dashboard", env=env
    )
    try:
        _wait_for_workers(address, 1, time.monotonic() + 60)
        run = subprocess.Popen(
            [*PATCHPACK, "extract", "--out", "out", "--scheduler", address],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(
            tmp_path.glob(".out.partial-*/*/shard-*.h5")
        ):
            time.sleep(0.05)
        scheduler.kill()  # the scheduler goes away while shards are still being built
        _, stderr = run.communicate(timeout=120)
    finally:
        for process in (scheduler, worker):
            process.kill()
            process.wait()
    lines = stderr.strip().splitlines()
    assert run.returncode == 2, stderr
    assert len(lines) == 1 and "the Dask cluster failed during the run" in lines[0], stderr
    assert "the previous dataset is intact" in lines[0]
    assert file_digests(tmp_path / "out") == before


def test_a_pool_of_two_is_this_process_and_one_worker_taking_tasks_in_turn() -> None:
    """``--workers 2`` runs tasks here and in one spawned worker, from one queue: both take tasks,
    and the results come back in the order of the tasks whichever finished first."""
    from patchpack.engine.executors import ProcessPool
    from support.tasks import pid_after

    pool = ProcessPool(2)
    try:
        items = [(number, 0.05 * (number % 3)) for number in range(12)]
        done = list(pool.map(pid_after, items))
    finally:
        pool.close()
    assert [number for number, _ in done] == list(range(12))
    pids = {pid for _, pid in done}
    assert len(pids) == 2 and os.getpid() in pids


def test_a_failed_task_raises_in_order_and_the_pool_closes() -> None:
    from patchpack.engine.executors import ProcessPool
    from support.tasks import fails_at

    pool = ProcessPool(5)  # four workers take items 0 to 3 first: item 3 fails in a worker
    results = []
    try:
        with pytest.raises(ValueError, match=r"item 3 is bad \(process \d+\)") as raised:
            for result in pool.map(fails_at, list(range(8))):
                results.append(result)
    finally:
        pool.close()
    assert results == [0, 1, 2]
    assert f"(process {os.getpid()})" not in str(raised.value)  # raised here from the worker's


def test_closing_the_pool_while_a_worker_finishes_a_task_raises_nothing(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A worker that finishes while the pool is being closed (after an error, a Ctrl-C) is handed
    no next task: its callback would meet a pool no longer running, end the pool's result thread
    with a traceback and make the close raise in place of the run's own error. The window is
    widened here (the pool's shutdown waits a second before stopping its result thread)."""
    import multiprocessing.pool

    from patchpack.engine.executors import ProcessPool

    finish = multiprocessing.pool.Pool._help_stuff_finish

    def slowly(*args: Any) -> None:
        time.sleep(1.0)
        finish(*args)

    monkeypatch.setattr(multiprocessing.pool.Pool, "_help_stuff_finish", staticmethod(slowly))
    pool = ProcessPool(2)
    results = pool.map(time.sleep, [0.4] * 6)
    assert next(results) is None  # the worker is now on a later task, more are pending
    pool.close()
    assert "Traceback" not in capfd.readouterr().err
