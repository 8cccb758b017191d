"""Labels from label rasters and GeoJSON annotations: correctness, determinism, hashes, bad input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from patchpack.audit.preview import contact_sheet, overlay
from patchpack.audit.rebuild import verify_rebuild
from patchpack.audit.verify import verify
from patchpack.dataset.extract import extract
from patchpack.dataset.io import file_sha256
from patchpack.dataset.manifest import load_manifest
from patchpack.dataset.shards import read_shard
from patchpack.errors import ConfigError, SourceError
from patchpack.params import params_from_dict
from patchpack.training.loader import open_dataset
from support.commands import file_digests, run_patchpack
from support.images import make_folder, small_params, small_raw
from support.labelled import CLASSES, SIDE, class_at, features, raster, write_labelled

PATCH = 16
WHOLE = {"mode": "image", "fractions": {"train": 1.0, "val": 0.0, "test": 0.0}}


def labelled_params(images: Path, folder: Path, **sections: dict[str, object]) -> dict[str, object]:
    """SMALL params drawing 200 patches of 16x16 from the labelled image, labels from ``folder``."""
    raw = small_raw(
        images,
        extract={"patch_size": PATCH, "per_image": 200, "min_std": 0.0},
        split={"block_size": 16},  # small blocks: every split gets some of each region
        labels={"from": "annotations", "dir": str(folder), "classes": CLASSES},
    )
    for name, update in sections.items():
        raw[name] = {**raw.get(name, {}), **update}
    return raw


def all_shards(folder: Path) -> list:
    return [read_shard(folder / entry.path) for entry in load_manifest(folder).shards]


def centres(data) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """Level-0 centre of each patch's centre pixel (row and column PATCH // 2)."""
    return data.coords[:, 0] + PATCH // 2 + 0.5, data.coords[:, 1] + PATCH // 2 + 0.5


# ------------------------------------------------------------------------------------------------
# correctness


@pytest.mark.parametrize("kind", ["annotations", "mask"])
def test_every_label_is_the_region_under_the_patch_centre(tmp_path: Path, kind: str) -> None:
    images, labels = write_labelled(tmp_path, kinds=(kind,))
    raw = labelled_params(images, labels, labels={"from": kind}, extract={"targets": "mask"})
    manifest = extract(params_from_dict(raw), out=tmp_path / "out")
    assert manifest.class_names == tuple(CLASSES)
    shards = all_shards(tmp_path / "out")
    assert sum(len(d) for d in shards) == 200
    for data in shards:
        cy, cx = centres(data)
        assert np.array_equal(data.labels, class_at(cy, cx) - 1)
        pixel = np.arange(PATCH) + 0.5
        ys = data.coords[:, 0, None, None] + pixel[None, :, None]
        xs = data.coords[:, 1, None, None] + pixel[None, None, :]
        assert np.array_equal(data.masks, class_at(ys, xs))  # the mask target, pixel by pixel
        assert (data.labels >= 0).all()  # unlabelled candidates were redrawn, never stored
    counts = manifest.counts["train"].per_class
    assert sum(counts.values()) == manifest.counts["train"].total and counts["tumour"] > 0
    assert verify(tmp_path / "out").ok


