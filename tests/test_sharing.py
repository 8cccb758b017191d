"""End to end: a partner gets the identical dataset with ``git clone`` + ``dvc pull`` (or rebuilds it).

Real components only: git, DVC and the ``patchpack`` console script run as subprocesses in temporary
projects built from this repository's ``dvc.yaml`` (the extract stage), ``params.yaml`` (with small
values) and ``src/``; the S3 remote is moto in server mode on loopback; images are PNGs written here.

Project A extracts, configures the S3 remote, pushes and commits. Clones of A then play partners:
B pulls, C rebuilds offline, D pulls with the read-only IAM policy, E finds the endpoint dead.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from patchpack.dataset.card import CARD_FILES
from patchpack.sharing.policy import read_only_policy
from support.commands import file_digests
from support.s3server import free_port, moto_server, subprocess_env

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("bark", "sand", "stone")
VERIFIED = re.compile(r"^verify \S*data/patches: OK$", re.MULTILINE)


@pytest.fixture(scope="module")
def server():
    return moto_server()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return subprocess_env(tmp_path_factory.mktemp("home"))


def run(args, cwd, env, ok=True):
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if ok and proc.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, args))} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def write_image(path, seed, size=(128, 128)):
    """A textured grayscale PNG: smooth random structure plus grain, like a photograph's patch."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(size[0] // 8, size[1] // 8), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize(size[::-1], Image.BILINEAR), dtype=np.int16)
    pixels = np.clip(smooth + rng.integers(-20, 21, size), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def make_project(root, env, *, per_class, per_image=20, target_patches=16):
    """A fresh git + DVC project: images/, params.yaml, the extract stage of dvc.yaml, src/."""
    root.mkdir(parents=True)
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            write_image(root / "images" / name / f"img{i:02d}.png", seed=100 * c + i)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["source"]["dir"] = "images"
    params["extract"].update(patch_size=16, per_image=per_image, per_class=None, min_std=0.0)
    params["split"].update(mode="region", block_size=32)
    params["shards"]["target_patches"] = target_patches
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())
    pipeline["stages"] = {"extract": pipeline["stages"]["extract"]}
    (root / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    shutil.copytree(
        REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    run(["git", "init", "-q", "-b", "main"], root, env)
    run(["dvc", "init", "-q"], root, env)
    return root


def commit(root, env, message):
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-q", "-m", message], root, env)


def clone(source, target, env):
    run(["git", "clone", "-q", str(source), str(target)], source.parent, env)
    return target


def locked_md5(root):
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    (out,) = lock["stages"]["extract"]["outs"]
    return out["md5"]


@pytest.fixture(scope="module")
def project_a(tmp_path_factory, server, env):
    """Extracted, pushed to S3 and committed: what the data owner does once."""
    root = make_project(tmp_path_factory.mktemp("owner") / "A", env, per_class=2)
    run(["dvc", "repro", "extract"], root, env)
    bucket = f"pp-share-{uuid.uuid4().hex[:10]}"
    setup = run(
        [
            "patchpack",
            "remote",
            "s3",
            f"s3://{bucket}/patches",
            "--endpoint-url",
            server.endpoint,
            "--create-bucket",
        ],
        root,
        env,
    )
    assert "usable for: push and pull" in setup.stdout
    run(["dvc", "push"], root, env)
    commit(root, env, "dataset v1")
    return root, bucket


def test_owner_commits_no_credentials(project_a, env):
    root, bucket = project_a
    tracked = run(["git", "ls-files"], root, env).stdout.split()
    assert ".dvc/config" in tracked and ".dvc/config.local" not in tracked
    assert "dvc.lock" in tracked and not any(path.startswith("data/patches") for path in tracked)
    committed = (root / ".dvc" / "config").read_text()
    assert (
        env["AWS_SECRET_ACCESS_KEY"] not in committed and env["AWS_ACCESS_KEY_ID"] not in committed
    )
    assert f"url = s3://{bucket}/patches" in committed


def test_partner_pulls_identical_dataset(project_a, env, tmp_path):
    owner, _ = project_a
    partner = clone(owner, tmp_path / "B", env)
    run(["dvc", "pull"], partner, env)
    verified = run(["patchpack", "verify"], partner, env)
    assert "OK" in verified.stdout.splitlines()[0]
    mine = file_digests(partner / "data" / "patches")
    assert mine == file_digests(owner / "data" / "patches")
    manifest = json.loads((partner / "data" / "patches" / "manifest.json").read_text())
    assert len(manifest["shards"]) >= 3
    assert {s["path"]: s["sha256"] for s in manifest["shards"]} == {
        path: digest for path, digest in mine.items() if path.endswith(".h5")
    }
    assert "up to date" in run(["dvc", "status"], partner, env).stdout
    repro = run(["dvc", "repro"], partner, env)
    assert "Running stage" not in repro.stdout and "didn't change, skipping" in repro.stdout


def test_offline_partner_rebuilds_byte_identical(project_a, env, tmp_path):
    """No remote at all: `dvc repro` regenerates the shards with the md5s recorded in dvc.lock."""
    owner, _ = project_a
    partner = clone(owner, tmp_path / "C", env)
    run(["dvc", "remote", "remove", "storage"], partner, env)
    repro = run(["dvc", "repro"], partner, env)
    assert "Running stage 'extract'" in repro.stdout
    assert run(["git", "diff", "--stat", "dvc.lock"], partner, env).stdout == ""
    md5 = locked_md5(partner)
    listing = json.loads(
        (owner / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).read_text()
    )
    assert {entry["relpath"]: entry["md5"] for entry in listing} == file_digests(
        partner / "data" / "patches", "md5"
    )
    assert file_digests(partner / "data" / "patches") == file_digests(owner / "data" / "patches")


def test_read_only_partner_patchpack_pull(project_a, server, env, tmp_path):
    """`patchpack pull` with the documented read-only IAM policy: pulled, then verified."""
    owner, bucket = project_a
    partner = clone(owner, tmp_path / "D", env)
    key, secret = server.create_user(f"partner-{bucket}", read_only_policy(bucket, "patches"))
    reader = dict(env, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret)
    with server.iam_enforced():
        pulled = run(["patchpack", "pull"], partner, reader)
    assert "usable for: pull (write not checked)" in pulled.stdout
    assert "pulled data/patches" in pulled.stdout
    assert VERIFIED.search(pulled.stdout)
    assert file_digests(partner / "data" / "patches") == file_digests(owner / "data" / "patches")


def test_patchpack_pull_unreachable_then_rebuild(project_a, env, tmp_path):
    owner, _ = project_a
    partner = clone(owner, tmp_path / "E", env)
    no_keys = dict(env, AWS_ACCESS_KEY_ID="", AWS_SECRET_ACCESS_KEY="")
    no_keys = {k: v for k, v in no_keys.items() if v}
    refused = run(["patchpack", "pull"], partner, no_keys, ok=False)
    assert refused.returncode == 2
    assert (
        "no AWS credentials found" in refused.stderr
        and "patchpack pull --rebuild" in refused.stderr
    )

    dead = f"http://127.0.0.1:{free_port()}"
    run(["dvc", "remote", "modify", "--local", "storage", "endpointurl", dead], partner, env)
    refused = run(["patchpack", "pull"], partner, env, ok=False)
    assert refused.returncode == 2
    assert f"cannot reach the S3 endpoint {dead}" in refused.stderr
    assert not (partner / "data" / "patches").exists()

    rebuilt = run(["patchpack", "pull", "--rebuild"], partner, env)
    assert "equals the committed dvc.lock" in rebuilt.stdout
    assert VERIFIED.search(rebuilt.stdout)
    assert run(["git", "status", "--porcelain", "dvc.lock"], partner, env).stdout == ""
    assert file_digests(partner / "data" / "patches") == file_digests(owner / "data" / "patches")


def test_pull_with_objects_missing_from_remote_offers_rebuild(project_a, env, tmp_path):
    owner, bucket = project_a
    partner = clone(owner, tmp_path / "G", env)
    run(
        ["dvc", "remote", "modify", "--local", "storage", "url", f"s3://{bucket}/never-pushed"],
        partner,
        env,
    )
    result = run(["patchpack", "pull"], partner, env, ok=False)
    assert result.returncode == 2
    assert "`dvc pull data/patches` failed" in result.stderr
    assert "patchpack pull --rebuild" in result.stderr


def test_pull_fails_when_data_differs_from_lock(project_a, env, tmp_path):
    """A rebuild that does not reproduce the committed hash never exits 0."""
    owner, _ = project_a
    partner = clone(owner, tmp_path / "F", env)
    run(["dvc", "remote", "remove", "storage"], partner, env)
    write_image(partner / "images" / CLASSES[0] / "img00.png", seed=424242)  # the sources changed
    result = run(["patchpack", "pull", "--rebuild"], partner, env, ok=False)
    assert result.returncode == 1
    assert "the committed dvc.lock says" in result.stdout


def test_local_directory_remote(tmp_path, env):
    owner = make_project(tmp_path / "L", env, per_class=2)
    run(["dvc", "repro", "extract"], owner, env)
    store = tmp_path / "shared-drive" / "patchpack-dvc"
    setup = run(["patchpack", "remote", "local", str(store)], owner, env)
    assert "usable for: push and pull" in setup.stdout
    run(["dvc", "push"], owner, env)
    commit(owner, env, "dataset on a shared drive")
    assert (store / "files" / "md5").is_dir()
    partner = clone(owner, tmp_path / "L2", env)
    pulled = run(["patchpack", "pull"], partner, env)
    assert VERIFIED.search(pulled.stdout)
    assert file_digests(partner / "data" / "patches") == file_digests(owner / "data" / "patches")


def test_adding_an_image_changes_few_shards(tmp_path, server, env):
    """Content-defined shard boundaries: one new image re-uploads a few shards, not the dataset."""
    root = make_project(tmp_path / "S", env, per_class=6, per_image=40, target_patches=64)
    bucket = f"pp-delta-{uuid.uuid4().hex[:10]}"
    run(["dvc", "repro", "extract"], root, env)
    run(
        [
            "patchpack",
            "remote",
            "s3",
            f"s3://{bucket}/ds",
            "--endpoint-url",
            server.endpoint,
            "--create-bucket",
        ],
        root,
        env,
    )
    run(["dvc", "push"], root, env)
    before_shards = {
        s["sha256"] for s in json.loads((root / "data/patches/manifest.json").read_text())["shards"]
    }
    before = server.objects(bucket)

    write_image(root / "images" / CLASSES[1] / "img02b.png", seed=99999)
    run(["dvc", "repro", "extract"], root, env)
    run(["dvc", "push"], root, env)
    after_shards = {
        s["sha256"] for s in json.loads((root / "data/patches/manifest.json").read_text())["shards"]
    }
    after = server.objects(bucket)

    new_shards = after_shards - before_shards
    uploaded = {key: size for key, size in after.items() if key not in before}
    dataset_bytes = sum(after[key] for key in after if not key.endswith(".dir"))
    print(
        f"\nshards {len(before_shards)} -> {len(after_shards)}, new {len(new_shards)}; uploaded "
        f"{len(uploaded)} objects, {sum(uploaded.values())} of {dataset_bytes} bytes"
    )
    assert len(before_shards) >= 10
    assert 1 <= len(new_shards) <= 3  # region split: the image adds rows to train, val and test
    # + the new manifest.json, its card files (counts and hashes changed) and DVC's .dir listing
    assert len(uploaded) == len(new_shards) + 2 + len(CARD_FILES)
    assert sum(uploaded.values()) < 0.35 * dataset_bytes


# --- The proof: what decides "this is the committed dataset" is the bytes, never DVC's state -----


def copy_bucket(server, source, target):
    """A second bucket holding the same objects: a remote a test may tamper with."""
    server.create_bucket(target)
    client = server.client()
    for key in server.objects(source):
        client.copy_object(Bucket=target, Key=key, CopySource={"Bucket": source, "Key": key})


def partner_on(owner, bucket, target, env):
    partner = clone(owner, target, env)
    run(
        ["dvc", "remote", "modify", "--local", "storage", "url", f"s3://{bucket}/patches"],
        partner,
        env,
    )
    return partner


def object_key(md5):
    return f"patches/files/md5/{md5[:2]}/{md5[2:]}"


def test_partner_extract_verifies_without_dvc_commit(project_a, env, tmp_path):
    """A byte-identical rebuild by `patchpack extract` (not `dvc repro`) is the committed dataset,
    although DVC's cache has never seen it; with a Dask cluster too."""
    owner, _ = project_a
    partner = clone(owner, tmp_path / "X", env)
    run(["dvc", "remote", "remove", "storage"], partner, env)
    for extra in ([], ["--cluster", "local:2"]):
        run(["patchpack", "extract", "--out", "data/patches", *extra], partner, env)
        verified = run(["patchpack", "verify"], partner, env)
        assert VERIFIED.search(verified.stdout), verified.stdout
        assert f"hashes to the md5 {locked_md5(owner)}" in verified.stdout
    assert not (partner / ".dvc" / "cache" / "files").exists()  # DVC was never asked
    # the other way round: the same folder with one byte changed is not the committed dataset
    shard = next((partner / "data" / "patches" / "train").glob("shard-*.h5"))
    shard.write_bytes(shard.read_bytes() + b"\0")
    failed = run(["patchpack", "verify"], partner, env, ok=False)
    assert failed.returncode == 1
    assert "but dvc.lock records" in failed.stdout


def test_pull_from_a_remote_serving_an_edited_manifest_fails(project_a, server, env, tmp_path):
    owner, bucket = project_a
    hostile = f"pp-edit-{uuid.uuid4().hex[:10]}"
    copy_bucket(server, bucket, hostile)
    listing = json.loads(
        (owner / ".dvc/cache/files/md5" / locked_md5(owner)[:2] / locked_md5(owner)[2:]).read_text()
    )
    (manifest_md5,) = [e["md5"] for e in listing if e["relpath"] == "manifest.json"]
    client = server.client()
    text = client.get_object(Bucket=hostile, Key=object_key(manifest_md5))["Body"].read().decode()
    assert '"seed": 2019' in text
    client.put_object(
        Bucket=hostile,
        Key=object_key(manifest_md5),
        Body=text.replace('"seed": 2019', '"seed": 2020'),
    )
    partner = partner_on(owner, hostile, tmp_path / "H1", env)
    pulled = run(["patchpack", "pull"], partner, env, ok=False)
    assert pulled.returncode == 1, pulled.stdout + pulled.stderr
    assert "FAIL data/patches hashes to md5" in pulled.stdout
    assert not VERIFIED.search(pulled.stdout)


def test_pull_from_a_remote_serving_a_self_consistent_forgery_fails(
    project_a, server, env, tmp_path
):
    """Shards, manifest, hashes and fingerprint all rewritten (another seed), and DVC's .dir listing
    rewritten to match: every file is what its listing says; only the committed md5 tells."""
    owner, bucket = project_a
    forger = clone(owner, tmp_path / "forger", env)
    params = yaml.safe_load((forger / "params.yaml").read_text())
    params["base"]["seed"] = 2020
    (forger / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["patchpack", "extract", "--out", "data/patches"], forger, env)
    assert run(["patchpack", "verify", "--no-lock"], forger, env).returncode == 0

    hostile = f"pp-forge-{uuid.uuid4().hex[:10]}"
    copy_bucket(server, bucket, hostile)
    client = server.client()
    forged = file_digests(forger / "data" / "patches", "md5")
    for relpath, md5 in forged.items():
        client.put_object(
            Bucket=hostile,
            Key=object_key(md5),
            Body=(forger / "data/patches" / relpath).read_bytes(),
        )
    lie = json.dumps(
        [{"md5": md5, "relpath": relpath} for relpath, md5 in sorted(forged.items())],
        sort_keys=True,
    )
    client.put_object(Bucket=hostile, Key=object_key(locked_md5(owner)), Body=lie.encode())

    partner = partner_on(owner, hostile, tmp_path / "H2", env)
    pulled = run(["patchpack", "pull"], partner, env, ok=False)
    assert pulled.returncode == 1, pulled.stdout + pulled.stderr
    assert file_digests(partner / "data" / "patches", "md5") == forged  # DVC took the forgery
    assert "FAIL data/patches hashes to md5" in pulled.stdout
    verified = run(["patchpack", "verify"], partner, env, ok=False)
    assert verified.returncode == 1 and "but dvc.lock records" in verified.stdout


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_dvc_cache_link_layouts_verify(project_a, env, tmp_path, link):
    """DVC's documented cache.type symlink and hardlink checkouts are the committed dataset."""
    owner, _ = project_a
    partner = clone(owner, tmp_path / f"K-{link}", env)
    run(["dvc", "config", "--local", "cache.type", link], partner, env)
    pulled = run(["patchpack", "pull"], partner, env)
    assert VERIFIED.search(pulled.stdout), pulled.stdout
    shard = next((partner / "data" / "patches" / "train").glob("shard-*.h5"))
    assert shard.is_symlink() == (link == "symlink")
    assert file_digests(partner / "data" / "patches") == file_digests(owner / "data" / "patches")


def test_shard_linked_outside_the_project_cache_is_refused(project_a, env, tmp_path):
    owner, _ = project_a
    partner = clone(owner, tmp_path / "Y", env)
    run(["dvc", "pull"], partner, env)
    shard = next((partner / "data" / "patches" / "train").glob("shard-*.h5"))
    elsewhere = tmp_path / "elsewhere.h5"
    shutil.copyfile(shard, elsewhere)
    shard.unlink()
    shard.symlink_to(elsewhere)
    failed = run(["patchpack", "verify"], partner, env, ok=False)
    assert failed.returncode == 1
    assert "outside its project's DVC cache" in failed.stdout


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs (root only): a disk that fills up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk, leave):
    free = shutil.disk_usage(disk).free
    with open(disk / "filler", "wb") as handle:
        handle.truncate(0)
        handle.write(b"\0" * max(0, free - leave))


@pytest.mark.parametrize("leave", ["half", "one and a half"])
def test_pull_onto_a_full_disk_says_so(project_a, env, small_disk, leave):
    """Not enough room for the dataset: refused up front; room for the workspace copy but not for
    DVC's cache as well: DVC fails half-way, and the line names the full disk, not DVC's guess."""
    owner, _ = project_a
    partner = clone(owner, small_disk / "P", env)
    size = yaml.safe_load((partner / "dvc.lock").read_text())["stages"]["extract"]["outs"][0][
        "size"
    ]
    _fill(small_disk, size // 2 if leave == "half" else size * 3 // 2)
    pulled = run(["patchpack", "pull"], partner, env, ok=False)
    assert pulled.returncode == 2, pulled.stdout + pulled.stderr
    (line,) = pulled.stderr.strip().splitlines()
    assert "no space" in line and "free space and run `patchpack pull` again" in line, line
    assert "cache up to date" not in line
    assert not VERIFIED.search(pulled.stdout)


# --- one split, straight from the remote's objects ---------------------------------------------


def test_pull_one_split_fetches_only_its_objects(project_a, server, env, tmp_path):
    from support.s3server import CountingProxy

    owner, _ = project_a
    partner = clone(owner, tmp_path / "S1", env)
    owner_md5 = file_digests(owner / "data" / "patches", "md5")
    by_split = {
        split: {md5 for rel, md5 in owner_md5.items() if rel.startswith(f"{split}/")}
        for split in ("train", "val", "test")
    }
    with CountingProxy(server.endpoint) as proxy:
        run(
            ["dvc", "remote", "modify", "--local", "storage", "endpointurl", proxy.endpoint],
            partner,
            env,
        )
        pulled = run(["patchpack", "pull", "--split", "test"], partner, env)
        seen = proxy.bytes_by_object()
        test_bytes = proxy.received()
    fetched = {key for key, size in seen.items() if size > 1}  # the remote probe reads one byte
    assert "data/patches (test): OK" in pulled.stdout, pulled.stdout
    assert "train, val not pulled" in pulled.stdout
    assert "not pulled, not checked: train, val" in pulled.stdout
    assert by_split["test"] <= fetched  # every test shard came from the remote ...
    assert not fetched & (by_split["train"] | by_split["val"])  # ... and no train or val object
    mine = file_digests(partner / "data" / "patches", "md5")
    assert {rel for rel in mine} == {
        rel
        for rel in owner_md5
        if rel.startswith(("test/", "roi/")) or rel in ("manifest.json", *CARD_FILES)
    }
    assert all(owner_md5[rel] == md5 for rel, md5 in mine.items())
    assert run(["patchpack", "verify", "--split", "test"], partner, env).returncode == 0
    assert run(["patchpack", "verify"], partner, env, ok=False).returncode == 1  # not all there
    full = sum(size for rel, size in _sizes(owner / "data" / "patches").items())
    print(f"\npull --split test moved {test_bytes:,} bytes of a {full:,}-byte dataset")
    assert test_bytes < 0.5 * full

    # a second split adds to the first, fetching nothing twice
    with CountingProxy(server.endpoint) as proxy:
        run(
            ["dvc", "remote", "modify", "--local", "storage", "endpointurl", proxy.endpoint],
            partner,
            env,
        )
        run(["patchpack", "pull", "--split", "val"], partner, env)
        again = {key for key, size in proxy.bytes_by_object().items() if size > 1}
    assert not again & by_split["test"] and by_split["val"] <= again
    verified = run(["patchpack", "verify", "--split", "test", "--split", "val"], partner, env)
    assert "(test, val): OK" in verified.stdout


def _sizes(folder):
    return {
        p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*") if p.is_file()
    }


def test_pull_split_refuses_an_object_that_fails_its_hash(project_a, server, env, tmp_path):
    owner, bucket = project_a
    hostile = f"pp-split-{uuid.uuid4().hex[:10]}"
    copy_bucket(server, bucket, hostile)
    owner_md5 = file_digests(owner / "data" / "patches", "md5")
    test_shard = sorted(rel for rel in owner_md5 if rel.startswith("test/"))[0]
    client = server.client()
    key = object_key(owner_md5[test_shard])
    body = bytearray(client.get_object(Bucket=hostile, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0xFF
    client.put_object(Bucket=hostile, Key=key, Body=bytes(body))
    partner = partner_on(owner, hostile, tmp_path / "S2", env)
    pulled = run(["patchpack", "pull", "--split", "test"], partner, env, ok=False)
    assert pulled.returncode == 1, pulled.stdout + pulled.stderr
    (line,) = pulled.stderr.strip().splitlines()
    assert f"{test_shard}: the remote served bytes with md5" in line and "nothing was kept" in line
    assert not (partner / "data" / "patches" / test_shard).exists()
    assert not list((partner / "data" / "patches").rglob(".*fetch-*"))


def test_pull_split_names_an_unknown_split(project_a, env, tmp_path):
    owner, _ = project_a
    partner = clone(owner, tmp_path / "S3", env)
    refused = run(["patchpack", "pull", "--split", "tset"], partner, env, ok=False)
    assert refused.returncode == 2
    assert "tset" in refused.stderr and "test" in refused.stderr


# --- a public dataset: partners without any AWS account ----------------------------------------


def test_public_remote_pulled_without_credentials(tmp_path, server, env):
    """The owner makes the remote public; a partner with no credentials anywhere in the
    environment pulls, once the printed bucket policy is attached (refused in one line before)."""
    from support.s3server import AWS_VARS, CountingProxy

    owner = make_project(tmp_path / "P", env, per_class=2)
    run(["dvc", "repro", "extract"], owner, env)
    bucket = f"pp-public-{uuid.uuid4().hex[:10]}"
    with CountingProxy(server.endpoint, anonymous_by_policy=True) as gate:
        setup = run(
            ["patchpack", "remote", "s3", f"s3://{bucket}/patches", "--endpoint-url", gate.endpoint,
             "--create-bucket", "--public"],
            owner,
            env,
        )  # fmt: skip
        assert "anonymous reads are refused now" in setup.stdout
        policy = json.loads(setup.stdout[setup.stdout.index("{") :])
        assert all(statement["Principal"] == "*" for statement in policy["Statement"])
        run(["dvc", "push"], owner, env)  # the owner's config.local signs its pushes
        commit(owner, env, "public dataset")
        committed = (owner / ".dvc" / "config").read_text()
        assert "allow_anonymous_login = true" in committed and "access_key" not in committed

        partner = clone(owner, tmp_path / "P2", env)
        nobody = {k: v for k, v in env.items() if k not in AWS_VARS}
        nobody.update({"AWS_EC2_METADATA_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1"})
        refused = run(["patchpack", "pull"], partner, nobody, ok=False)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        (line,) = refused.stderr.strip().splitlines()
        assert "refused an anonymous request: the bucket is not public" in line
        assert not (partner / "data" / "patches").exists()

        server.client().put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
        pulled = run(["patchpack", "pull"], partner, nobody)
        assert "none needed: a public remote, unsigned requests" in pulled.stdout
        assert VERIFIED.search(pulled.stdout), pulled.stdout
    assert file_digests(partner / "data" / "patches") == file_digests(owner / "data" / "patches")
    assert gate.refused() >= 1
