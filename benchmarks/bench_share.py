"""Share a dataset through DVC: patchpack shards vs one PNG file per patch.

In one run against a loopback S3 server (moto in server mode, from tests/support/s3server.py), the same
patches are tracked twice with ``dvc add`` -- once as patchpack's HDF5 shards, once as one PNG per
patch -- and each is timed through ``dvc push`` to an empty prefix and ``dvc pull`` into a project with
an empty cache. Hashing (``dvc add``) is not timed: it happens once, on the owner's machine.

Usage::

    python benchmarks/bench_share.py                      # the demo, 800 patches per image (6400)
    python benchmarks/bench_share.py --per-image 400      # params.yaml's value: 3200 patches
    python benchmarks/bench_share.py --data data/patches  # an extracted dataset
    python benchmarks/bench_share.py --stream             # reading without pulling (below)

Prints both times per direction, the totals and the ratio (PNG time / shard time). When it extracts
the demo itself, it then adds one image to one class (a mirrored copy of one photograph), extracts
again, pushes, and counts the shards whose sha256 is new and the objects and bytes ``dvc push`` uploaded.

``--stream`` measures reading without pulling instead, in one run, through a byte-counting proxy in
front of the loopback server: time to the first training batch (a fresh process: import, open,
first batch) when ``open_dataset(..., remote=True)`` streams the shards, against ``dvc pull`` of
the whole dataset followed by the same first batch from the pulled folder; then the bytes moved for
one epoch of the train split, streamed, against the split's and the dataset's bytes. Each streamed
read starts from an empty shard cache. It runs with the default shuffle buffer (the first batch
needs every shard of the first group) and with ``--stream-buffer`` patches (default 512).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from _harness import benchmark, folder_bytes, patchpack, ratio, run_fresh, table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from patchpack.dataset.manifest import load_manifest  # noqa: E402
from patchpack.dataset.shards import read_shard  # noqa: E402
from support.s3server import (  # noqa: E402  (a test helper, found via sys.path)
    CountingProxy,
    MotoS3,
    moto_server,
    subprocess_env,
)

# Run in a fresh process: open the dataset (pulled, or on its remote), time the first batch of a
# train epoch and the whole epoch from the process's start; print them as JSON.
FIRST_BATCH = """
import json, sys, time
start = time.perf_counter()
import patchpack
mode, buffer, cache = sys.argv[1:4]
where = {} if mode == "pulled" else {"remote": True, "cache_dir": cache}
options = {} if buffer == "default" else {"shuffle_buffer": int(buffer)}
with patchpack.open_dataset("data/patches", **where) as dataset:
    batches = dataset.split("train").batches(64, seed=0, **options)
    next(batches)
    first = time.perf_counter() - start
    count = 1 + sum(1 for _ in batches)
print(json.dumps({"first_s": first, "epoch_s": time.perf_counter() - start, "batches": count}))
"""


def extract_into(work: Path, out: Path, env: dict[str, str]) -> None:
    """Run the extract stage on ``work/demo`` with ``work/params.yaml``, into ``out``."""
    options = ["--params", "params.yaml", "--source", str(work / "demo"), "--out", str(out)]
    patchpack("extract", *options, cwd=work, env=env)


def extract_demo(work: Path, env: dict[str, str], per_image: int) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["extract"]["per_image"] = per_image
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    patchpack("sources", "--out", str(work / "demo"), cwd=work, env=env)
    out = work / "patches"
    extract_into(work, out, env)
    return out


def write_pngs(dataset: Path, out: Path) -> int:
    """One PNG per patch, ``<split>/<class>/<shard>-<row>.png``; returns the number written."""
    manifest = load_manifest(dataset)
    names = manifest.class_names
    count = 0
    for entry in manifest.shards:
        data = read_shard(dataset / entry.path)
        stem = Path(entry.path).stem
        for row, (pixels, label) in enumerate(zip(data.images, data.labels, strict=True)):
            folder = out / entry.split / names[int(label)]
            folder.mkdir(parents=True, exist_ok=True)
            image = pixels[..., 0] if pixels.shape[-1] == 1 else pixels
            Image.fromarray(np.ascontiguousarray(image)).save(folder / f"{stem}-{row:05d}.png")
            count += 1
    return count


def share(
    name: str, folder: Path, work: Path, env: dict[str, str], endpoint: str, bucket: str
) -> dict[str, float]:
    """dvc add + push from an owner project, dvc pull into a fresh clone; returns the timings."""
    owner = work / f"{name}-owner"
    owner.mkdir()
    for args in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        run_fresh(args, owner, env)
    shutil.copytree(folder, owner / "data")
    run_fresh(["dvc", "add", "data"], owner, env)
    remote = ["s3", f"s3://{bucket}/{name}", "--endpoint-url", endpoint]
    patchpack("remote", *remote, cwd=owner, env=env)
    push = run_fresh(["dvc", "push"], owner, env).seconds
    run_fresh(["git", "add", "-A"], owner, env)
    run_fresh(["git", "commit", "-q", "-m", name], owner, env)
    partner = work / f"{name}-partner"
    run_fresh(["git", "clone", "-q", str(owner), str(partner)], work, env)
    pull = run_fresh(["dvc", "pull"], partner, env).seconds
    pulled = folder_bytes(partner / "data")
    return {"push_s": push, "pull_s": pull, "files": pulled.files, "bytes": pulled.bytes}


def add_one_image(
    work: Path, owner: Path, env: dict[str, str], server: MotoS3, bucket: str
) -> dict[str, float]:
    """Add one image to one demo class, re-extract into the shard owner's ``data``, push the change."""
    before_shards = {s.sha256 for s in load_manifest(owner / "data").shards}
    before = server.objects(bucket, "shards/")
    source = sorted((work / "demo").glob("brick/*"))[0]
    with Image.open(source) as image:
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
            source.with_name("brick-mirrored.png")
        )
    extract_into(work, owner / "data", env)
    run_fresh(["dvc", "add", "data"], owner, env)
    push = run_fresh(["dvc", "push"], owner, env).seconds
    after_shards = {s.sha256 for s in load_manifest(owner / "data").shards}
    after = server.objects(bucket, "shards/")
    uploaded = {key: size for key, size in after.items() if key not in before}
    return {
        "shards_before": len(before_shards),
        "shards_after": len(after_shards),
        "shards_new": len(after_shards - before_shards),
        "objects_uploaded": len(uploaded),
        "bytes_uploaded": sum(uploaded.values()),
        "bytes_total": sum(size for key, size in after.items() if not key.endswith(".dir")),
        "push_s": push,
    }


