"""``patchpack info / verify / preview --remote``: the read-only verbs on a dataset left on its remote.

Each opens the dataset with :func:`patchpack.sharing.remote_read.open_remote` (listing and manifest
checked against the committed md5) and then runs the local verb's own code on the cache folder:
``info`` takes the shards' sizes from the remote's metadata and downloads none, ``verify`` fetches
the small files (tissue masks, the card) and brings each shard into the cache for the moment it is
checked, ``preview`` fetches only the shards its samples come from.
"""

from __future__ import annotations

from pathlib import Path

from patchpack.audit.info import info_table
from patchpack.audit.preview import contact_sheet
from patchpack.audit.verify import Report, verify
from patchpack.dataset.containment import contained
from patchpack.engine.output import MANIFEST_NAME
from patchpack.sharing.dvchash import file_md5
from patchpack.sharing.remote_read import LISTING_NAME, RemoteSource, remote_sizes


def remote_info(source: RemoteSource) -> str:
    """:func:`patchpack.audit.info.info`'s table, the bytes being those of the remote's objects."""
    table = info_table(source.manifest, sum(remote_sizes(source).values()), "on the remote")
    return "\n".join(
        [
            table,
            f"remote       {source.location.describe()}: listing {source.md5}, as dvc.lock "
            f"records it; nothing was pulled",
        ]
    )


def fetch_small_files(source: RemoteSource) -> int:
    """Fetch every file of the listing but the shards (tissue masks, the card) into the cache
    folder, each checked against its md5; returns how many were fetched."""
    folder = source.cache.folder
    shards = {entry.path for entry in source.manifest.shards}
    fetched = 0
    for relpath, md5 in sorted(source.cache.listing.items()):
        if relpath in shards or relpath in (MANIFEST_NAME, LISTING_NAME):
            continue
        target = contained(folder, relpath)
        if not (target.is_file() and file_md5(target) == md5):
            source.store.download(md5, target)
            fetched += 1
    return fetched


def remote_verify(
    source: RemoteSource,
    *,
    splits: tuple[str, ...] | None = None,
    allow_container_diff: bool = False,
) -> Report:
    """Verify the dataset on the remote as ``verify`` checks a folder, one shard at a time."""
    fetch_small_files(source)
    report = verify(
        source.cache.folder,
        allow_container_diff=allow_container_diff,
        splits=splits,
        fetch=source.local,
    )
    report.title = f"verify {source.location.describe()}" + (
        f" ({', '.join(splits)})" if splits else ""
    )
    report.notes.append(
        f"read from the remote without a pull: the listing {source.md5} that dvc.lock records, "
        f"{source.cache.fetched} shards fetched ({source.store.received:,} bytes received), at "
        f"most {source.cache.peak:,} bytes of shards cached at once"
    )
    return report


def remote_preview(source: RemoteSource, out: Path, *, per_cell: int = 8) -> Path:
    """The contact sheet of the dataset on the remote, fetching only the shards it samples."""
    return contact_sheet(source.cache.folder, out, per_cell=per_cell, open_shard=source.shard)
