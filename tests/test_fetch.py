"""Sources at a URL: listed and fetched from a real S3-protocol server on loopback (moto)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from patchpack.dataset.extract import extract
from patchpack.dataset.fetch import cache_root, is_url, list_files, local_copy
from patchpack.dataset.sources import SourceImage, catalog
from patchpack.errors import SourceError
from patchpack.params import Params, params_from_dict
from support.commands import file_digests
from support.images import make_folder, small_params, small_raw
from support.s3server import DUMMY_KEY, DUMMY_SECRET, REGION, MotoS3, moto_server

BUCKET = "patchpack-sources"


@pytest.fixture
def bucket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[MotoS3, Path]:
    """A local folder of images, uploaded under s3://patchpack-sources/<test>/images/."""
    server = moto_server()
    client = server.client()
    if BUCKET not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        server.create_bucket(BUCKET)
    images = make_folder(tmp_path / "images", classes=2, per_class=2)
    for path in sorted(images.rglob("*.png")):
        key = f"{tmp_path.name}/images/{path.relative_to(images).as_posix()}"
        client.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())
    client.put_object(Bucket=BUCKET, Key=f"{tmp_path.name}/images/.hidden/x.txt", Body=b"x")
    for name, value in {
        "AWS_ACCESS_KEY_ID": DUMMY_KEY,
        "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL_S3": server.endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "PATCHPACK_CACHE": str(tmp_path / "cache"),
    }.items():
        monkeypatch.setenv(name, value)
    return server, images


def url(tmp_path: Path) -> str:
    return f"s3://{BUCKET}/{tmp_path.name}/images"


def on_another_node(images: Path, tmp_path: Path) -> tuple[SourceImage, SourceImage]:
    """The first source as catalogued here, and as a node without the file sees it."""
    _, sources = catalog(images, max_megapixels=1)
    first = sources[0]
    remote = dataclasses.replace(
        first, path=tmp_path / "elsewhere" / "a.png", url=f"{url(tmp_path)}/{first.id}"
    )
    return first, remote


def at(location: str) -> Params:
    """SMALL params whose source.dir is ``location`` (a URL)."""
    raw = small_raw(Path("."))
    raw["source"]["dir"] = location
    return params_from_dict(raw)


def test_a_dataset_from_a_url_is_the_dataset_from_a_local_copy(
    tmp_path: Path, bucket: tuple[MotoS3, Path]
) -> None:
    _, images = bucket
    assert is_url(url(tmp_path)) and not is_url(str(images)) and not is_url("file:///x")
    assert [item.relative for item in list_files(url(tmp_path))] == sorted(
        path.relative_to(images).as_posix() for path in images.rglob("*.png")
    )
    local = extract(small_params(images), out=tmp_path / "local")
    remote = extract(at(url(tmp_path)), out=tmp_path / "remote")
    assert remote.fingerprint == local.fingerprint
    assert file_digests(tmp_path / "remote") == file_digests(tmp_path / "local")
    cached = sorted(path.name for path in cache_root().rglob("*.png"))
    assert cached == sorted(path.name for path in images.rglob("*.png"))
    parallel = extract(at(url(tmp_path)), out=tmp_path / "parallel", workers=2)
    assert parallel.fingerprint == local.fingerprint


def test_a_worker_without_the_file_fetches_it_and_checks_its_hash(
    tmp_path: Path, bucket: tuple[MotoS3, Path]
) -> None:
    server, images = bucket
    first, remote = on_another_node(images, tmp_path)
    here = local_copy(remote)  # another node: no such path, so it is fetched into its cache
    assert here.path.read_bytes() == first.path.read_bytes()
    assert here.path.is_relative_to(cache_root())
    server.client().put_object(
        Bucket=BUCKET, Key=f"{tmp_path.name}/images/{first.id}", Body=b"changed"
    )
    changed = dataclasses.replace(remote, sha256="0" * 64)
    with pytest.raises(SourceError, match=r"its bytes differ from those the catalog hashed"):
        local_copy(changed)