def measure(data: Path | None, per_image: int) -> dict[str, object]:
    """Share the dataset both ways (extracting the demo without ``data``); print and return the figures."""
    server = moto_server()
    bucket = "patchpack-bench"
    server.create_bucket(bucket)
    with tempfile.TemporaryDirectory(prefix="bench-share-") as tmp:
        work = Path(tmp)
        env = subprocess_env(work / "home")
        env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "bench"
        dataset = data.resolve() if data else extract_demo(work, env, per_image)
        pngs = work / "pngs"
        patches = write_pngs(dataset, pngs)
        shards = share("shards", dataset, work, env, server.endpoint, bucket)
        per_patch = share("pngs", pngs, work, env, server.endpoint, bucket)
        delta = None if data else add_one_image(work, work / "shards-owner", env, server, bucket)

    total_shards = shards["push_s"] + shards["pull_s"]
    total_pngs = per_patch["push_s"] + per_patch["pull_s"]
    figures = {
        "patches": patches,
        "shards": shards,
        "pngs": per_patch,
        "ratio_push": per_patch["push_s"] / shards["push_s"],
        "ratio_pull": per_patch["pull_s"] / shards["pull_s"],
        "ratio_total": total_pngs / total_shards,
        "cpus": os.cpu_count(),
        "add_one_image": delta,
    }
    print(f"{patches} patches, loopback S3 (moto), {os.cpu_count()} CPUs")
    rows = [
        (
            label,
            row["files"],
            f"{row['bytes'] / 1e6:.2f}",
            f"{row['push_s']:.2f}",
            f"{row['pull_s']:.2f}",
            f"{row['push_s'] + row['pull_s']:.2f}",
        )
        for label, row in (("shards", shards), ("pngs", per_patch))
    ]
    print(table(rows, ("layout", "files", "MB", "push s", "pull s", "total s")))
    print(
        f"shards are {ratio(total_pngs, total_shards, 1)} faster to share "
        f"(push {ratio(per_patch['push_s'], shards['push_s'], 1)}, "
        f"pull {ratio(per_patch['pull_s'], shards['pull_s'], 1)})"
    )
    if delta is not None:
        print(
            f"adding one image: {delta['shards_new']} of {delta['shards_after']} shards new, "
            f"dvc push uploaded {delta['objects_uploaded']} objects, {delta['bytes_uploaded'] / 1e6:.2f} "
            f"of {delta['bytes_total'] / 1e6:.2f} MB ({100 * delta['bytes_uploaded'] / delta['bytes_total']:.0f}%)"
        )
    return figures


