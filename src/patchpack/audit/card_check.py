"""``verify``'s check of the dataset card: ``README.md``, ``croissant.json`` and ``index.csv`` are
regenerated from the manifest and the shards and compared with the files in the folder.

The index rows are made from the shards ``verify`` has just decoded and checked (never read
again, so a remote read's cache folder, which holds a few shards at a time, is checked alike). A
dataset written before cards existed has none of the three: that is a note, not a failure. One of
them missing while the others are there, or one that differs from what the dataset gives, is a
problem. After a partial pull (``verify --split``) the index rows of the pulled splits are
compared, and the Croissant file against the index as it is on disk.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator, Sequence
from itertools import zip_longest
from pathlib import Path

from patchpack.dataset.card import CARD_FILES, COLUMNS, INDEX_NAME, card_texts
from patchpack.dataset.card.index import csv_text, data_rows
from patchpack.dataset.containment import contained
from patchpack.dataset.io import file_sha256
from patchpack.dataset.manifest import Manifest, ShardEntry
from patchpack.dataset.shards import ShardData
from patchpack.errors import IntegrityError

Findings = tuple[list[str], list[str]]  # (problems, notes)


def check_card(
    manifest: Manifest, splits: tuple[str, ...] | None, decoded: Sequence[ShardData] | None
) -> Findings:
    """Problems and notes about the card files of the dataset ``manifest`` was read from.

    ``decoded`` holds the checked content of every shard of ``splits`` (all shards when ``None``)
    in manifest order, pixels not needed; ``None`` when some shard or the manifest failed its own
    checks: then the files are only checked to be there.
    """
    assert manifest.folder is not None
    folder = manifest.folder
    try:
        paths = {name: contained(folder, name) for name in CARD_FILES}
    except IntegrityError as exc:
        return [str(exc)], []
    present = {name for name, path in paths.items() if path.is_file()}
    if not present:
        return [], [
            f"no dataset card ({', '.join(CARD_FILES)}): the dataset predates them; "
            f"`patchpack card {folder}` writes them"
        ]
    regenerate = f"`patchpack card {folder}` writes it again"
    problems = [
        f"{name}: missing, while {', '.join(sorted(present))} are there; {regenerate}"
        for name in CARD_FILES
        if name not in present
    ]
    if decoded is None:
        return problems, [
            "dataset card not compared: some shards or the manifest failed the checks above"
        ]
    entries = [e for e in manifest.shards if splits is None or e.split in splits]
    shards = list(zip(entries, decoded, strict=True))
    index_sha: str | None = None
    if INDEX_NAME in present:
        problem, index_sha = _check_index(manifest, paths[INDEX_NAME], shards, splits)
        problems += [f"{problem}; {regenerate}"] if problem else []
    if index_sha is None and splits is None:  # missing or differing: describe the shards' own
        digest = hashlib.sha256()
        for _ in _rows(manifest, shards, digest):
            pass
        index_sha = digest.hexdigest()
    if index_sha is not None:
        problems += [
            f"{name}: differs from the card the manifest gives (edited, or another dataset's); "
            f"{regenerate}"
            for name, data in card_texts(manifest, index_sha).items()
            if name in present and paths[name].read_bytes() != data
        ]
    return problems, [] if problems else [f"dataset card ({', '.join(CARD_FILES)}) matches"]


def _rows(
    manifest: Manifest, shards: Sequence[tuple[ShardEntry, ShardData]], digest: hashlib._Hash
) -> Iterator[list[str]]:
    """The index rows of ``shards`` as CSV text fields; their CSV bytes, header first, are fed to
    ``digest`` on the way."""
    digest.update(csv_text(None).encode("utf-8"))
    for entry, data in shards:
        rows = data_rows(manifest.class_names, entry, data)
        digest.update(csv_text(rows).encode("utf-8"))
        yield from ([str(value) for value in row] for row in rows)


def _check_index(
    manifest: Manifest,
    path: Path,
    shards: Sequence[tuple[ShardEntry, ShardData]],
    splits: tuple[str, ...] | None,
) -> tuple[str | None, str | None]:
    """``(problem, sha256 to describe it by)``: the first row of ``index.csv`` that differs from
    the shards, and the sha256 the Croissant file must record (``None`` when it cannot be told)."""
    digest = hashlib.sha256()
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            if next(reader, None) != list(COLUMNS):
                return f"{INDEX_NAME}: its header is not {','.join(COLUMNS)}", None
            theirs = (row for row in reader if splits is None or (row and row[0] in splits))
            pairs = zip_longest(_rows(manifest, shards, digest), theirs)
            for number, (want, got) in enumerate(pairs, start=1):
                if want != got:
                    return _row_problem(number, want, got), None
    except (UnicodeDecodeError, csv.Error) as exc:
        return f"{INDEX_NAME}: not a CSV file of UTF-8 text ({exc})", None
    on_disk = file_sha256(path)
    if splits is not None:
        return None, on_disk
    if digest.hexdigest() != on_disk:
        return f"{INDEX_NAME}: same rows, other bytes (quoting or line ends were changed)", None
    return None, on_disk


def _row_problem(number: int, want: list[str] | None, got: list[str] | None) -> str:
    if got is None:
        return f"{INDEX_NAME}: ends after {number - 1} patch rows; the shards hold more"
    if want is None:
        return f"{INDEX_NAME}: row {number} is not a patch of the dataset (the shards hold fewer)"
    where = f"{want[1]} row {want[2]}"
    for column, a, b in zip(COLUMNS, want, got + [""] * len(COLUMNS), strict=False):
        if a != b:
            return f"{INDEX_NAME}: row {number} ({where}) has {column} {b!r}, the shard says {a!r}"
    return f"{INDEX_NAME}: row {number} ({where}) has more columns than {len(COLUMNS)}"
