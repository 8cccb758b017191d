"""The output folder's checks: what ``extract`` refuses to write into or over, what it removes from a
staging folder, the free-space check, and the one line a failed write becomes.

The folder's life itself (the writer's lock, the swap, recovery) is :mod:`patchpack.engine.output`.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from patchpack.dataset.card import CARD_FILES
from patchpack.dataset.fetch import is_url
from patchpack.dataset.manifest import MANIFEST_NAME
from patchpack.dataset.shards import SHARD_GLOB
from patchpack.engine.output import describe_write_error
from patchpack.errors import OutputError
from patchpack.params import SPLITS, Params

ROI_FOLDER = "roi"


def _remove(path: Path) -> None:
    """Delete a file, a link (not what it points to) or a folder tree."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _unlink_links(staging: Path) -> None:
    """A staging folder that a killed run left holds only what patchpack writes: folders and regular
    files. Links planted there (the folder itself, a split folder, a shard) would have shards read
    from or written to somewhere else: they are removed, never followed."""
    if staging.is_symlink() or (staging.exists() and not staging.is_dir()):
        staging.unlink()
        return
    if not staging.is_dir():
        return
    for path in sorted(staging.rglob("*")):
        if path.is_symlink() or not (path.is_dir() or path.is_file()):
            path.unlink()


def _check_output(out: Path, source_dir: str, labels_dir: str | None = None) -> Path:
    """The resolved output folder, refused when it is the working folder or overlaps the sources
    or the label files (the swap replaces the whole folder)."""
    resolved = out.resolve()
    here = Path.cwd().resolve()
    if resolved == here or resolved in here.parents:
        raise OutputError(
            f"--out {out} is the current folder or holds it; choose a subfolder such as data/patches"
        )
    if labels_dir is not None:
        labels = Path(labels_dir).resolve()
        if labels == resolved or resolved in labels.parents:
            raise OutputError(
                f"labels.dir {labels} is inside --out {out}, which extraction replaces (its label "
                f"files would be deleted); move the label files out of it or choose another --out"
            )
    if is_url(source_dir):
        return resolved
    source = Path(source_dir).resolve()
    if resolved == source or source in resolved.parents:
        raise OutputError(
            f"--out {out} is inside the source folder {source}; the next run would read the shards "
            f"as images: choose a folder outside it, such as data/patches"
        )
    if resolved in source.parents:
        raise OutputError(
            f"the source folder {source} is inside --out {out}, which extraction replaces; "
            f"choose another --out"
        )
    return resolved


@contextlib.contextmanager
def _writing(out: Path) -> Iterator[None]:
    """Turn a failed write (full disk, size limit, permissions) into one line; the output stays."""
    try:
        yield
    except OSError as exc:
        raise OutputError(describe_write_error(exc, out)) from exc


# Compressed patches of natural images take 5-60% of their raw size here; only a run that cannot fit
# even at the low end is refused up front. Anything else that runs out of space fails cleanly later.
_LOW_RATIO = {"none": 1.0, "gzip": 0.05, "zstd": 0.05}


def _check_free_space(out: Path, patches: int, params: Params) -> None:
    raw = patches * params.extract.patch_size**2 * params.source.channels
    needed = int(raw * _LOW_RATIO[params.shards.compression])
    free = shutil.disk_usage(_existing_parent(out)).free
    if needed > free:
        raise OutputError(
            f"{out}: the dataset needs at least {needed / 1e6:,.0f} MB ({patches:,} patches), but "
            f"only {free / 1e6:,.0f} MB are free there; free space or choose another --out"
        )


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _is_dataset_file(relative: Path) -> bool:
    parts = relative.parts
    if parts == (MANIFEST_NAME,):
        return True
    if len(parts) == 1 and parts[0] in (*SPLITS, ROI_FOLDER):
        return True
    if len(parts) == 2 and parts[0] == ROI_FOLDER:
        return parts[1].endswith(".png")
    return (
        len(parts) == 2
        and parts[0] in SPLITS
        and (relative.match(SHARD_GLOB) or parts[1].startswith(".shard-"))
    )


def _check_replaceable(out: Path, shown: Path) -> None:
    """Refuse to replace a folder that holds anything but a patchpack dataset: never lose user data."""
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputError(f"{shown}: output exists and is not a folder; choose another --out")
    # the card files count only beside a manifest: a folder of someone's own README.md is kept
    card = CARD_FILES if (out / MANIFEST_NAME).is_file() else ()
    for path in sorted(out.rglob("*")):
        relative = path.relative_to(out)
        if relative.as_posix() not in card and not _is_dataset_file(relative):
            raise OutputError(
                f"{shown}: output folder holds {path.relative_to(out)}, which is not part of a "
                f"patchpack dataset; choose an empty or new --out folder"
            )


def _remove_strays(staging: Path, keep: set[str]) -> None:
    for path in sorted(staging.rglob("*")):
        if path.is_file() and path.relative_to(staging).as_posix() not in keep:
            path.unlink()