def first_batch(partner: Path, env: dict[str, str], mode: str, buffer: str) -> dict[str, float]:
    """Time the first batch (and the epoch) of the train split in a fresh process."""
    import json
    import uuid

    cache = partner.parent / f"cache-{uuid.uuid4().hex[:8]}"
    done = run_fresh([sys.executable, "-c", FIRST_BATCH, mode, buffer, str(cache)], partner, env)
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def stream_owner(work: Path, env: dict[str, str], endpoint: str, per_image: int) -> Path:
    """A DVC project holding the extracted demo in ``data/patches`` (``dvc add``), pushed."""
    import uuid

    dataset = extract_demo(work, env, per_image)
    owner = work / "stream-owner"
    owner.mkdir()
    for args in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        run_fresh(args, owner, env)
    (owner / "data").mkdir()
    shutil.copytree(dataset, owner / "data" / "patches")
    run_fresh(["dvc", "add", "data/patches"], owner, env)
    bucket = f"patchpack-stream-{uuid.uuid4().hex[:8]}"
    remote = ["s3", f"s3://{bucket}/stream", "--endpoint-url", endpoint, "--create-bucket"]
    patchpack("remote", *remote, cwd=owner, env=env)
    run_fresh(["dvc", "push"], owner, env)
    run_fresh(["git", "add", "-A"], owner, env)
    run_fresh(["git", "commit", "-q", "-m", "dataset"], owner, env)
    return owner


def measure_stream(per_image: int, buffer: int) -> dict[str, object]:
    """Streamed first batch against pull + first batch, and the bytes of one streamed epoch."""
    server = moto_server()
    with (
        tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp,
        CountingProxy(server.endpoint) as proxy,
    ):
        work = Path(tmp)
        env = subprocess_env(work / "home")
        owner = stream_owner(work, env, server.endpoint, per_image)
        manifest = load_manifest(owner / "data" / "patches")
        sizes = {
            e.path: (owner / "data" / "patches" / e.path).stat().st_size for e in manifest.shards
        }

        def partner(name: str) -> Path:
            target = work / name
            run_fresh(["git", "clone", "-q", str(owner), str(target)], work, env)
            modify = ["dvc", "remote", "modify", "--local", "storage", "endpointurl"]
            run_fresh([*modify, proxy.endpoint], target, env)
            return target

        def moved(since: int) -> int:
            return sum(size for method, _, size, _ in proxy.requests[since:] if method == "GET")

        pulled = partner("pulled")
        mark = len(proxy.requests)
        pull_s = run_fresh(["dvc", "pull"], pulled, env).seconds
        pull_bytes = moved(mark)
        rows = {"pulled": first_batch(pulled, env, "pulled", "default")}
        rows["pulled"].update(pull_s=pull_s, bytes=pull_bytes)
        streamed = partner("streamed")
        for label, size in (("streamed", "default"), (f"streamed, buffer {buffer}", str(buffer))):
            mark = len(proxy.requests)
            rows[label] = first_batch(streamed, env, "remote", size)
            rows[label].update(pull_s=0.0, bytes=moved(mark))
    train = sum(size for path, size in sizes.items() if path.startswith("train/"))
    print(
        f"{sum(e.patches for e in manifest.shards)} patches in {len(sizes)} shards "
        f"({sum(sizes.values()) / 1e6:.2f} MB; train {train / 1e6:.2f} MB), loopback S3 (moto) "
        f"behind a counting proxy, {os.cpu_count()} CPUs"
    )
    base = rows["pulled"]["pull_s"] + rows["pulled"]["first_s"]
    print(
        table(
            [
                (
                    label,
                    f"{row['pull_s']:.2f}",
                    f"{row['pull_s'] + row['first_s']:.2f}",
                    ratio(base, row["pull_s"] + row["first_s"], 1),
                    f"{row['epoch_s']:.2f}",
                    f"{row['bytes'] / 1e6:.2f}",
                )
                for label, row in rows.items()
            ],
            ("way", "pull s", "first batch s", "vs pull", "epoch s", "MB moved"),
        )
    )
    print(
        "first batch s counts from the start of the pull (pulled) or of the process (streamed); "
        "MB moved: everything the proxy served (the pull: the whole dataset; streamed: listing, "
        "manifest and the train split's shards for one epoch)"
    )
    return {"rows": rows, "dataset_bytes": sum(sizes.values()), "train_bytes": train}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, help="an extracted dataset folder (default: extract the demo)"
    )
    parser.add_argument(
        "--per-image",
        type=int,
        default=800,
        help="patches per demo image (default: 800, 6400 patches)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument(
        "--stream", action="store_true", help="measure reading without pulling instead"
    )
    parser.add_argument(
        "--stream-buffer",
        type=int,
        default=512,
        help="with --stream: the smaller shuffle buffer also measured (patches, default 512)",
    )
    args = parser.parse_args()
    if args.stream:
        benchmark(lambda: measure_stream(args.per_image, args.stream_buffer), args.json)
        return
    benchmark(lambda: measure(args.data, args.per_image), args.json)


if __name__ == "__main__":
    main()
