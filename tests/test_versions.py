"""Named versions end to end: a registry tags v1 and v2 (v2 adds one image), a clone pulls v1 by
name, ``info`` names the version a folder holds, and a consumer ``patchpack import``s v1, then
updates to v2, each verified.

Real components only: two local git repositories, DVC and the ``patchpack`` console script run as
subprocesses, the registry's S3 remote is moto on loopback behind a ``CountingProxy`` (committed as
its endpoint) so the bytes every step moved are counted.
"""

from __future__ import annotations

import shutil
import uuid

import pytest
import yaml

from patchpack.dataset.card import CARD_FILES
from support.commands import file_digests
from support.s3server import CountingProxy, moto_server, subprocess_env
from test_sharing import CLASSES, clone, commit, make_project, run, write_image

pytestmark = pytest.mark.slow  # real git, DVC and S3 round trips: about three minutes in all


@pytest.fixture(scope="module")
def proxy():
    with CountingProxy(moto_server().endpoint) as counting:
        yield counting


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return subprocess_env(tmp_path_factory.mktemp("home"))


def _md5(root):
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    (out,) = lock["stages"]["extract"]["outs"]
    return out["md5"]


@pytest.fixture(scope="module")
def registry(tmp_path_factory, proxy, env):
    """v0: the code, no dataset yet; v1: the dataset of 18 images; v2: one image more (the
    workload of test_sharing's one-image test, so the figures compare)."""
    root = make_project(
        tmp_path_factory.mktemp("registry") / "R", env, per_class=6, per_image=40, target_patches=64
    )
    bucket = f"pp-versions-{uuid.uuid4().hex[:10]}"
    run(["patchpack", "remote", "s3", f"s3://{bucket}/ds", "--endpoint-url", proxy.endpoint,
         "--create-bucket"], root, env)  # fmt: skip
    commit(root, env, "code")
    run(["git", "tag", "v0"], root, env)
    versions = {}
    for tag in ("v1", "v2"):
        if tag == "v2":
            write_image(root / "images" / CLASSES[1] / "img06.png", seed=4242)
        run(["dvc", "repro", "extract"], root, env)
        run(["dvc", "push"], root, env)
        commit(root, env, f"dataset {tag}")
        run(["git", "tag", "-a", tag, "-m", f"dataset {tag}"], root, env)
        versions[tag] = (_md5(root), file_digests(root / "data" / "patches", "md5"))
    return root, versions


def _moved(proxy, since):
    return sum(size for method, _, size, _ in proxy.requests[since:] if method == "GET")


def _dataset_bytes(digests, root):
    return sum((root / "data" / "patches" / rel).stat().st_size for rel in digests)


# --- pull --rev --------------------------------------------------------------------------------


def test_pull_rev_gets_the_tagged_version_beside_the_dataset(registry, env, tmp_path):
    owner, versions = registry
    partner = clone(owner, tmp_path / "C", env)
    pulled = run(["patchpack", "pull", "--rev", "v1"], partner, env)
    assert "pulled data/patches at v1" in pulled.stdout and "into data/patches-v1" in pulled.stdout
    assert "verify " in pulled.stdout and ": OK" in pulled.stdout, pulled.stdout
    assert f"md5 {versions['v1'][0]} that dvc.lock records at v1" in pulled.stdout
    assert file_digests(partner / "data" / "patches-v1", "md5") == versions["v1"][1]
    assert not (partner / "data" / "patches").exists()  # the tracked folder is left alone
    info = run(["patchpack", "info", "data/patches-v1"], partner, env)
    assert "version      v1 (commit" in info.stdout, info.stdout

    again = run(
        ["patchpack", "pull", "--rev", "v1"], partner, env
    )  # already there: nothing fetched
    assert "0 files fetched, " in again.stdout


def test_pull_rev_with_split_fetches_that_split_only(registry, env, tmp_path):
    owner, versions = registry
    partner = clone(owner, tmp_path / "C2", env)
    pulled = run(["patchpack", "pull", "--rev", "v2", "--split", "test", "--out", "v2test"],
                 partner, env)  # fmt: skip
    assert "pulled test of data/patches at v2" in pulled.stdout, pulled.stdout
    got = file_digests(partner / "v2test", "md5")
    assert got and all(versions["v2"][1][rel] == md5 for rel, md5 in got.items())
    assert {rel.split("/")[0] for rel in got} <= {"manifest.json", *CARD_FILES, "test", "roi"}
    assert any(rel.startswith("test/") for rel in got)
    assert "(test): OK" in pulled.stdout
    info = run(["patchpack", "info", "v2test"], partner, env)
    assert "version      part of v2, HEAD (commit" in info.stdout, info.stdout
    assert "splits test;" in info.stdout
    # a second split completes the same folder in place; an object a killed pull left is dropped
    left = partner / "v2test" / "test" / ".shard-00000.h5.fetch-4242"
    left.write_bytes(b"half an object")
    run(["patchpack", "pull", "--rev", "v2", "--split", "val", "--out", "v2test"], partner, env)
    assert any(rel.startswith("val/") for rel in file_digests(partner / "v2test", "md5"))
    assert not left.exists()
    # a folder outside the project
    elsewhere = tmp_path / "elsewhere"
    pulled = run(["patchpack", "pull", "--rev", "v1", "--split", "test", "--out", str(elsewhere)],
                 partner, env)  # fmt: skip
    assert (
        "(test): OK" in pulled.stdout and "the listing that dvc.lock records at v1" in pulled.stdout
    )


