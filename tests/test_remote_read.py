"""Reading a dataset straight from its DVC remote, without a pull (``open_dataset(..., remote=...)``,
``patchpack info / verify / preview --remote``).

Real components: a git + DVC project extracted with ``dvc repro``, pushed to moto's S3 on loopback
(behind :class:`CountingProxy` where bytes are counted), partners that clone it and pull nothing.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest

import patchpack
from patchpack.errors import ConfigError, IntegrityError, RemoteError
from support.commands import file_digests
from support.s3server import CountingProxy, free_port, isolate_aws, moto_server, subprocess_env
from test_sharing import clone, commit, copy_bucket, make_project, object_key, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server():
    return moto_server()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return subprocess_env(tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def owner(tmp_path_factory, server, env):
    """Extracted (many small shards), pushed to S3, committed and tagged v1."""
    root = make_project(
        tmp_path_factory.mktemp("owner") / "R", env, per_class=3, per_image=24, target_patches=12
    )
    run(["dvc", "repro", "extract"], root, env)
    bucket = f"pp-read-{uuid.uuid4().hex[:10]}"
    run(
        [
            *("patchpack", "remote", "s3", f"s3://{bucket}/patches"),
            *("--endpoint-url", server.endpoint, "--create-bucket"),
        ],
        root,
        env,
    )
    run(["dvc", "push"], root, env)
    commit(root, env, "dataset v1")
    run(["git", "tag", "v1"], root, env)
    return root, bucket


@pytest.fixture
def partner(owner, env, tmp_path, monkeypatch):
    """A clone of the owner's project that pulled nothing, as the working directory, with this
    process's AWS settings isolated (dummy keys, no user config)."""
    root, _ = owner
    here = clone(root, tmp_path / "P", env)
    isolate_aws(monkeypatch, tmp_path / "home")
    monkeypatch.chdir(here)
    return here


def point(partner, env, endpoint, bucket=None):
    """Send the partner's remote to ``endpoint`` (and ``bucket``), in its local DVC config."""
    run(["dvc", "remote", "modify", "--local", "storage", "endpointurl", endpoint], partner, env)
    if bucket:
        run(
            ["dvc", "remote", "modify", "--local", "storage", "url", f"s3://{bucket}/patches"],
            partner,
            env,
        )


def epoch(dataset, split="train", **options):
    return list(dataset.split(split).batches(8, seed=3, epoch=1, **options))


def same_batches(ours, theirs):
    assert len(ours) == len(theirs) > 1
    for (a_images, a_labels), (b_images, b_labels) in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a_images, b_images)
        np.testing.assert_array_equal(a_labels, b_labels)


def shard_sizes(owner_root):
    folder = owner_root / "data" / "patches"
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.glob("*/*.h5")}


def test_remote_gives_the_batches_of_the_pulled_folder(owner, partner, server, env, tmp_path):
    root, _ = owner
    assert not (partner / "data" / "patches").exists()
    with CountingProxy(server.endpoint) as proxy:
        point(partner, env, proxy.endpoint)
        with patchpack.open_dataset("data/patches", remote=True, cache_dir=tmp_path / "c") as ds:
            remote_train = epoch(ds)
            remote_test = epoch(ds, "test", shuffle=False, workers=0)
            labels = ds.split("val").labels()
        moved = proxy.received()
    with patchpack.open_dataset(root / "data" / "patches") as local:
        same_batches(remote_train, epoch(local))
        same_batches(remote_test, epoch(local, "test", shuffle=False, workers=0))
        np.testing.assert_array_equal(labels, local.split("val").labels())
    total = sum(shard_sizes(root).values())
    assert moved >= total  # every shard of the three splits was read once ...
    assert moved < total + 200_000  # ... plus the listing and manifest, and nothing twice
    assert not (partner / "data" / "patches").exists()  # nothing was pulled into the project