def test_a_coarse_raster_labels_by_its_own_pixels(tmp_path: Path) -> None:
    """A raster at 1/4 of the image's size: a patch takes the raster pixel under its centre."""
    images, labels = write_labelled(tmp_path, kinds=("mask",), downsample=4)
    manifest = extract(
        params_from_dict(labelled_params(images, labels, labels={"from": "mask"})),
        out=tmp_path / "out",
    )
    assert manifest.sources[0].labels == "scan/a.png"
    coarse = raster(4)
    for data in all_shards(tmp_path / "out"):
        cy, cx = centres(data)
        expected = coarse[(cy // 4).astype(int), (cx // 4).astype(int)].astype(np.int32) - 1
        assert np.array_equal(data.labels, expected)


def test_majority_labels_cover_at_least_min_fraction(tmp_path: Path) -> None:
    images, labels = write_labelled(tmp_path, kinds=("annotations", "mask"))
    fraction = 0.7
    for kind in ("annotations", "mask"):
        raw = labelled_params(
            images, labels, labels={"from": kind, "rule": "majority", "min_fraction": fraction}
        )
        extract(params_from_dict(raw), out=tmp_path / kind)
        for data in all_shards(tmp_path / kind):
            # 4 x 4 samples per pixel: the share of each class in each patch's footprint
            fine = (np.arange(PATCH * 4) + 0.5) / 4
            ys = data.coords[:, 0, None, None] + fine[None, :, None]
            xs = data.coords[:, 1, None, None] + fine[None, None, :]
            numbers = class_at(ys, xs).reshape(len(data), -1)
            shares = np.stack([(numbers == k).mean(axis=1) for k in range(1, 4)], axis=1)
            assert np.array_equal(data.labels, shares.argmax(axis=1))
            # annotations count area, rasters pixels: both agree with the samples to a few percent
            assert (shares[np.arange(len(data)), data.labels] >= fraction - 0.03).all()


def test_annotations_and_their_raster_give_the_same_dataset(tmp_path: Path) -> None:
    images, labels = write_labelled(tmp_path, kinds=("annotations", "mask"))
    for kind in ("annotations", "mask"):
        raw = labelled_params(images, labels, labels={"from": kind}, extract={"targets": "mask"})
        extract(params_from_dict(raw), out=tmp_path / kind)
    ours = {p: d for p, d in file_digests(tmp_path / "annotations").items() if p.endswith(".h5")}
    theirs = {p: d for p, d in file_digests(tmp_path / "mask").items() if p.endswith(".h5")}
    assert ours == theirs and len(ours) >= 3


def test_demo_slide_annotations_and_raster_agree(tmp_path: Path) -> None:
    """The demo slide's GeoJSON and its label raster label every patch alike."""
    from patchpack.dataset.sources import DEMO_CLASSES, export_demo_labels, export_demo_slide

    export_demo_slide(tmp_path / "slide", side=1536)
    written = export_demo_labels(tmp_path / "labels", side=1536)
    assert [p.name for p in written] == ["slide.geojson", "slide.png"]
    contents = []
    for kind in ("annotations", "mask"):
        raw = small_raw(
            tmp_path / "slide",
            extract={"patch_size": 32, "per_image": 300, "min_std": 2.0, "targets": "mask"},
            # a small slide: 15% of its blocks cannot hold all eight regions, so train takes all
            split={"block_size": 64, "fractions": {"train": 1.0, "val": 0.0, "test": 0.0}},
            labels={"from": kind, "dir": str(tmp_path / "labels"), "classes": list(DEMO_CLASSES)},
        )
        raw["source"].update(channels=3, level=1)
        manifest = extract(params_from_dict(raw), out=tmp_path / kind)
        contents.append([(e.path, e.content_sha256) for e in manifest.shards])
        present = [name for name, n in manifest.counts["train"].per_class.items() if n]
        assert len(present) == len(DEMO_CLASSES)  # every photograph's region is sampled
    assert contents[0] == contents[1]  # the fingerprints differ: it covers labels.from


def test_grid_sampling_takes_every_labelled_position(tmp_path: Path) -> None:
    images, labels = write_labelled(tmp_path)
    raw = labelled_params(
        images,
        labels,
        extract={"sampling": "grid", "per_image": None, "stride": 16, "min_std": 0},
        split={"mode": "image", "fractions": {"train": 1.0, "val": 0.0, "test": 0.0}},
    )
    manifest = extract(params_from_dict(raw), out=tmp_path / "out")
    corners = np.arange(0, SIDE - PATCH + 1, 16)
    cy, cx = np.meshgrid(corners + 8.5, corners + 8.5, indexing="ij")
    assert manifest.counts["train"].total == int((class_at(cy, cx) > 0).sum())


def test_roi_mask_keeps_patches_inside_the_labelled_area(tmp_path: Path) -> None:
    images, labels = write_labelled(tmp_path)
    raw = labelled_params(images, labels, extract={"roi": "mask", "min_roi_fraction": 1.0})
    manifest = extract(params_from_dict(raw), out=tmp_path / "out")
    record = manifest.sources[0]
    assert record.roi is not None and (tmp_path / "out" / record.roi).is_file()
    for data in all_shards(tmp_path / "out"):
        for (
            y,
            x,
        ) in data.coords.tolist():  # the whole patch lies in labelled area: its far corner too
            assert class_at(np.array([y + 0.5]), np.array([x + 0.5]))[0] > 0
            assert class_at(np.array([y + PATCH - 0.5]), np.array([x + PATCH - 0.5]))[0] > 0
    assert verify(tmp_path / "out").ok


def test_roi_mask_with_folder_labels(tmp_path: Path) -> None:
    """Labels from class folders, sampling only where a per-image ROI mask is set."""
    images = make_folder(tmp_path / "images", classes=2, per_class=1, size=(96, 128))
    rois = tmp_path / "rois"
    for source in sorted(images.rglob("*.png")):
        mask = np.zeros((96, 128), np.uint8)
        mask[:, :64] = 1  # the left half
        target = rois / source.relative_to(images)
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(target)
    params = small_params(
        images, extract={"roi": "mask", "min_roi_fraction": 1.0}, labels={"dir": str(rois)}
    )
    manifest = extract(params, out=tmp_path / "out")
    assert manifest.class_names == ("class_0", "class_1")
    for data in all_shards(tmp_path / "out"):
        assert (data.coords[:, 1] + 16 <= 64).all()
        assert set(data.labels.tolist()) <= {0, 1}


# ------------------------------------------------------------------------------------------------
# determinism, hashes, verify


def test_byte_identical_across_processes_and_workers(tmp_path: Path) -> None:
    images, labels = write_labelled(tmp_path, kinds=("annotations", "mask"))
    raw = labelled_params(images, labels, extract={"targets": "mask"})
    (tmp_path / "params.yaml").write_text(json.dumps(raw), encoding="utf-8")  # JSON is YAML
    first = run_patchpack("extract", "--out", "a", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    second = run_patchpack("extract", "--out", "b", "--workers", "2", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert file_digests(tmp_path / "a") == file_digests(tmp_path / "b")
    assert len([p for p in file_digests(tmp_path / "a") if p.endswith(".h5")]) >= 3


def test_manifest_records_each_label_file_hash(tmp_path: Path) -> None:
    images, labels = write_labelled(tmp_path)
    extract(params_from_dict(labelled_params(images, labels)), out=tmp_path / "out")
    source = json.loads((tmp_path / "out" / "manifest.json").read_text())["sources"][0]
    assert source["labels"] == "scan/a.geojson"
    assert source["labels_sha256"] == file_sha256(labels / "scan" / "a.geojson")
    params = json.loads((tmp_path / "out" / "manifest.json").read_text())["params"]
    assert params["labels"] == {
        "from": "annotations", "classes": CLASSES, "rule": "centre", "min_fraction": 0.5,
    }  # fmt: skip
    assert str(labels) not in (tmp_path / "out" / "manifest.json").read_text()


def test_folder_labelled_manifests_have_no_label_keys(images: Path, tmp_path: Path) -> None:
    """Datasets labelled by folders keep the manifest they had before label files existed."""
    extract(small_params(images), out=tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert "labels" not in manifest["params"] and "targets" not in manifest["params"]["extract"]
    assert all("labels" not in source for source in manifest["sources"])


def test_info_says_where_the_labels_come_from(tmp_path: Path) -> None:
    from patchpack.audit.info import info

    images, labels = write_labelled(tmp_path)
    raw = labelled_params(images, labels, labels={"rule": "majority"}, extract={"targets": "mask"})
    extract(params_from_dict(raw), out=tmp_path / "out")
    text = info(tmp_path / "out")
    assert (
        "labels       from annotations (1 label file, hashed), rule majority >= 0.5; mask " in text
    )
    assert "tumour" in text and "necrosis" in text


def test_a_changed_mask_value_fails_verify(tmp_path: Path) -> None:
    images, labels = write_labelled(tmp_path)
    raw = labelled_params(images, labels, extract={"targets": "mask"})
    manifest = extract(params_from_dict(raw), out=tmp_path / "out")
    path = tmp_path / "out" / manifest.shards[0].path
    with h5py.File(path, "r+") as h5:
        h5["masks"][0, 0, 0] = (int(h5["masks"][0, 0, 0]) + 1) % 4
    report = verify(tmp_path / "out")
    assert not report.ok
    assert any("different pixels: first differing patch is row 0" in p for p in report.problems)


def test_one_byte_in_an_annotation_file_fails_verify_rebuild(tmp_path: Path) -> None:
    """Two regions tile the image; one edge moves by a byte's change, and labels follow it."""
    images, labels = write_labelled(tmp_path)
    left = {**features()[0]}  # tumour, x < 128
    right = {**features()[1]}
    right["geometry"] = {
        "type": "Polygon",
        "coordinates": [[[128, 0], [256, 0], [256, 256], [128, 256], [128, 0]]],
    }
    document = {"type": "FeatureCollection", "features": [left, right]}
    path = labels / "scan" / "a.geojson"
    path.write_text(json.dumps(document), encoding="utf-8")
    # tumour listed last: where the regions overlap, tumour wins
    raw = labelled_params(images, labels, labels={"classes": ["stroma", "tumour"]})
    params = params_from_dict(raw)
    extract(params, out=tmp_path / "out")
    assert verify_rebuild(tmp_path / "out", params).ok
    text = path.read_text()
    # the tumour polygon's bottom right corner moves from x=128 to x=188: one byte, 2 -> 8
    changed = text.replace("[128, 256]", "[188, 256]", 1)
    assert sum(a != b for a, b in zip(text, changed, strict=True)) == 1
    path.write_text(changed, encoding="utf-8")
    report = verify_rebuild(tmp_path / "out", params)
    assert not report.ok
    assert any(
        p.startswith("different labels: the label file of scan/a.png") for p in report.problems
    )
    named = [p for p in report.problems if "rebuild gives different labels" in p]
    assert named and "the first patch whose label changed is row" in named[0]
    assert "'stroma' in the dataset, 'tumour' in the rebuild" in named[0]


def test_loader_yields_images_and_masks(tmp_path: Path) -> None:
    images, labels = write_labelled(tmp_path)
    raw = labelled_params(images, labels, extract={"targets": "mask"})
    extract(params_from_dict(raw), out=tmp_path / "out")
    stored = np.concatenate(
        [d.masks for d in all_shards(tmp_path / "out") if d.attrs["split"] == "train"]
    )
    with open_dataset(tmp_path / "out") as dataset:
        train = dataset.split("train")
        assert train.has_masks
        batches = list(train.batches(32, shuffle=False, workers=0))
        masks = np.concatenate([m for _, m in batches])
        assert masks.dtype == np.uint8 and masks.shape == (len(train), PATCH, PATCH)
        assert np.array_equal(masks, stored)
        _, first_labels = next(train.batches(32, shuffle=False, workers=0, targets="labels"))
        assert first_labels.dtype == np.int32 and first_labels.shape == (32,)
    with open_dataset(tmp_path / "out") as dataset, pytest.raises(ValueError, match="targets"):
        next(dataset.split("train").batches(8, targets="pixels"))


def test_preview_overlays_the_masks(tmp_path: Path) -> None:
    images = np.full((2, 4, 4, 1), 100, np.uint8)
    masks = np.zeros((2, 4, 4), np.uint8)
    masks[0, :2] = 1
    painted = overlay(images, masks)
    assert painted.shape == (2, 4, 4, 3)
    assert (painted[1] == 100).all() and (painted[0, 2:] == 100).all()  # unlabelled: unchanged
    assert not (painted[0, :2] == 100).all()
    images_dir, labels = write_labelled(tmp_path)
    raw = labelled_params(images_dir, labels, extract={"targets": "mask"})
    extract(params_from_dict(raw), out=tmp_path / "out")
    sheet = contact_sheet(tmp_path / "out", tmp_path / "sheet.png", per_cell=2)
    with Image.open(sheet) as image:
        assert image.mode == "RGB" and image.height > 3 * 32


# ------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"from": "annotations", "classes": ["a"]}, r"labels.from: annotations needs labels.dir"),
        ({"from": "mask", "dir": "x"}, r"needs labels.classes, a list of class names"),
        ({"from": "mask", "dir": "x", "classes": ["a", "a"]}, r"labels.classes names 'a' twice"),
        (
            {"from": "mask", "dir": "x", "classes": ["a", 3]},
            r"labels.classes\[1\] must be a non-empty",
        ),
        ({"from": "folder", "classes": ["a"]}, r"labels.classes applies to labels.from: mask"),
        ({"from": "paint"}, r"labels.from must be one of folder, mask, annotations"),
        ({"from": "mask", "dir": "x", "classes": ["a"], "min_fraction": 1.5}, r"at most 1"),
        ({"from": "mask", "dir": "x", "classes": ["a"], "rule": "mode"}, r"labels.rule must be"),
        ({"dir": "x"}, r"labels.dir is used by labels.from: mask or annotations"),
    ],
)
def test_bad_label_params(tmp_path: Path, labels: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        params_from_dict(small_raw(tmp_path, labels=labels))


def test_params_that_join_labels_and_extract(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"extract.targets: mask .* needs labels.from: mask"):
        params_from_dict(small_raw(tmp_path, extract={"targets": "mask"}))
    with pytest.raises(ConfigError, match=r"extract.roi: tissue\+mask needs labels.dir"):
        params_from_dict(small_raw(tmp_path, extract={"roi": "tissue+mask"}))
    with pytest.raises(ConfigError, match=r"extract.per_class balances classes of whole images"):
        params_from_dict(
            small_raw(
                tmp_path,
                extract={"per_image": None, "per_class": 10},
                labels={"from": "mask", "dir": "x", "classes": ["a"]},
            )
        )


def _feature(
    name: str | None = "tumour", ring: list[list[float]] | None = None
) -> dict[str, object]:
    ring = ring or [[0, 0], [64, 0], [64, 64], [0, 64], [0, 0]]
    properties = {} if name is None else {"classification": {"name": name}}
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": properties,
    }


def _collection(*items: dict[str, object]) -> str:
    return json.dumps({"type": "FeatureCollection", "features": list(items)})


BAD_ANNOTATIONS = {
    "not a collection": (json.dumps(_feature()), r"a\.geojson: not a GeoJSON FeatureCollection \(found 'Feature'\)"),
    "not JSON": ("{'type': 1", r"a\.geojson: not valid JSON \(line 1\)"),
    "no class": (_collection(_feature(), _feature(None)), r"a\.geojson: feature 1 has no class"),
    "unknown class": (
        _collection(_feature("fat")),
        r"a\.geojson: feature 0 has class 'fat', which is not in labels.classes \(tumour, stroma, necrosis\)",
    ),
    "outside": (
        _collection(_feature(), _feature(), _feature("stroma", [[200, 200], [300, 200], [300, 260], [200, 200]])),
        r"a\.geojson: feature 2: coordinates span x 200 to 300, y 200 to 260, outside the 256x256 image",
    ),
    "no coordinates": (
        _collection({**_feature(), "geometry": {"type": "Polygon"}}),
        r"a\.geojson: feature 0: unreadable Polygon coordinates \(KeyError: 'coordinates'\)",
    ),
    "a huge number": (
        _collection(_feature("tumour", [[0, 0], [10**400, 0], [5, 5], [0, 0]])),
        r"a\.geojson: feature 0: unreadable Polygon coordinates \(OverflowError",
    ),
    "NaN": (
        _collection(_feature()).replace("[64, 0]", "[NaN, 0]"),
        r"a\.geojson: feature 0: the Polygon has coordinates that are not finite numbers",
    ),
    "a point": (
        json.dumps({"type": "FeatureCollection", "features": [{**_feature(), "geometry": {"type": "Point", "coordinates": [3, 4]}}]}),
        r"a\.geojson: feature 0 is a Point geometry; label regions must be Polygon or MultiPolygon",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_ANNOTATIONS))
def test_bad_annotation_files(tmp_path: Path, case: str) -> None:
    text, message = BAD_ANNOTATIONS[case]
    images, labels = write_labelled(tmp_path)
    (labels / "scan" / "a.geojson").write_text(text, encoding="utf-8")
    with pytest.raises(SourceError, match=message):
        extract(params_from_dict(labelled_params(images, labels)), out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_invalid_geometry_is_repaired_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    images, labels = write_labelled(tmp_path)
    bowtie = _feature("tumour", [[0, 0], [128, 128], [128, 0], [0, 128], [0, 0]])
    (labels / "scan" / "a.geojson").write_text(_collection(bowtie), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="patchpack"):
        manifest = extract(
            params_from_dict(
                labelled_params(
                    images,
                    labels,
                    extract={"per_image": 50},
                    split=WHOLE,
                    labels={"classes": ["tumour"]},  # every listed class must be drawn
                )
            ),
            out=tmp_path / "out",
        )
    assert "repaired 1 invalid geometries with shapely's make_valid (features 0)" in caplog.text
    assert sum(manifest.counts[s].per_class["tumour"] for s in ("train", "val", "test")) == 50


@pytest.mark.parametrize(
    ("size", "value", "mode", "message"),
    [
        ((100, 100), 1, "P", r"label raster is 100x100, but its image scan/a.png is 256x256 .* not an integer ratio"),
        ((64, 128), 1, "P", r"label raster is 128x64, but its image scan/a.png is 256x256"),
        ((256, 256), 4, "P", r"value 4 at row 0, column 0 is not a class: labels.classes has 3"),
        ((256, 256), 1, "RGB", r"label raster is a RGB image; save class numbers as a palette"),
    ],
)  # fmt: skip
def test_bad_label_rasters(
    tmp_path: Path, size: tuple[int, int], value: int, mode: str, message: str
) -> None:
    images, labels = write_labelled(tmp_path, kinds=("mask",))
    values = np.full(size, value, np.uint8)
    Image.fromarray(values).convert(mode).save(labels / "scan" / "a.png")
    raw = labelled_params(images, labels, labels={"from": "mask"})
    with pytest.raises(SourceError, match=message):
        extract(params_from_dict(raw), out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_label_file_is_one_line_exit_2_and_nothing_written(tmp_path: Path) -> None:
    images, labels = write_labelled(tmp_path)
    (labels / "scan" / "a.geojson").unlink()
    raw = labelled_params(images, labels)
    (tmp_path / "params.yaml").write_text(json.dumps(raw), encoding="utf-8")
    result = run_patchpack("extract", "--out", "out", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "a.png: no annotation file for this image: expected" in lines[0]
    assert "scan/a.geojson" in lines[0]
    assert not (tmp_path / "out").exists()


def test_label_files_inside_the_source_folder_are_refused(tmp_path: Path) -> None:
    images, _ = write_labelled(tmp_path)
    raw = labelled_params(images, images / "scan")
    with pytest.raises(SourceError, match=r"labels.dir .* is inside source.dir .* read as images"):
        extract(params_from_dict(raw), out=tmp_path / "out")


def test_two_label_files_for_one_image_are_refused(tmp_path: Path) -> None:
    images, labels = write_labelled(tmp_path)
    (labels / "scan" / "a.json").write_text(_collection(_feature()), encoding="utf-8")
    with pytest.raises(SourceError, match=r"are both annotation files of scan/a.png"):
        extract(params_from_dict(labelled_params(images, labels)), out=tmp_path / "out")


def test_a_label_file_changed_after_the_catalog_is_refused_on_the_worker(tmp_path: Path) -> None:
    """Workers check each label file's sha256 before parsing it (a stale copy fails loudly)."""
    from patchpack.dataset.labels import attach_labels, files, open_labels
    from patchpack.dataset.sources import catalog

    images, labels = write_labelled(tmp_path)
    params = params_from_dict(labelled_params(images, labels))
    _, sources = catalog(images, max_megapixels=1, by_folder=False)
    (source,) = attach_labels(sources, params.labels, roi="all", max_megapixels=1)
    files._OPENED.labellers.clear()
    path = labels / "scan" / "a.geojson"
    path.write_text(path.read_text() + " ", encoding="utf-8")
    with pytest.raises(SourceError, match=r"its bytes differ from those the catalog hashed"):
        open_labels(source, params.labels, 1)


@pytest.mark.slow
def test_a_local_cluster_labels_like_one_process(tmp_path: Path) -> None:
    """Dask workers read the label files themselves (checking their sha256): same bytes."""
    from patchpack.dataset.extract import Engine

    images, labels = write_labelled(tmp_path)
    params = params_from_dict(labelled_params(images, labels, extract={"targets": "mask"}))
    extract(params, out=tmp_path / "one", workers=1)
    extract(params, out=tmp_path / "cluster", engine=Engine(cluster="local:2"))
    assert file_digests(tmp_path / "cluster") == file_digests(tmp_path / "one")


def test_only_the_image_suffix_is_replaced_in_label_names(tmp_path: Path) -> None:
    """scan/case.01.png takes scan/case.01.geojson, never scan/case.geojson."""
    images, labels = write_labelled(tmp_path)
    for name in ("case.01", "case.02"):
        (images / "scan" / "a.png").rename(
            images / "scan" / f"{name}.png"
        ) if name == "case.01" else None
    Image.open(images / "scan" / "case.01.png").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
        images / "scan" / "case.02.png"
    )
    (labels / "scan" / "a.geojson").rename(labels / "scan" / "case.geojson")
    with pytest.raises(SourceError, match=r"case\.01\.png: no annotation file .*case\.01\.geojson"):
        extract(params_from_dict(labelled_params(images, labels)), out=tmp_path / "out")
    for name in ("case.01", "case.02"):
        (labels / "scan" / f"{name}.geojson").write_text(_collection(_feature()), encoding="utf-8")
    only_tumour = labelled_params(images, labels, split=WHOLE, labels={"classes": ["tumour"]})
    manifest = extract(params_from_dict(only_tumour), out=tmp_path / "out")
    assert [(s.id, s.labels) for s in manifest.sources] == [
        ("scan/case.01.png", "scan/case.01.geojson"), ("scan/case.02.png", "scan/case.02.geojson"),
    ]  # fmt: skip


def test_regions_that_share_a_diagonal_edge_leave_no_pixel_unlabelled(tmp_path: Path) -> None:
    from patchpack.dataset.labels import attach_labels, open_labels
    from patchpack.dataset.sources import catalog

    images, labels = write_labelled(tmp_path)
    lower = _feature("tumour", [[0, 0], [256, 256], [0, 256], [0, 0]])  # y > x
    upper = _feature("stroma", [[0, 0], [256, 0], [256, 256], [0, 0]])  # y < x
    (labels / "scan" / "a.geojson").write_text(_collection(lower, upper), encoding="utf-8")
    raw = labelled_params(
        images,
        labels,
        extract={"targets": "mask"},
        split=WHOLE,
        labels={"classes": ["tumour", "stroma"]},
    )
    params = params_from_dict(raw)
    extract(params, out=tmp_path / "out")
    masks = np.concatenate([d.masks for d in all_shards(tmp_path / "out")])
    assert len(masks) == 200 and (masks > 0).all()  # pixel centres on y = x belong to one side
    _, sources = catalog(images, max_megapixels=1, by_folder=False)
    (source,) = attach_labels(sources, params.labels, roi="all", max_megapixels=1)
    corners = np.arange(0, 240, 7)
    on_edge = open_labels(source, params.labels, 1).labels(corners, corners, PATCH, 1.0)
    assert (on_edge == 0).all()  # a centre on the edge belongs to the region below it


def test_overlapping_parts_of_one_feature_keep_their_union(tmp_path: Path) -> None:
    images, labels = write_labelled(tmp_path)
    outer = [[0, 0], [200, 0], [200, 200], [0, 200], [0, 0]]
    inner = [[50, 50], [100, 50], [100, 100], [50, 100], [50, 50]]
    feature = {
        "type": "Feature",
        "geometry": {"type": "MultiPolygon", "coordinates": [[outer], [inner]]},
        "properties": {"classification": {"name": "tumour"}},
    }
    (labels / "scan" / "a.geojson").write_text(_collection(feature), encoding="utf-8")
    raw = labelled_params(
        images, labels, extract={"targets": "mask"}, split=WHOLE, labels={"classes": ["tumour"]}
    )
    extract(params_from_dict(raw), out=tmp_path / "out")
    shards = all_shards(tmp_path / "out")
    assert sum(len(d) for d in shards) == 200
    for data in shards:
        cy, cx = centres(data)
        assert ((cy < 200) & (cx < 200)).all()
        inner = (cy > 50) & (cy < 100) & (cx > 50) & (cx < 100)
        assert (data.labels[inner] == 0).all()  # the inner square is labelled, not cut out
    assert any(((d.coords[:, 0] + 8 > 50) & (d.coords[:, 0] + 8 < 100) & (d.coords[:, 1] + 8 > 50)
                & (d.coords[:, 1] + 8 < 100)).any() for d in shards)  # fmt: skip


@pytest.mark.parametrize("roi", ["all", "mask"])
def test_annotations_and_a_level_0_raster_agree_on_a_large_image(tmp_path: Path, roi: str) -> None:
    """A 1,280-pixel image: the ROI mask is coarser than a pixel (5 pixels a cell) and still agrees."""
    images, labels = write_labelled(tmp_path, kinds=("annotations", "mask"), scale=5)
    prints = []
    for kind in ("annotations", "mask"):
        raw = labelled_params(
            images, labels, labels={"from": kind}, extract={"roi": roi, "min_roi_fraction": 1.0}
        )
        shards = extract(params_from_dict(raw), out=tmp_path / kind).shards
        prints.append([(e.path, e.content_sha256) for e in shards])
        roi_files = sorted((tmp_path / kind).glob("roi/*.png"))
        assert len(roi_files) == (roi == "mask")
    assert prints[0] == prints[1]
    if roi == "mask":
        assert file_sha256(next((tmp_path / "annotations").glob("roi/*.png"))) == file_sha256(
            next((tmp_path / "mask").glob("roi/*.png"))
        )


def test_verify_rebuild_takes_the_labels_folder_from_the_command_line(tmp_path: Path) -> None:
    images, labels = write_labelled(tmp_path)
    raw = labelled_params(images, labels)
    extract(params_from_dict(raw), out=tmp_path / "out")
    plain = {key: value for key, value in raw.items() if key != "labels"}
    (tmp_path / "plain.yaml").write_text(json.dumps(plain), encoding="utf-8")
    args = ("verify", "out", "--rebuild", "--params", "plain.yaml", "--no-lock")
    refused = run_patchpack(*args, cwd=tmp_path)
    assert refused.returncode == 2
    assert (
        "labels.from: annotations reads label files, but no labels folder is given"
        in refused.stderr
    )
    done = run_patchpack(*args, "--labels", str(labels), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rebuild reproduces fingerprint" in done.stdout


def test_label_raster_guards(tmp_path: Path) -> None:
    from patchpack.dataset.labels import read_raster

    images, labels = write_labelled(tmp_path, kinds=("mask",))
    with pytest.raises(SourceError, match=r"label raster is 256x256, above source.max_megapixels"):
        read_raster(labels / "scan" / "a.png", 0.01)
    Image.fromarray(raster()).convert("L").save(labels / "scan" / "a.png", format="JPEG")
    raw = labelled_params(images, labels, labels={"from": "mask"})
    with pytest.raises(
        SourceError, match=r"label raster is JPEG, not PNG; save class numbers losslessly"
    ):
        extract(params_from_dict(raw), out=tmp_path / "out")


def test_a_16_bit_roi_mask_counts_every_non_zero_pixel(tmp_path: Path) -> None:
    images = make_folder(tmp_path / "images", classes=1, per_class=1, size=(96, 128))
    mask = np.zeros((96, 128), np.uint16)
    mask[:, :64] = 65535
    target = tmp_path / "rois" / "class_0" / "img_0.png"
    target.parent.mkdir(parents=True)
    Image.fromarray(mask).save(target)
    params = small_params(
        images,
        extract={"roi": "mask", "min_roi_fraction": 1.0},
        labels={"dir": str(tmp_path / "rois")},
    )
    extract(params, out=tmp_path / "out")
    for data in all_shards(tmp_path / "out"):
        assert (data.coords[:, 1] + 16 <= 64).all()


def test_annotation_datasets_record_shapely_and_geos(tmp_path: Path) -> None:
    import shapely

    images, labels = write_labelled(tmp_path, kinds=("annotations", "mask"))
    annotated = extract(params_from_dict(labelled_params(images, labels)), out=tmp_path / "a")
    assert annotated.environment["geos"] == shapely.geos_version_string
    rastered = extract(
        params_from_dict(labelled_params(images, labels, labels={"from": "mask"})),
        out=tmp_path / "m",
    )
    assert "geos" not in rastered.environment


def test_demo_labels_into_a_used_folder_write_nothing(tmp_path: Path) -> None:
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "mine.txt").write_text("keep", encoding="utf-8")
    done = run_patchpack(
        "sources", "--slide", "--side", "1536", "--out", "slide", "--labels", "labels", cwd=tmp_path
    )
    assert done.returncode == 2 and "holds more than the demo labels" in done.stderr
    assert not (tmp_path / "slide").exists()


def test_qupath_detections_and_cells_are_not_label_regions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """QuPath exports detections and cells beside annotations: only the annotations label patches."""
    images, labels = write_labelled(tmp_path)
    path = labels / "scan" / "a.geojson"
    document = json.loads(path.read_text(encoding="utf-8"))
    square = [[0, 0], [64, 0], [64, 64], [0, 64], [0, 0]]  # inside the tumour half
    for kind, name in (("detection", "necrosis"), ("cell", "stroma")):
        feature = _feature(name, square)
        feature["properties"]["objectType"] = kind  # type: ignore[index]
        document["features"].append(feature)
    path.write_text(json.dumps(document), encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="patchpack"):
        extract(
            params_from_dict(labelled_params(images, labels, split=WHOLE)), out=tmp_path / "out"
        )
    assert "a.geojson: skipped 1 cell object, 1 detection object" in caplog.text
    inside = 0
    for data in all_shards(tmp_path / "out"):
        cy, cx = centres(data)
        assert np.array_equal(data.labels, class_at(cy, cx) - 1)  # as if only annotations
        inside += int(((cy < 64) & (cx < 64)).sum())
    assert inside > 0  # patches a detection or cell would have relabelled