# --- info names the version --------------------------------------------------------------------


def test_info_names_the_version_a_folder_holds(registry, env, tmp_path):
    owner, _ = registry
    info = run(["patchpack", "info"], owner, env)
    assert "version      v2, HEAD (commit" in info.stdout, info.stdout
    copy = tmp_path / "edited"
    shutil.copytree(owner / "data" / "patches", copy)
    (copy / "manifest.json").write_text((copy / "manifest.json").read_text() + " ")
    other = run(["patchpack", "info", str(copy)], owner, env, ok=False)
    assert "version      not a committed version" in other.stdout, other.stdout + other.stderr


# --- import from a registry, update to the next tag --------------------------------------------


@pytest.fixture
def consumer(tmp_path, env):
    root = tmp_path / "K"
    root.mkdir()
    run(["git", "init", "-q", "-b", "main"], root, env)
    run(["dvc", "init", "-q"], root, env)
    commit(root, env, "consumer")
    return root


def test_import_v1_then_update_to_v2(registry, consumer, proxy, env):
    owner, versions = registry
    since = len(proxy.requests)
    imported = run(["patchpack", "import", str(owner), "--rev", "v1"], consumer, env)
    first = _moved(proxy, since)
    assert "imported data/patches of" in imported.stdout and "verify " in imported.stdout
    assert f"match the md5 {versions['v1'][0]}" in imported.stdout, imported.stdout
    assert file_digests(consumer / "patches", "md5") == versions["v1"][1]
    record = yaml.safe_load((consumer / "patches.dvc").read_text())
    assert record["deps"][0]["repo"]["rev"] == "v1"
    info = run(["patchpack", "info", "patches"], consumer, env)
    assert "version      v1 of " in info.stdout, info.stdout

    since = len(proxy.requests)
    updated = run(["patchpack", "import", str(owner), "--rev", "v2"], consumer, env)
    moved = _moved(proxy, since)
    assert "patches: updated from" in updated.stdout, updated.stdout
    assert f"match the md5 {versions['v2'][0]}" in updated.stdout
    assert file_digests(consumer / "patches", "md5") == versions["v2"][1]
    # objects v1 lacks (a shard may move to another name with the same bytes: not new)
    old_objects = set(versions["v1"][1].values())
    new = {md5: rel for rel, md5 in versions["v2"][1].items() if md5 not in old_objects}
    new_bytes = sum((owner / "data" / "patches" / rel).stat().st_size for rel in new.values())
    full = _dataset_bytes(versions["v2"][1], owner)
    print(
        f"\nimport v1 moved {first:,} bytes; update v1 -> v2 (one image more: {len(new)} of "
        f"{len(versions['v2'][1])} files new, {new_bytes:,} bytes) moved {moved:,} bytes of a "
        f"{full:,}-byte dataset"
    )
    assert new_bytes <= moved < new_bytes + (full - new_bytes) / 2  # the new objects, not all

    # the baseline, in the same run: a consumer with an empty cache imports v2
    fresh = consumer.parent / "K2"
    fresh.mkdir()
    run(["git", "init", "-q", "-b", "main"], fresh, env)
    run(["dvc", "init", "-q"], fresh, env)
    since = len(proxy.requests)
    run(["patchpack", "import", str(owner), "--rev", "v2"], fresh, env)
    baseline = _moved(proxy, since)
    print(
        f"a fresh import of v2 moved {baseline:,} bytes: the update moved {moved / baseline:.2f}x"
    )
    assert moved < 0.75 * baseline
    same = run(["patchpack", "import", str(owner), "--rev", "v2"], consumer, env)
    assert "patches: already at" in same.stdout

    # DVC's own way back to v1, then patchpack's proof: verify compares with patches.dvc's md5
    run(["dvc", "update", "--rev", "v1", "patches.dvc"], consumer, env)
    verified = run(["patchpack", "verify", "patches"], consumer, env)
    assert f"md5 {versions['v1'][0]} that dvc.lock records" in verified.stdout, verified.stdout
    assert "version      v1 of " in run(["patchpack", "info", "patches"], consumer, env).stdout