def test_cache_bound_holds_and_order_is_kept(owner, partner, server, env, tmp_path, caplog):
    from patchpack.sharing.remote_read import RemoteLocation, open_remote

    root, _ = owner
    sizes = shard_sizes(root)
    train = {path: size for path, size in sizes.items() if path.startswith("train/")}
    assert len(train) >= 6, train
    bound = int(2.5 * max(train.values()))
    cache = tmp_path / "bounded"
    location = RemoteLocation(data="data/patches")
    source = open_remote(location, cache_dir=cache, cache_size=bound)
    folder = source.cache.folder
    dataset = patchpack.PatchDataset(
        source.manifest, open_shard=source.shard, on_epoch=source.read_ahead
    )
    batches, seen = [], []
    try:
        for batch in dataset.split("train").batches(8, seed=3, epoch=1, workers=2):
            batches.append(batch)
            seen.append(sum(p.stat().st_size for p in folder.glob("*/*") if p.is_file()))
    finally:
        dataset.close()
        source.close()
    assert source.cache.fetched > bound // max(train.values())  # it had to evict to go on
    assert source.cache.peak <= bound + max(train.values())  # never over by more than one shard
    assert max(seen) <= bound + max(train.values())
    assert sum(p.stat().st_size for p in folder.glob("*/*.h5")) <= bound  # at rest: the bound
    # the default shuffle group spans every train shard, more than the cache holds: said once
    assert "fetched more than once per epoch" in caplog.text
    with patchpack.open_dataset(root / "data" / "patches") as local:
        same_batches(batches, epoch(local, workers=2))
    # a second read of the same version reuses the listing, manifest and cached shards
    with CountingProxy(server.endpoint) as proxy:
        point(partner, env, proxy.endpoint)
        with patchpack.open_dataset("data/patches", remote=True, cache_dir=cache) as again:
            assert len(again.split("train")) == sum(
                e.patches for e in source.manifest.shards_for("train")
            )
        assert proxy.received() == 0