def test_a_missing_bucket_is_one_line(tmp_path: Path, bucket: tuple[MotoS3, Path]) -> None:
    with pytest.raises(SourceError, match=r"s3://no-such-bucket-here/x: cannot list the sources"):
        extract(at("s3://no-such-bucket-here/x"), out=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_an_unknown_protocol_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"nope://x/y: no file system for this URL"):
        extract(at("nope://x/y"), out=tmp_path / "o")


def put(server: MotoS3, tmp_path: Path, name: str, body: bytes) -> None:
    server.client().put_object(Bucket=BUCKET, Key=f"{tmp_path.name}/images/{name}", Body=body)


def test_folder_markers_are_skipped_and_odd_names_refused(
    tmp_path: Path, bucket: tuple[MotoS3, Path]
) -> None:
    server, images = bucket
    put(server, tmp_path, "class_0/", b"")  # what "Create folder" in the S3 console makes
    local = extract(small_params(images), out=tmp_path / "local")
    assert extract(at(url(tmp_path)), out=tmp_path / "remote").fingerprint == local.fingerprint
    put(server, tmp_path, "class_1//x.png", b"x")
    with pytest.raises(SourceError, match=r"class_1//x.png: not a usable file name"):
        extract(at(url(tmp_path)), out=tmp_path / "odd")


def test_a_non_image_is_refused_before_it_is_fetched(
    tmp_path: Path, bucket: tuple[MotoS3, Path]
) -> None:
    server, _ = bucket
    put(server, tmp_path, "class_0/notes.txt", b"x" * 1000)
    with pytest.raises(SourceError, match=rf"{url(tmp_path)}/class_0/notes.txt: not an image"):
        extract(at(url(tmp_path)), out=tmp_path / "out")
    assert not list(cache_root().rglob("notes.txt"))


def test_errors_about_a_source_name_its_url(tmp_path: Path, bucket: tuple[MotoS3, Path]) -> None:
    server, _ = bucket
    put(server, tmp_path, "class_0/broken.png", b"not a png at all")
    with pytest.raises(SourceError) as raised:
        extract(at(url(tmp_path)), out=tmp_path / "out")
    assert str(raised.value).startswith(f"{url(tmp_path)}/class_0/broken.png: not a readable image")
    assert "patchpack-sources-" not in str(raised.value)


def test_objects_are_fetched_again_only_when_they_change(
    tmp_path: Path, bucket: tuple[MotoS3, Path]
) -> None:
    server, images = bucket
    first = extract(at(url(tmp_path)), out=tmp_path / "a")
    blobs = {path: path.stat().st_mtime_ns for path in cache_root().rglob("*.png")}
    again = extract(at(url(tmp_path)), out=tmp_path / "b")  # same process: no stale listing
    assert again.fingerprint == first.fingerprint
    assert {path: path.stat().st_mtime_ns for path in cache_root().rglob("*.png")} == blobs
    flipped = images / "class_0" / "img_0.png"
    from PIL import Image

    with Image.open(flipped) as image:
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(tmp_path / "flipped.png")
    put(server, tmp_path, "class_0/img_0.png", (tmp_path / "flipped.png").read_bytes())
    changed = extract(at(url(tmp_path)), out=tmp_path / "c")
    assert changed.fingerprint != first.fingerprint


def test_a_corrupted_cached_copy_is_fetched_again(
    tmp_path: Path, bucket: tuple[MotoS3, Path]
) -> None:
    _, images = bucket
    first, remote = on_another_node(images, tmp_path)
    cached = local_copy(remote).path
    cached.write_bytes(b"corrupted on this node's disk")
    assert local_copy(remote).path.read_bytes() == first.path.read_bytes()


def test_a_relative_cache_folder_works(
    tmp_path: Path, bucket: tuple[MotoS3, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, images = bucket
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATCHPACK_CACHE", "relative-cache")
    local = extract(small_params(images), out=tmp_path / "local")
    assert extract(at(url(tmp_path)), out=tmp_path / "remote").fingerprint == local.fingerprint
    assert (tmp_path / "relative-cache").is_dir()