def test_import_one_split(registry, consumer, env):
    owner, versions = registry
    imported = run(["patchpack", "import", str(owner), "--rev", "v1", "--split", "test",
                    "--out", "data/v1"], consumer, env)  # fmt: skip
    assert "(test): OK" in imported.stdout, imported.stdout
    got = file_digests(consumer / "data" / "v1", "md5")
    shards = {rel: md5 for rel, md5 in got.items() if not rel.endswith((".dvc", ".gitignore"))}
    assert shards and all(versions["v1"][1][rel] == md5 for rel, md5 in shards.items())
    assert {rel.split("/")[0] for rel in shards} <= {"manifest.json", *CARD_FILES, "test", "roi"}
    assert (consumer / "data" / "v1" / "test.dvc").is_file()
    updated = run(["patchpack", "import", str(owner), "--rev", "v2", "--split", "test",
                   "--out", "data/v1"], consumer, env)  # fmt: skip
    assert "(test): OK" in updated.stdout, updated.stdout


# --- bad input: one line, exit 2 ---------------------------------------------------------------


def _refused(args, cwd, env):
    done = run(args, cwd, env, ok=False)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    return line


def test_bad_revs_and_registries(registry, consumer, env, tmp_path):
    owner, _ = registry
    partner = clone(owner, tmp_path / "B", env)
    line = _refused(["patchpack", "pull", "--rev", "v9"], partner, env)
    assert "--rev v9: no such tag, branch or commit" in line and "v1" in line
    line = _refused(["patchpack", "pull", "--rev", "v0"], partner, env)
    assert "--rev v0: dvc.lock at" in line and "records no dataset folder data/patches" in line
    assert not [p for p in (partner / "data").iterdir() if "patches-" in p.name]  # nothing written

    line = _refused(["patchpack", "import", str(owner), "--rev", "v9"], consumer, env)
    assert "--rev v9: no such tag, branch or commit" in line
    line = _refused(["patchpack", "import", str(owner), "--rev", "v0"], consumer, env)
    assert "records no dataset folder data/patches" in line
    plain = tmp_path / "plain"
    plain.mkdir()
    line = _refused(["patchpack", "import", str(plain)], consumer, env)
    assert "not a git repository" in line
    run(["git", "init", "-q", "-b", "main"], plain, env)
    (plain / "README").write_text("no DVC here\n")
    commit(plain, env, "just git")
    line = _refused(["patchpack", "import", str(plain)], consumer, env)
    assert "not a DVC project" in line
    line = _refused(["patchpack", "import", str(owner), "--split", "tset"], consumer, env)
    assert "--split tset" in line and "test" in line
    assert not (consumer / "patches").exists()


def test_rev_options_that_do_not_go_together(tmp_path, env):
    for args, words in (
        (["--out", "x"], "--out goes with --rev"),
        (["--rev", "v1", "--rebuild"], "--rebuild rebuilds"),
    ):
        assert words in _refused(["patchpack", "pull", *args], tmp_path, env)


def test_out_holding_other_data_is_refused_untouched(registry, consumer, env, tmp_path):
    owner, _ = registry
    partner = clone(owner, tmp_path / "O", env)
    for root in (partner, consumer):
        (root / "mine").mkdir()
        (root / "mine" / "notes.txt").write_text("my own data\n")
    line = _refused(["patchpack", "pull", "--rev", "v1", "--out", "mine"], partner, env)
    assert "--out" in line and "holds other data" in line
    line = _refused(["patchpack", "import", str(owner), "--rev", "v1", "--out", "mine"],
                    consumer, env)  # fmt: skip
    assert "holds other data" in line
    for root in (partner, consumer):
        assert [p.name for p in (root / "mine").iterdir()] == ["notes.txt"]


def test_info_names_a_version_committed_with_dvc_add(env, tmp_path):
    """A dataset tracked by ``dvc add`` (its ``data/patches.dvc`` committed and tagged, no
    pipeline) is named by the tag whose ``.dvc`` file records its md5, from the project or from
    inside the folder; an edited copy is no committed version."""
    root = make_project(tmp_path / "P", env, per_class=2, per_image=10)
    (root / "dvc.yaml").unlink()
    run(["patchpack", "extract", "--out", "data/patches"], root, env)
    run(["dvc", "add", "-q", "data/patches"], root, env)
    commit(root, env, "dataset by dvc add")
    run(["git", "tag", "v1"], root, env)
    added = yaml.safe_load((root / "data" / "patches.dvc").read_text())["outs"][0]["md5"]
    info = run(["patchpack", "info"], root, env)
    assert "version      v1, HEAD (commit" in info.stdout, info.stdout
    assert f"data/patches.dvc records it, md5 {added})" in info.stdout, info.stdout
    inside = run(["patchpack", "info", "."], root / "data" / "patches", env)
    assert "version      v1, HEAD (commit" in inside.stdout, inside.stdout + inside.stderr
    (root / "data" / "patches" / "manifest.json").write_text(
        (root / "data" / "patches" / "manifest.json").read_text() + " "
    )
    edited = run(["patchpack", "info"], root, env, ok=False)
    assert "not a committed version" in edited.stdout, edited.stdout + edited.stderr
