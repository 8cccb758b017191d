"""The patch index: one row per patch, read from the shards' small datasets (never their pixels).

Columns, in this order (:data:`COLUMNS`):

===========  ==========================================================================
split        train, val or test
shard        the shard's path in the dataset (``train/shard-00000.h5``)
row          the patch's row in that shard (0-based)
label        the class number, an index into the manifest's ``class_names``
class_name   the class's name
source_id    the source image (its relative POSIX path)
patch_index  the patch's number within its source image
level        the pyramid level it was cut from
y, x         its top-left corner in level-0 pixels
digest       its 16-hex-character patch digest, as the manifest records it
===========  ==========================================================================

Rows follow the manifest's shard order, then row order: the index of a dataset is a function of
its manifest and shards only, so its bytes are the same at any worker count. ``index.csv`` (UTF-8,
``\\n`` line ends, quoted only where needed) is written into the dataset folder by ``extract``;
``patchpack index --format parquet`` writes the same rows as Parquet (pyarrow) anywhere.
"""

from __future__ import annotations

import csv
import hashlib
import io
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import h5py

from patchpack.dataset.containment import contained
from patchpack.dataset.io import atomic_output
from patchpack.errors import ConfigError, IntegrityError

if TYPE_CHECKING:
    from patchpack.dataset.manifest import Manifest, ShardEntry
    from patchpack.dataset.shard_format import ShardData

INDEX_NAME = "index.csv"
COLUMNS = (
    "split",
    "shard",
    "row",
    "label",
    "class_name",
    "source_id",
    "patch_index",
    "level",
    "y",
    "x",
    "digest",
)
FORMATS = ("csv", "parquet")
Row = tuple[str, str, int, int, str, str, int, int, int, int, str]


def shard_rows(manifest: Manifest, folder: Path, entry: ShardEntry) -> list[Row]:
    """The index rows of one shard, read from its labels, sources, patch_index, coords and levels.

    Raises
    ------
    IntegrityError
        When the shard is missing, unreadable or does not hold what the manifest says.
    """
    path = contained(folder, entry.path)
    if not path.is_file():
        raise IntegrityError(f"{entry.path}: missing; run `dvc pull` or `dvc repro`")
    layout = manifest.layout(entry)
    try:
        with h5py.File(path, "r") as h5:
            layout.check_file(h5, path)
            labels = h5["labels"][()].tolist()
            sources = h5["sources"][()].tolist()
            patches = h5["patch_index"][()].tolist()
            coords = h5["coords"][()].tolist()
            levels = h5["levels"][()].tolist()
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise IntegrityError(
            f"{entry.path}: unreadable shard ({exc}); run patchpack verify"
        ) from exc
    text = [source.decode("utf-8", "replace") for source in sources]
    return rows_of(manifest.class_names, entry, labels, text, patches, coords, levels)


def rows_of(
    names: Sequence[str],
    entry: ShardEntry,
    labels: list[int],
    sources: list[str],
    patches: list[int],
    coords: list[list[int]],
    levels: list[int],
) -> list[Row]:
    """The index rows of the shard ``entry`` from its columns, in row order (as plain lists);
    ``names`` are the dataset's class names."""
    rows: list[Row] = []
    for row, (label, source, patch, (y, x), level, digest) in enumerate(
        zip(labels, sources, patches, coords, levels, entry.digests(), strict=True)
    ):
        name = names[label] if 0 <= label < len(names) else ""
        rows.append((entry.split, entry.path, row, label, name, source, patch, level, y, x, digest))
    return rows


def data_rows(names: Sequence[str], entry: ShardEntry, data: ShardData) -> list[Row]:
    """The index rows of a shard in memory, whose manifest entry is ``entry``, for class names
    ``names`` (``verify`` has the shards decoded, the worker that built one has it: see
    :data:`ROWS_FOLDER`)."""
    return rows_of(
        names,
        entry,
        data.labels.tolist(),
        data.source_rows(),
        data.patch_index.tolist(),
        data.coords.tolist(),
        data.levels.tolist(),
    )


def iter_rows(manifest: Manifest, folder: Path) -> Iterator[list[Row]]:
    """The index rows shard by shard, in the manifest's order (one shard's rows in memory at once)."""
    for entry in manifest.shards:
        yield shard_rows(manifest, folder, entry)


