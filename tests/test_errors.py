"""Failures a user can cause end in one line on stderr and a known exit code, never a traceback.

Each test runs the real command line in a new process where the behaviour is the command line's:
exit 2 for bad input, 130 after Ctrl-C, 141 when the reader of standard output goes away; nothing
half-written at a final path.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from patchpack.dataset.fetch import list_files
from patchpack.errors import ConfigError, SourceError
from patchpack.params import load_params
from support.commands import PATCHPACK, file_digests, run_patchpack
from support.images import make_folder, write_params
from support.s3server import aws_env, moto_server

TESTS = Path(__file__).parent
BUCKET = "patchpack-errors"


def one_line(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The one line ``result`` printed on stderr, after checking its exit code."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# ------------------------------------------------------------------------------------------------
# params files


def test_a_params_block_written_twice_is_refused_naming_the_key_and_line(tmp_path: Path) -> None:
    make_folder(tmp_path / "images", classes=2, per_class=1)
    params = write_params(tmp_path / "params.yaml", tmp_path / "images")
    first = 1 + params.read_text().splitlines().index("extract:")
    second = 1 + len(params.read_text().splitlines())
    with params.open("a", encoding="utf-8") as handle:
        handle.write("extract:\n  patch_size: 8\n")  # would silently replace the first block
    line = one_line(run_patchpack("extract", "--out", "out", cwd=tmp_path))
    assert line == (
        f"patchpack extract: error: params.yaml:{second}: key 'extract' appears twice (first on "
        f"line {first}); merge the two blocks"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "base:\n  seed: 1\n  seed: 2\n",
            r"params.yaml:3: key 'base.seed' appears twice .*keep one",
        ),
        ("split:\n  fractions: {train: 1, train: 0}\n", r":2: key 'split.fractions.train' appears"),
        ("extract:\n  targets: [{a: 1, a: 2}]\n", r":2: key 'extract.targets\[0\].a' appears"),
        ("base: {seed: 1}\nbase: {seed: 2}\n", r"params.yaml:2: key 'base' appears twice"),
    ],
)
def test_a_key_written_twice_at_any_level_is_refused(
    tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "params.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_params(tmp_path / "params.yaml")


def test_a_merge_key_may_still_be_overridden(tmp_path: Path) -> None:
    """``<<`` (without an alias) merges keys that the mapping itself may override: not a duplicate."""
    (tmp_path / "params.yaml").write_text("base:\n  <<: {seed: 1}\n  seed: 5\n", encoding="utf-8")
    assert load_params(tmp_path / "params.yaml").seed == 5


# ------------------------------------------------------------------------------------------------
# sources at a URL


@pytest.fixture
def bucket(tmp_path: Path) -> tuple[str, dict[str, str]]:
    """Two classes of two images under s3://patchpack-errors/<test>/images; the URL and the
    environment a patchpack process needs to reach it (its own cache under ``tmp_path``)."""
    server = moto_server()
    client = server.client()
    if BUCKET not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        server.create_bucket(BUCKET)
    images = make_folder(tmp_path / "images", classes=2, per_class=2)
    for path in sorted(images.rglob("*.png")):
        key = f"{tmp_path.name}/images/{path.relative_to(images).as_posix()}"
        client.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())
    env = {
        **aws_env(tmp_path / "home"),
        "AWS_ENDPOINT_URL_S3": server.endpoint,
        "PATCHPACK_CACHE": str(tmp_path / "cache"),
    }
    return f"s3://{BUCKET}/{tmp_path.name}/images", env


def put(url: str, name: str, body: bytes = b"\x89PNG") -> None:
    key = f"{url.split('/', 3)[3]}/{name}"
    moto_server().client().put_object(Bucket=BUCKET, Key=key, Body=body)


def without_dac_override() -> list[str]:
    """A command prefix under which file permissions hold: as root, a process without the
    capabilities that bypass them (``setpriv``); as anyone else, none is needed."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a read-only folder would still be writable")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]