def test_a_corrupted_object_is_refused(owner, partner, server, env, tmp_path):
    root, bucket = owner
    hostile = f"pp-read-bad-{uuid.uuid4().hex[:8]}"
    copy_bucket(server, bucket, hostile)
    md5s = file_digests(root / "data" / "patches", "md5")
    shard = sorted(path for path in md5s if path.startswith("train/"))[1]
    client = server.client()
    key = object_key(md5s[shard])
    body = bytearray(client.get_object(Bucket=hostile, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0xFF
    client.put_object(Bucket=hostile, Key=key, Body=bytes(body))
    point(partner, env, server.endpoint, hostile)
    cache = tmp_path / "c"
    with (
        patchpack.open_dataset("data/patches", remote=True, cache_dir=cache) as dataset,
        pytest.raises(IntegrityError, match="the remote served bytes with md5") as caught,
    ):
        epoch(dataset, workers=0)
    assert "\n" not in str(caught.value) and "nothing was kept" in str(caught.value)
    assert not list(cache.rglob(shard.split("/")[1])) and not list(cache.rglob(".*fetch-*"))
    checked = run(
        ["patchpack", "verify", "--remote", "--cache", str(cache)], partner, env, ok=False
    )
    assert checked.returncode == 1, checked.stdout + checked.stderr
    failures = [line for line in checked.stdout.splitlines() if line.startswith("  FAIL")]
    assert len(failures) == 1 and key.split("/")[-1] in failures[0], checked.stdout


def test_a_forged_shard_is_refused_by_its_sha256(owner, partner, tmp_path):
    """A cached shard that hashes wrong (changed on disk since) is fetched again, never opened."""
    from patchpack.sharing.remote_read import RemoteLocation, open_remote

    cache = tmp_path / "c"
    with patchpack.open_dataset("data/patches", remote=True, cache_dir=cache) as dataset:
        first = epoch(dataset, "test", shuffle=False, workers=0)
    source = open_remote(RemoteLocation(), cache_dir=cache)
    entry = source.manifest.shards_for("test")[0]
    path = source.cache.folder / entry.path
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    fetched = source.cache.fetched
    with source.cache.reader(entry) as reader:
        images, _ = reader.read(0, len(reader))
    assert source.cache.fetched == fetched + 1
    count = min(len(images), len(first[0][0]))
    np.testing.assert_array_equal(images[:count], first[0][0][:count])
    source.close()


def test_info_verify_preview_remotely(owner, partner, env, tmp_path):
    root, _ = owner
    cache = ["--cache", str(tmp_path / "c")]
    shown = run(["patchpack", "info", "--remote", *cache], partner, env).stdout
    local = run(["patchpack", "info"], root, env).stdout
    table = [line for line in local.splitlines() if not line.startswith(("bytes", "version"))]
    assert [line for line in shown.splitlines() if not line.startswith(("bytes", "remote"))] == [
        line for line in table
    ]
    assert f"bytes        {sum(shard_sizes(root).values()):,} on the remote" in shown
    assert not list((tmp_path / "c").rglob("*.h5"))  # info reads metadata only
    verified = run(["patchpack", "verify", "--remote", *cache], partner, env)
    assert verified.stdout.startswith("verify data/patches of this project: OK"), verified.stdout
    split = run(["patchpack", "verify", "--remote", "--split", "test", *cache], partner, env)
    assert "not pulled, not checked: train, val" in split.stdout
    run(["patchpack", "preview", "--remote", "--out", "remote.png", *cache], partner, env)
    run(["patchpack", "preview", "--maps", "0", "--out", str(tmp_path / "local.png")], root, env)
    assert (partner / "remote.png").read_bytes() == (tmp_path / "local.png").read_bytes()
    assert not (partner / "data" / "patches").exists()


def test_repository_at_a_rev(owner, env, tmp_path, monkeypatch):
    """From outside any project: the owner's repository at tag v1, resolved with DVC's API."""
    root, _ = owner
    isolate_aws(monkeypatch, tmp_path / "home")
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "c"
    with patchpack.open_dataset("data/patches", repo=str(root), rev="v1", cache_dir=cache) as ds:
        remote = epoch(ds, "val")
    with patchpack.open_dataset(root / "data" / "patches") as local:
        same_batches(remote, epoch(local, "val"))
    shown = run(["patchpack", "info", "--repo", str(root), "--rev", "v1"], tmp_path, env)
    assert f"{root}@v1" in shown.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--remote", "nosuch"], "remote 'nosuch' doesn't exist"),
        (["data/other", "--remote"], "records no folder hash for data/other"),
        (["--remote", "--cache-size", "1K"], "smaller than one shard"),
        (["--remote", "--cache-size", "lots"], "is not a size"),
        (["--repo", ".", "--rev", "no-such-tag"], "no-such-tag"),
    ],
)
def test_bad_input_is_one_line_exit_2(partner, env, tmp_path, args, words):
    proc = run(["patchpack", "info", *args, "--cache", str(tmp_path / "c")], partner, env, ok=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert words in line, line


def test_unreachable_server_is_one_line_exit_2(partner, env, tmp_path):
    point(partner, env, f"http://127.0.0.1:{free_port()}")
    proc = run(
        ["patchpack", "info", "--remote", "--cache", str(tmp_path / "c")], partner, env, ok=False
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "cannot read object" in line or "unreachable" in line, line


def test_api_bad_input(partner, tmp_path):
    with pytest.raises(RemoteError, match="records no folder hash for data/nothing"):
        patchpack.open_dataset("data/nothing", remote=True, cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="smaller than one shard"):
        patchpack.open_dataset("data/patches", remote=True, cache_dir=tmp_path, cache_size=100)


def test_training_starts_after_the_first_shards(owner, partner, tmp_path):
    """The first batch needs the shards of the first group only (plus a read-ahead of two), and
    an epoch of one split fetches that split's shards, each once."""
    from patchpack.sharing.remote_read import RemoteLocation, open_remote
    from patchpack.sharing.shard_cache import DEFAULT_PREFETCH

    source = open_remote(RemoteLocation(), cache_dir=tmp_path / "c")
    dataset = patchpack.PatchDataset(
        source.manifest, open_shard=source.shard, on_epoch=source.read_ahead
    )
    try:
        shards = len(source.manifest.shards_for("train"))
        batches = dataset.split("train").batches(8, seed=3, shuffle_buffer=12, workers=0)
        next(batches)
        assert source.cache.fetched <= 1 + DEFAULT_PREFETCH < shards
        rest = list(batches)
        assert source.cache.fetched == shards
        assert not list(source.cache.folder.glob("val/*")) + list(
            source.cache.folder.glob("test/*")
        )
    finally:
        dataset.close()
        source.close()
    with patchpack.open_dataset(owner[0] / "data" / "patches") as local:
        assert len(rest) + 1 == len(list(local.split("train").batches(8, shuffle_buffer=12)))


def test_an_s3_url_the_project_does_not_configure(owner, partner, server, env, tmp_path):
    """``--remote s3://...`` with the committed dvc.lock: the endpoint comes from the environment
    (``AWS_ENDPOINT_URL``), as for any S3 client, when no configured remote has that url."""
    root, bucket = owner
    other = f"pp-read-url-{uuid.uuid4().hex[:8]}"
    copy_bucket(server, bucket, other)
    point(partner, env, f"http://127.0.0.1:{free_port()}")  # the configured remote is dead
    shown = run(
        ["patchpack", "info", "--remote", f"s3://{other}/patches", "--cache", str(tmp_path / "c")],
        partner,
        {**env, "AWS_ENDPOINT_URL": server.endpoint},
    )
    local = run(["patchpack", "info"], root, env).stdout
    assert shown.stdout.splitlines()[:4] == local.splitlines()[:4]
    assert f"via s3://{other}/patches" in shown.stdout


def test_an_edited_manifest_on_the_remote_is_refused(owner, partner, server, env, tmp_path):
    root, bucket = owner
    hostile = f"pp-read-man-{uuid.uuid4().hex[:8]}"
    copy_bucket(server, bucket, hostile)
    md5s = file_digests(root / "data" / "patches", "md5")
    key = object_key(md5s["manifest.json"])
    client = server.client()
    text = client.get_object(Bucket=hostile, Key=key)["Body"].read()
    client.put_object(Bucket=hostile, Key=key, Body=text.replace(b'"seed": ', b'"seed": 1'))
    point(partner, env, server.endpoint, hostile)
    proc = run(
        ["patchpack", "info", "--remote", "--cache", str(tmp_path / "c")], partner, env, ok=False
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "the remote served bytes with md5" in line and "manifest.json" in line, line
    assert not list((tmp_path / "c").rglob("manifest.json"))
    checked = run(
        ["patchpack", "verify", "--remote", "--cache", str(tmp_path / "c")], partner, env, ok=False
    )
    assert checked.returncode == 1, checked.stdout + checked.stderr


def test_a_dvc_lock_file_given(owner, partner, tmp_path):
    lock = tmp_path / "their.lock"
    lock.write_text((partner / "dvc.lock").read_text())
    (partner / "dvc.lock").write_text("stages: {}\n")  # the working tree's lock is not read
    with patchpack.open_dataset(
        "data/patches", remote="storage", lock=lock, cache_dir=tmp_path / "c"
    ) as ds:
        assert len(ds.split("test")) > 0
    with pytest.raises(ConfigError, match="give one"):
        patchpack.open_dataset("data/patches", lock=lock, rev="v1", cache_dir=tmp_path / "c")


def test_one_cache_folder_serves_one_reader_at_a_time(owner, partner, tmp_path):
    """A second reader of the same cache folder would evict or adopt the first one's files."""
    cache = tmp_path / "c"
    with patchpack.open_dataset("data/patches", remote=True, cache_dir=cache) as first:
        with pytest.raises(ConfigError, match="in use by another patchpack process"):
            patchpack.open_dataset("data/patches", remote=True, cache_dir=cache)
        assert len(epoch(first, "test", shuffle=False, workers=0)) > 0
    with patchpack.open_dataset("data/patches", remote=True, cache_dir=cache) as again:
        assert len(epoch(again, "test", shuffle=False, workers=0)) > 0  # released on close
    with patchpack.open_dataset(owner[0] / "data" / "patches", remote=False) as local:
        assert len(epoch(local, "test", shuffle=False, workers=0)) > 0  # remote=False: local
