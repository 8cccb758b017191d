"""The dataset card: extract writes README.md, croissant.json and index.csv into the dataset, with
the same bytes at any worker count; mlcroissant validates the Croissant file and reads the patch
records from the index; verify regenerates the three and names what differs; `patchpack card`
writes them again, and refuses a folder that is not a dataset."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from patchpack.audit.verify import verify
from patchpack.cli import main
from patchpack.dataset.card import CARD_FILES, CARD_NAME, COLUMNS, CROISSANT_NAME, INDEX_NAME
from patchpack.dataset.extract import extract
from patchpack.dataset.manifest import load_manifest
from patchpack.dataset.shards import read_shard
from patchpack.errors import OutputError
from support.images import small_params

CARD = {
    "name": "textures-demo",
    "license": "CC-BY-4.0",
    "citation": "@misc{textures, title={Textures}, year={2026}}",
    "url": "https://example.org/textures.git",
}

# rdflib 7.x, under mlcroissant 1.1, warns about its own deprecated class
RDFLIB = pytest.mark.filterwarnings("ignore:ConjunctiveGraph is deprecated:DeprecationWarning")


@pytest.fixture
def dataset(images: Path, tmp_path: Path) -> Path:
    extract(small_params(images, card=CARD), out=tmp_path / "data")
    return tmp_path / "data"


def card_bytes(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in CARD_FILES}


def test_extract_writes_the_card_files_the_same_at_any_worker_count(
    images: Path, tmp_path: Path
) -> None:
    params = small_params(images, card=CARD)
    one = extract(params, out=tmp_path / "one", workers=1)
    two = extract(params, out=tmp_path / "two", workers=2)
    assert one.fingerprint == two.fingerprint
    first, second = card_bytes(tmp_path / "one"), card_bytes(tmp_path / "two")
    assert first == second
    for name, data in first.items():
        assert str(tmp_path).encode() not in data, name  # no absolute path
        assert str(images).encode() not in data, name
    # another card text changes the card, not the shards
    other = extract(small_params(images, card={**CARD, "license": "MIT"}), out=tmp_path / "mit")
    assert [e.sha256 for e in other.shards] == [e.sha256 for e in one.shards]
    assert other.fingerprint == one.fingerprint  # the fingerprint covers no card words
    assert (tmp_path / "mit" / CARD_NAME).read_bytes() != first[CARD_NAME]
    assert b"MIT" in (tmp_path / "mit" / CROISSANT_NAME).read_bytes()


def test_extract_replaces_a_dataset_with_its_card_but_not_a_folder_of_a_readme(
    images: Path, dataset: Path, tmp_path: Path
) -> None:
    extract(small_params(images, card={**CARD, "license": "MIT"}), out=dataset)
    assert b"MIT" in (dataset / CARD_NAME).read_bytes() and verify(dataset).ok
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / CARD_NAME).write_text("my notes\n", encoding="utf-8")
    with pytest.raises(OutputError, match=r"output folder holds README\.md"):
        extract(small_params(images), out=mine)
    assert (mine / CARD_NAME).read_text(encoding="utf-8") == "my notes\n"


def test_the_card_says_what_the_dataset_is(dataset: Path) -> None:
    manifest = load_manifest(dataset)
    text = (dataset / CARD_NAME).read_text(encoding="utf-8")
    assert text.startswith("# textures-demo\n")
    assert manifest.fingerprint in text
    assert CARD["license"] in text and CARD["citation"] in text and CARD["url"] in text
    for name in manifest.class_names:
        per = [manifest.counts[split].per_class[name] for split in ("train", "val", "test")]
        assert f"| {name} | {per[0]} | {per[1]} | {per[2]} | {sum(per)} |" in text
    assert f'"seed": {manifest.params.seed}' in text
    assert f"| h5py | {manifest.environment['h5py']} |" in text
    assert "patchpack verify" in text and "dvc pull" in text


@RDFLIB
def test_the_loading_block_of_the_card_runs_in_the_dataset_folder(
    dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlcroissant")
    (code,) = re.findall(r"```python\n(.*?)```", (dataset / CARD_NAME).read_text("utf-8"), re.S)
    monkeypatch.chdir(dataset)
    namespace: dict[str, object] = {}
    exec(compile(code, CARD_NAME, "exec"), namespace)
    patches = list(namespace["patches"])  # type: ignore[call-overload]
    total = sum(entry.patches for entry in load_manifest(dataset).shards)
    assert len(patches) == len(namespace["index"]) == total  # type: ignore[arg-type]


@RDFLIB
def test_mlcroissant_validates_the_file_and_reads_every_patch_record(dataset: Path) -> None:
    mlc = pytest.importorskip("mlcroissant")
    manifest = load_manifest(dataset)
    document = json.loads((dataset / CROISSANT_NAME).read_text(encoding="utf-8"))
    shas = {item["contentUrl"]: item["sha256"] for item in document["distribution"]}
    for entry in manifest.shards:
        assert shas[entry.path] == entry.sha256
    for name in ("manifest.json", INDEX_NAME):
        assert shas[name] == hashlib.sha256((dataset / name).read_bytes()).hexdigest()

    croissant = mlc.Dataset(jsonld=str(dataset / CROISSANT_NAME))
    issues = croissant.metadata.ctx.issues
    assert not issues.errors
    # only what a deterministic file leaves out on purpose: no publication date, no version
    assert {w.split('"')[1].rsplit("/", 1)[1] for w in issues.warnings} <= {
        "datePublished",
        "version",
    }
    assert croissant.metadata.license == [CARD["license"]]
    records = list(croissant.records("patches"))
    assert len(records) == sum(entry.patches for entry in manifest.shards)
    with open(dataset / INDEX_NAME, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for record, row in zip(records, rows, strict=True):
        assert record["patches/shard"].decode() == row["shard"]
        assert int(record["patches/row"]) == int(row["row"])
        assert record["patches/class_name"].decode() == row["class_name"]
        assert int(record["patches/y"]) == int(row["y"])
    classes = [record["classes/name"] for record in croissant.records("classes")]
    assert [name.decode() if isinstance(name, bytes) else name for name in classes] == list(
        manifest.class_names
    )


def test_verify_passes_a_clean_card_and_notes_it(dataset: Path) -> None:
    report = verify(dataset)
    assert report.ok, report.render()
    assert "dataset card (README.md, croissant.json, index.csv) matches" in report.notes


@pytest.mark.parametrize(
    ("name", "edit", "expected"),
    [
        (CARD_NAME, lambda b: b.replace(b"CC-BY-4.0", b"CC0-1.0"), "README.md: differs from"),
        (
            CROISSANT_NAME,
            lambda b: b.replace(b"textures-demo", b"other"),
            "croissant.json: differs",
        ),
        (
            INDEX_NAME,
            lambda b: b.replace(b",class_1,", b",class_2,", 1),
            "has class_name 'class_2'",
        ),
        (INDEX_NAME, lambda b: b.rsplit(b"\n", 2)[0] + b"\n", "ends after"),
        (INDEX_NAME, lambda b: b.replace(b"\n", b"\r\n"), "same rows, other bytes"),
        (INDEX_NAME, lambda b: b"split,shard\n", "its header is not"),
    ],
)
def test_verify_names_an_edited_card_file(
    dataset: Path, name: str, edit: object, expected: str
) -> None:
    path = dataset / name
    path.write_bytes(edit(path.read_bytes()))  # type: ignore[operator]
    report = verify(dataset)
    assert not report.ok
    assert any(expected in problem for problem in report.problems), report.render()
    assert any(problem.startswith(name) for problem in report.problems)


def test_an_index_row_that_moved_is_named_with_its_shard_and_row(dataset: Path) -> None:
    path = dataset / INDEX_NAME
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    fields = lines[3].rstrip("\n").split(",")
    fields[COLUMNS.index("y")] = str(int(fields[COLUMNS.index("y")]) + 1)
    lines[3] = ",".join(fields) + "\n"
    path.write_text("".join(lines), encoding="utf-8")
    problems = verify(dataset).problems
    assert any(f"row 3 ({fields[1]} row {fields[2]}) has y" in p for p in problems), problems


def test_a_dataset_without_a_card_still_verifies_and_card_writes_one(
    dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = card_bytes(dataset)
    for name in CARD_FILES:
        (dataset / name).unlink()
    report = verify(dataset)
    assert report.ok, report.render()
    assert any(note.startswith("no dataset card") for note in report.notes)
    assert main(["card", str(dataset)]) == 0
    assert capsys.readouterr().out.count("wrote ") == 3
    assert card_bytes(dataset) == expected
    assert verify(dataset).ok


def test_a_format_2_dataset_verifies_without_a_card_and_card_writes_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    committed = Path(__file__).parent / "data" / "format2"  # written by patchpack 0.1.0
    old = Path(shutil.copytree(committed, tmp_path / "format2"))
    report = verify(old)
    assert report.ok and any(n.startswith("no dataset card") for n in report.notes)
    assert main(["card", str(old)]) == 0
    report = verify(old)
    assert report.ok, report.render()
    assert "| format version | 2 |" in (old / CARD_NAME).read_text(encoding="utf-8")
    assert not any(n.startswith("no dataset card") for n in report.notes)


def test_one_card_file_missing_is_a_problem(dataset: Path) -> None:
    (dataset / CROISSANT_NAME).unlink()
    problems = verify(dataset).problems
    assert any(p.startswith("croissant.json: missing") for p in problems), problems


def test_with_the_index_missing_the_others_are_still_compared(dataset: Path) -> None:
    (dataset / INDEX_NAME).unlink()
    assert verify(dataset).problems == [
        "index.csv: missing, while README.md, croissant.json are there; "
        f"`patchpack card {dataset}` writes it again"
    ]
    (dataset / CARD_NAME).write_text("# mine\n", encoding="utf-8")
    problems = verify(dataset).problems
    assert len(problems) == 2 and problems[1].startswith("README.md: differs"), problems


def test_a_damaged_shard_is_reported_once_not_again_by_the_card(dataset: Path) -> None:
    entry = load_manifest(dataset).shards[0]
    (dataset / entry.path).write_bytes(b"damaged")
    report = verify(dataset)
    assert len(report.problems) == 1 and report.problems[0].startswith(entry.path)
    assert any(note.startswith("dataset card not compared") for note in report.notes)


def test_a_partial_pull_checks_the_index_rows_of_its_splits(dataset: Path) -> None:
    manifest = load_manifest(dataset)
    for entry in manifest.shards_for("test"):
        (dataset / entry.path).unlink()
    report = verify(dataset, splits=("train", "val"))
    assert report.ok, report.render()
    path = dataset / INDEX_NAME
    text = path.read_text(encoding="utf-8")
    val_row = next(line for line in text.splitlines() if line.startswith("val,"))
    path.write_text(text.replace(val_row, val_row[:-1] + "0"), encoding="utf-8")
    assert any(p.startswith(INDEX_NAME) for p in verify(dataset, splits=("val",)).problems)


def test_a_card_file_that_links_outside_the_folder_is_refused(
    dataset: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere.md"
    shutil.move(dataset / CARD_NAME, outside)
    (dataset / CARD_NAME).symlink_to(outside)
    problems = verify(dataset).problems
    assert any("outside the dataset folder" in p for p in problems), problems


@pytest.mark.parametrize("verb", ["card", "index"])
def test_card_or_index_of_a_folder_that_is_not_a_dataset_is_one_line_exit_2(
    verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes").mkdir()
    assert main([verb, str(tmp_path / "notes")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no manifest" in err
    assert list((tmp_path / "notes").iterdir()) == []


@RDFLIB
def test_the_loading_example_of_the_docs_runs(
    dataset: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("mlcroissant")
    pytest.importorskip("pandas")

    text = (Path(__file__).parents[1] / "docs" / "card.md").read_text(encoding="utf-8")
    (code,) = re.findall(r"```python\n(.*?)```", text, re.S)
    project = dataset.parent / "project"
    (project / "data").mkdir(parents=True)
    dataset.rename(project / "data" / "patches")  # where the example reads it
    monkeypatch.chdir(project)
    namespace: dict[str, object] = {}
    exec(compile(code, "docs/card.md", "exec"), namespace)
    index, patch = namespace["index"], namespace["patch"]
    manifest = load_manifest(project / "data" / "patches")
    assert len(index) == sum(entry.patches for entry in manifest.shards)  # type: ignore[arg-type]
    first = manifest.shards[0]
    data = read_shard(project / "data" / "patches" / first.path)
    assert (patch == data.images[0]).all()  # type: ignore[operator]
    assert "class_0" in capsys.readouterr().out


def test_the_pandas_example_of_the_readme_runs(
    dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_readme import README, python_example

    (dataset.parent / "project" / "data").mkdir(parents=True)
    dataset.rename(dataset.parent / "project" / "data" / "patches")
    monkeypatch.chdir(dataset.parent / "project")
    code = python_example(README, "pandas and Croissant: a table of patches")
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    manifest = load_manifest(Path("data/patches"))
    assert len(namespace["index"]) == sum(e.patches for e in manifest.shards)  # type: ignore[arg-type]
    counts = namespace["counts"]
    for split in ("train", "val", "test"):
        for name, count in manifest.counts[split].per_class.items():
            assert counts[(split, name)] == count  # type: ignore[index]


@pytest.mark.parametrize("gather", [False, True])
def test_extract_joins_the_index_rows_its_workers_wrote_without_reading_a_shard(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gather: bool
) -> None:
    """Each worker writes its shard's rows of index.csv from the patches it holds (or returns them
    with the gathered bytes); extract joins them instead of reading every shard again. The bytes
    are those the shards give, and the rows folder leaves no trace in the dataset."""
    from patchpack.dataset.card import index
    from patchpack.dataset.extract import Engine

    reference = extract(small_params(images, card=CARD), out=tmp_path / "reference")
    expected = index.index_sha256(reference, tmp_path / "reference")

    def refused(*args: object) -> None:
        raise AssertionError("a shard was read for the index")

    monkeypatch.setattr(index, "shard_rows", refused)
    out = tmp_path / "joined"
    manifest = extract(small_params(images, card=CARD), out=out, engine=Engine(gather=gather))
    assert hashlib.sha256((out / INDEX_NAME).read_bytes()).hexdigest() == expected
    assert card_bytes(out) == card_bytes(tmp_path / "reference")
    assert manifest.fingerprint == reference.fingerprint
    assert not [p for p in out.rglob("*") if index.ROWS_FOLDER in p.parts]


def test_written_rows_are_joined_and_a_shard_without_good_rows_is_read(
    dataset: Path, tmp_path: Path
) -> None:
    """The rows a worker wrote are used as they are (here marked, to tell them from the shard's);
    a shard whose rows are missing, truncated or not a regular file is read instead."""
    from patchpack.dataset.card import index

    manifest = load_manifest(dataset)
    rows = tmp_path / "rows"
    first, second, third = manifest.shards[:3]
    marked = b"".join(b"marked,%d\n" % n for n in range(first.patches))
    for entry, data in ((first, marked), (second, marked[: -len(b"marked,0\n")])):
        index.rows_path(rows, entry.path).parent.mkdir(parents=True, exist_ok=True)
        index.rows_path(rows, entry.path).write_bytes(data)
    index.rows_path(rows, third.path).parent.mkdir(parents=True, exist_ok=True)
    index.rows_path(rows, third.path).symlink_to(index.rows_path(rows, first.path))
    chunks = list(index.csv_chunks(manifest, dataset, rows))
    assert chunks[1] == marked
    shard_chunks = list(index.csv_chunks(manifest, dataset))
    assert chunks[2:] == shard_chunks[2:]  # the truncated and the linked rows: from the shards
    assert chunks[0] == shard_chunks[0]