def test_a_read_only_cache_is_one_line_naming_the_folder(
    tmp_path: Path, bucket: tuple[str, dict[str, str]]
) -> None:
    url, env = bucket
    write_params(tmp_path / "params.yaml", url)  # a URL, as source.dir
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o555)
    try:
        result = subprocess.run(
            [*without_dac_override(), *PATCHPACK, "extract", "--out", "out"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env={**os.environ, **env},
        )
    finally:
        cache.chmod(0o755)
    line = one_line(result)
    assert line.startswith(
        f"patchpack extract: error: {cache}: cannot write to the cache of fetched sources "
        f"(Permission denied), so {url}/class_0/img_0.png cannot be fetched"
    ), line
    assert line.endswith("or set PATCHPACK_CACHE to a writable folder")
    assert not (tmp_path / "out").exists() and not list(cache.iterdir())


def test_two_keys_that_would_be_one_source_are_one_line_naming_both(
    tmp_path: Path, bucket: tuple[str, dict[str, str]]
) -> None:
    url, env = bucket
    write_params(tmp_path / "params.yaml", url)  # a URL, as source.dir
    put(url, "class_0/./img_0.png")  # a mirrored path drops the '.': the same file as img_0.png
    result = subprocess.run(
        [*PATCHPACK, "extract", "--out", "out"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    assert one_line(result) == (
        f"patchpack extract: error: {url}/class_0/./img_0.png and {url}/class_0/img_0.png would "
        f"both be the source 'class_0/img_0.png' (ids drop '.' and empty path components and "
        f"are Unicode NFC); rename or remove one of them"
    )
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    ("names", "first", "second"),
    [
        (
            ["class_0/caf\u00e9.png", "class_0/cafe\u0301.png"],
            "class_0/cafe\\u0301.png",
            "class_0/caf\\xe9.png",
        ),
        (["/class_0/img_0.png"], "/class_0/img_0.png", "class_0/img_0.png"),
    ],
    ids=["nfc-and-nfd", "empty-component"],
)
def test_keys_equal_once_normalised_are_refused_naming_both(
    bucket: tuple[str, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    names: list[str],
    first: str,
    second: str,
) -> None:
    """Two spellings of one name (shown escaped when they differ in Unicode form only)."""
    url, env = bucket
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in names:
        put(url, name)
    with pytest.raises(SourceError) as raised:
        list_files(url)
    assert str(raised.value).startswith(
        f"{url}/{first} and {url}/{second} would both be the source "
    ), raised.value


@pytest.mark.parametrize("name", ["class_0/./img_9.png", "/class_0/img_9.png"])
def test_a_key_whose_id_would_drop_a_component_is_refused(
    bucket: tuple[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Its source's URL is rebuilt from the id, which would name another object (or none)."""
    url, env = bucket
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    put(url, name)
    with pytest.raises(SourceError, match=rf"^{url}/{name}: not a usable file name"):
        list_files(url)


# ------------------------------------------------------------------------------------------------
# Ctrl-C, closed pipes


def staged_shard(project: Path) -> bool:
    return any(project.glob("data/.patches.partial-*/*/*.h5"))


def sigint_held_back(pid: int) -> bool:
    """Whether the Linux process ``pid`` ignores or blocks SIGINT (a Ctrl-C cannot interrupt it)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # it has exited meanwhile: nothing left to interrupt
        return True
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    bit = 1 << (signal.SIGINT - 1)
    return bool((int(fields["SigIgn"], 16) | int(fields["SigBlk"], 16)) & bit)


def children(pid: int) -> list[int]:
    """The Linux processes whose parent is ``pid`` (the pool's workers, its resource tracker)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone meanwhile
            continue
        if int(text.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def group_gone(pid: int, timeout: float) -> bool:
    """Whether every process of the process group ``pid`` has exited within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_ctrl_c_with_workers_is_one_line_exit_130_and_the_dataset_stays(tmp_path: Path) -> None:
    images = make_folder(tmp_path / "images", classes=2, per_class=4, size=(512, 512))
    write_params(tmp_path / "params.yaml", images)
    previous = run_patchpack("extract", cwd=tmp_path)  # a small dataset at data/patches
    assert previous.returncode == 0, previous.stderr
    before = file_digests(tmp_path / "data" / "patches")
    # a few seconds of work for two workers: 64,000 patches compressed at zstd's slow level
    heavy = {"per_image": 8000, "patch_size": 32}
    write_params(
        tmp_path / "params.yaml",
        images,
        extract=heavy,
        split={"block_size": 64},
        shards={"target_patches": 1000, "level": 19},
    )
    process = subprocess.Popen(
        [*PATCHPACK, "extract", "--workers", "2"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, which Ctrl-C signals as a whole
    )
    try:
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline and not staged_shard(tmp_path):
            time.sleep(0.01)
        assert process.poll() is None, "the run ended before a Ctrl-C could interrupt it"
        if sys.platform.startswith("linux"):  # the workers leave Ctrl-C to the parent
            workers = children(process.pid)
            assert len(workers) >= 2 and all(map(sigint_held_back, workers)), workers
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    result = subprocess.CompletedProcess(process.args, process.returncode, "", stderr)
    assert one_line(result, code=130) == (
        "patchpack extract: interrupted; the previous dataset at data/patches is intact"
    )
    gone = group_gone(process.pid, timeout=10)
    if not gone:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert gone, "a worker outlived the interrupted run"
    assert file_digests(tmp_path / "data" / "patches") == before


def test_a_closed_stdout_ends_quietly_with_141(tmp_path: Path) -> None:
    """``patchpack info | head -1``: the reader has gone, so the output goes nowhere, silently."""
    make_folder(tmp_path / "images", classes=2, per_class=1)
    write_params(tmp_path / "params.yaml", tmp_path / "images")
    assert run_patchpack("extract", cwd=tmp_path).returncode == 0
    base = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    for buffering in ({}, {"PYTHONUNBUFFERED": "1"}):  # fails at the flush, or at the print
        process = subprocess.Popen(
            [*PATCHPACK, "info"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**base, **buffering},
        )
        assert process.stdout is not None
        process.stdout.close()  # before the command writes anything: every write fails
        _, stderr = process.communicate(timeout=60)
        assert (process.returncode, stderr) == (141, ""), (buffering, process.returncode, stderr)


# ------------------------------------------------------------------------------------------------
# Dask


def test_a_worker_in_another_environment_prints_only_patchpacks_line(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    make_folder(tmp_path / "images", classes=2, per_class=1)
    write_params(tmp_path / "params.yaml", tmp_path / "images")
    env = {
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "DASK_DISTRIBUTED__WORKER__PRELOAD": '["support.other_numpy"]',
    }
    line = one_line(
        run_patchpack("extract", "--cluster", "local:1", "--out", "out", cwd=tmp_path, env=env)
    )
    assert line.startswith("patchpack extract: error: worker tcp://"), line
    assert "has numpy 1.0.0, this machine" in line and "--accept-env" in line
    assert not (tmp_path / "out").exists()


def test_the_preload_reaches_dask_itself() -> None:
    """The Dask test above means something only if Dask would print its table for this worker."""
    pytest.importorskip("distributed")
    code = (
        "import support.other_numpy, distributed.versions as v; "
        "print(v.get_versions()['packages']['numpy'])"
    )
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert found.stdout.strip() == "1.0.0", found.stderr