def csv_text(rows: list[Row] | None) -> str:
    """Rows as CSV text (``None``: the header line)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if rows is None:
        writer.writerow(COLUMNS)
    else:
        writer.writerows(rows)
    return buffer.getvalue()


def csv_chunks(manifest: Manifest, folder: Path, rows: Path | None = None) -> Iterator[bytes]:
    """The bytes of ``index.csv``: the header, then one chunk per shard; a shard's chunk is read
    from ``rows`` (:func:`rows_path`) where its worker wrote it, else from the shard's datasets."""
    yield csv_text(None).encode("utf-8")
    for entry in manifest.shards:
        written = _written_rows(rows, entry)
        yield (
            written
            if written is not None
            else csv_text(shard_rows(manifest, folder, entry)).encode("utf-8")
        )


def _written_rows(rows: Path | None, entry: ShardEntry) -> bytes | None:
    """The rows a worker wrote for ``entry``, when they are a regular file of one line per patch."""
    if rows is None:
        return None
    path = rows_path(rows, entry.path)
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            return None
        data = path.read_bytes()
    except OSError:
        return None
    return data if data.count(b"\n") == entry.patches and data.endswith(b"\n") else None


# Beside a run's staged shards, each shard's rows of index.csv as its worker wrote them (from the
# patches it had in memory), so that extract writes the index without reading every shard again.
ROWS_FOLDER = ".index-rows"


def rows_path(rows: Path, shard: str) -> Path:
    """Where the index rows of the shard at relative path ``shard`` are kept in ``rows``."""
    return rows / f"{shard}.csv"


def shard_chunk(names: Sequence[str], entry: ShardEntry, data: ShardData) -> bytes:
    """The bytes of ``index.csv`` that the shard ``entry``, held in memory as ``data``, gives."""
    return csv_text(data_rows(names, entry, data)).encode("utf-8")


def index_sha256(manifest: Manifest, folder: Path) -> str:
    """sha256 of the ``index.csv`` that the manifest and shards in ``folder`` give."""
    digest = hashlib.sha256()
    for chunk in csv_chunks(manifest, folder):
        digest.update(chunk)
    return digest.hexdigest()


def write_csv(manifest: Manifest, folder: Path, path: Path, rows: Path | None = None) -> str:
    """Write the index as CSV to ``path`` atomically (shards' rows from ``rows`` where there, see
    :func:`csv_chunks`); return the sha256 of its bytes."""
    digest = hashlib.sha256()
    with atomic_output(path) as tmp, open(tmp, "wb") as handle:
        for chunk in csv_chunks(manifest, folder, rows):
            digest.update(chunk)
            handle.write(chunk)
    return digest.hexdigest()


def write_parquet(manifest: Manifest, folder: Path, path: Path) -> None:
    """Write the index as Parquet to ``path`` atomically (one row group per shard).

    Raises
    ------
    ConfigError
        When pyarrow is not installed (it is in patchpack's ``index`` extra).
    """
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(
            "pyarrow is not installed: Parquet needs patchpack's index extra; install it with "
            "pip install -e '.[index]' -c constraints.txt (or pip install 'patchpack[index]'), "
            "or use --format csv"
        ) from None
    text = ("split", "shard", "class_name", "source_id", "digest")
    schema = pa.schema([(c, pa.string() if c in text else pa.int32()) for c in COLUMNS])
    with atomic_output(path) as tmp, pq.ParquetWriter(str(tmp), schema) as writer:
        for rows in iter_rows(manifest, folder):
            columns = list(zip(*rows, strict=True)) if rows else [()] * len(COLUMNS)
            writer.write_table(pa.Table.from_arrays(list(map(list, columns)), schema=schema))


def write_index(manifest: Manifest, folder: Path, path: Path, fmt: str) -> None:
    """Write the index of the dataset in ``folder`` to ``path`` as ``fmt`` (csv or parquet).

    Raises
    ------
    ConfigError
        For an unknown format, or parquet without pyarrow.
    IntegrityError
        When a shard is missing or does not hold what the manifest says.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown index format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "csv":
        write_csv(manifest, folder, path)
    else:
        write_parquet(manifest, folder, path)
