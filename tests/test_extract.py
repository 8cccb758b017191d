from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from patchpack.audit.verify import verify
from patchpack.dataset.extract import extract
from patchpack.dataset.manifest import load_manifest
from patchpack.dataset.shards import read_shard
from patchpack.errors import OutputError, SourceError
from support.commands import PATCHPACK, file_digests, run_patchpack
from support.images import copy_reversed, make_folder, small_params, write_params

digests = file_digests
run_cli = run_patchpack


def test_layout_manifest_and_shard_contents(images: Path, tmp_path: Path) -> None:
    params = small_params(images)
    manifest = extract(params, out=tmp_path / "out")
    out = tmp_path / "out"
    assert manifest.format_version == 3
    assert manifest.class_names == ("class_0", "class_1", "class_2")
    assert manifest.counts["train"].per_class == {"class_0": 36, "class_1": 36, "class_2": 36}
    assert sum(manifest.counts[s].total for s in ("train", "val", "test")) == 6 * 30
    assert {"numpy", "pillow", "libjpeg", "h5py", "hdf5", "hdf5plugin", "zlib"} <= set(
        manifest.environment
    )
    assert str(images) not in (out / "manifest.json").read_text()
    text = (out / "manifest.json").read_text()
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=1, ensure_ascii=False) + "\n"
    assert load_manifest(out).to_json() == text  # the typed manifest round-trips byte for byte
    for entry in manifest.shards:
        data = read_shard(out / entry.path)
        assert data.images.dtype == np.uint8 and data.images.shape[1:] == (16, 16, 1)
        assert len(data) == entry.patches
        assert data.attrs["split"] == entry.split and data.attrs["format_version"] == 3
        keys = [(data.source_of(i), int(data.patch_index[i])) for i in range(len(data))]
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
        with h5py.File(out / entry.path) as h5:
            assert h5["images"].chunks == (min(16, len(data)), 16, 16, 1)
            assert h5["images"].compression is None and "32015" in h5["images"]._filters  # zstd
    assert verify(out).ok


def test_patch_pixels_are_the_source_pixels(images: Path, tmp_path: Path) -> None:
    from patchpack.dataset.sources import catalog, load_pixels

    extract(small_params(images), out=tmp_path / "out")
    manifest = load_manifest(tmp_path / "out")
    data = read_shard(tmp_path / "out" / manifest.shards[0].path)
    _, sources = catalog(images, max_megapixels=1)
    by_id = {s.id: s for s in sources}
    for row in (0, len(data) - 1):
        y, x = data.coords[row]
        pixels = load_pixels(by_id[data.source_of(row)], 1, 1)
        assert np.array_equal(data.images[row], pixels[y : y + 16, x : x + 16])


def test_byte_identical_across_processes_workers_and_listing_order(
    images: Path, tmp_path: Path
) -> None:
    """Two processes a second apart, 1 and 3 workers, a reversed copy of the sources: same bytes."""
    write_params(tmp_path / "params.yaml", images)
    first = run_cli("extract", "--out", "a", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    time.sleep(1.1)
    second = run_cli("extract", "--out", "b", "--workers", "3", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    reversed_copy = copy_reversed(images, tmp_path / "elsewhere" / "copy")
    os.utime(reversed_copy / "class_0" / "img_0.png", (1, 1))
    third = run_cli("extract", "--out", "c", "--source", str(reversed_copy), cwd=tmp_path)
    assert third.returncode == 0, third.stderr
    reference = digests(tmp_path / "a")
    assert len([p for p in reference if p.endswith(".h5")]) >= 4
    assert digests(tmp_path / "b") == reference
    assert digests(tmp_path / "c") == reference


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_compression_changes_bytes_not_content(
    images: Path, tmp_path: Path, compression: str
) -> None:
    zstd = extract(small_params(images), out=tmp_path / "zstd")
    other = extract(
        small_params(
            images, shards={"compression": compression, "level": 0 if compression == "none" else 4}
        ),
        out=tmp_path / compression,
    )
    assert other.fingerprint == zstd.fingerprint
    assert [e.content_sha256 for e in other.shards] == [e.content_sha256 for e in zstd.shards]
    assert [e.sha256 for e in other.shards] != [e.sha256 for e in zstd.shards]


def test_zstd_is_smaller_than_raw(images: Path, tmp_path: Path) -> None:
    none = extract(
        small_params(images, shards={"compression": "none", "level": 0}), out=tmp_path / "none"
    )
    extract(small_params(images), out=tmp_path / "zstd")
    size = lambda folder: sum((folder / e.path).stat().st_size for e in none.shards)  # noqa: E731
    assert size(tmp_path / "zstd") < size(tmp_path / "none")


def test_bad_source_leaves_the_previous_dataset_untouched(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    extract(small_params(images), out=out)
    before = digests(out)
    path = images / "class_2" / "img_1.png"
    path.write_bytes(path.read_bytes()[:700])  # header intact, pixel data truncated
    with pytest.raises(SourceError, match=r"img_1.png: corrupt or truncated image data"):
        extract(small_params(images), out=out)
    assert digests(out) == before
    assert verify(out).ok


def test_bad_input_writes_nothing(images: Path, tmp_path: Path) -> None:
    (images / "class_1" / "junk.txt").write_text("not an image")
    with pytest.raises(SourceError, match=r"junk.txt: not an image"):
        extract(small_params(images), out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.partial-*"))


def test_refuses_to_replace_a_folder_that_is_not_a_dataset(images: Path, tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(OutputError, match=r"thesis.tex, which is not part of a patchpack dataset"):
        extract(small_params(images), out=tmp_path / "mine")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_killed_run_is_rejected_and_the_next_run_finishes(tmp_path: Path) -> None:
    images = make_folder(tmp_path / "images", classes=4, per_class=6, size=(160, 200))
    write_params(
        tmp_path / "params.yaml", images, extract={"per_image": 200}, shards={"target_patches": 64}
    )
    reference = run_cli("extract", "--out", "ref", cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr
    process = subprocess.Popen([*PATCHPACK, "extract", "--out", "out"], cwd=tmp_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(tmp_path.glob(".out.partial-*/*/shard-*.h5")):
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert list(tmp_path.glob(".out.partial-*")), "the run was killed before it staged anything"
    assert not verify(tmp_path / "out").ok  # nothing, or an incomplete dataset, at the final path
    finished = run_cli("extract", "--out", "out", cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr
    assert digests(tmp_path / "out") == digests(tmp_path / "ref")
    assert not list(tmp_path.glob(".out.partial-*"))


def test_staged_shards_are_reused(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import patchpack.dataset.work as module

    calls: list[str] = []
    original = module.build_shard

    def failing(job: module.Job) -> object:
        calls.append(job.spec.path)
        if len(calls) == 3:
            raise SourceError("simulated failure")
        return original(job)

    monkeypatch.setattr(module, "build_shard", failing)
    with pytest.raises(SourceError, match="simulated"):
        extract(small_params(images), out=tmp_path / "out")
    calls.clear()
    monkeypatch.setattr(
        module, "build_shard", lambda job: calls.append(job.spec.path) or original(job)
    )
    manifest = extract(small_params(images), out=tmp_path / "out")
    assert len(calls) == len(manifest.shards) - 2  # the two completed shards were reused
    assert verify(tmp_path / "out").ok
