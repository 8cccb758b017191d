"""A dataset's card: ``README.md`` (for people), ``croissant.json`` (MLCommons Croissant, for tools)
and ``index.csv`` (one row per patch, the records Croissant tools read).

``extract`` writes the three into the staging folder before the manifest, so they are part of the
dataset (and of its DVC output) and appear at the final path only with the rest of it;
``patchpack card`` writes them again into an existing dataset folder. Each is a function of the
manifest and the shards, so ``verify`` regenerates them and compares bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from patchpack.dataset.card.croissant import CROISSANT_NAME, croissant
from patchpack.dataset.card.index import (
    COLUMNS,
    FORMATS,
    INDEX_NAME,
    index_sha256,
    write_csv,
    write_index,
)
from patchpack.dataset.card.markdown import CARD_NAME, card_markdown, describe
from patchpack.dataset.io import manifest_json, write_bytes_atomic
from patchpack.errors import ConfigError

if TYPE_CHECKING:
    from patchpack.dataset.manifest import Manifest

CARD_FILES = (CARD_NAME, CROISSANT_NAME, INDEX_NAME)

__all__ = [
    "CARD_FILES",
    "CARD_NAME",
    "COLUMNS",
    "CROISSANT_NAME",
    "FORMATS",
    "INDEX_NAME",
    "card_texts",
    "export_index",
    "index_sha256",
    "make_card",
    "write_card",
    "write_index",
]


def card_texts(manifest: Manifest, index_sha: str) -> dict[str, bytes]:
    """The bytes of ``README.md`` and ``croissant.json``, given the sha256 of ``index.csv``."""
    document = croissant(manifest, description=describe(manifest), index_sha256=index_sha)
    return {
        CARD_NAME: card_markdown(manifest).encode("utf-8"),
        CROISSANT_NAME: manifest_json(document).encode("utf-8"),
    }


def write_card(manifest: Manifest, folder: Path, rows: Path | None = None) -> list[str]:
    """Write ``index.csv``, ``croissant.json`` and ``README.md`` into ``folder`` (each atomically,
    the index first: the Croissant file records its sha256); return their names. ``rows`` holds
    the shards' index rows as their workers wrote them, where extract has them.

    Raises
    ------
    IntegrityError
        When a shard in ``folder`` is missing or does not hold what the manifest says.
    """
    folder = Path(folder)
    sha = write_csv(manifest, folder, folder / INDEX_NAME, rows)
    for name, data in card_texts(manifest, sha).items():
        write_bytes_atomic(folder / name, data)
    return list(CARD_FILES)


def make_card(folder: Path) -> list[Path]:
    """``patchpack card``: write the card files into the dataset folder ``folder`` again (holding
    its writer lock, so no extract swaps it meanwhile); return their paths.

    Raises
    ------
    IntegrityError
        When ``folder`` holds no readable manifest (not a dataset), or a shard is missing or does
        not hold what the manifest says.
    OutputError
        When an extract is writing ``folder``.
    """
    from patchpack.dataset.manifest import load_manifest
    from patchpack.engine.output import exclusive_writer, stable_read

    folder = Path(folder)
    resolved = folder.resolve()
    with exclusive_writer(resolved, shown=folder), stable_read(resolved):
        manifest = load_manifest(resolved)
        names = write_card(manifest, resolved)
    return [folder / name for name in names]


def export_index(folder: Path, fmt: str, out: Path) -> Path:
    """``patchpack index``: write the patch index of the dataset in ``folder`` to ``out`` as ``fmt``
    (``csv`` or ``parquet``); return ``out``.

    Raises
    ------
    ConfigError
        For an unknown format, or parquet without pyarrow.
    IntegrityError
        When ``folder`` holds no readable manifest, or a shard does not hold what it says.
    """
    from patchpack.dataset.manifest import load_manifest
    from patchpack.engine.output import stable_read

    if fmt not in FORMATS:
        raise ConfigError(f"unknown index format {fmt!r}; choose one of {', '.join(FORMATS)}")
    folder, out = Path(folder), Path(out)
    root, target = folder.resolve(), out.resolve()
    if root in target.parents and target != root / INDEX_NAME:
        raise ConfigError(
            f"--out {out} is inside the dataset folder {folder}, whose files are the dataset (and "
            f"its DVC hash); write the index elsewhere"
        )
    with stable_read(folder):
        manifest = load_manifest(folder)
        write_index(manifest, folder, out, fmt)
    return out
