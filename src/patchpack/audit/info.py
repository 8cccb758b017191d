"""``patchpack info``: counts per split and class, bytes on disk, compression ratio, fingerprint."""

from __future__ import annotations

from pathlib import Path

from patchpack.audit.verify import empty_parts
from patchpack.dataset.manifest import Manifest, ShardEntry, load_manifest
from patchpack.engine.output import stable_read
from patchpack.errors import IntegrityError
from patchpack.params import SPLITS


def info(folder: Path) -> str:
    """A table of counts per split and class, bytes on disk, compression ratio and fingerprint."""
    folder = Path(folder)
    with stable_read(folder):
        manifest = load_manifest(folder)
        on_disk = sum(_size(manifest, entry) for entry in manifest.shards)
    return info_table(manifest, on_disk)


def info_table(manifest: Manifest, stored: int, where: str = "on disk") -> str:
    """:func:`info`'s table for ``manifest`` whose shards take ``stored`` bytes ``where``."""
    on_disk = stored
    names = manifest.class_names
    counts = manifest.counts
    width = max(len(name) for name in [*names, "class", "total"])
    header = f"{'class':<{width}}" + "".join(f"{split:>9}" for split in SPLITS)
    lines = [header, "-" * len(header)]
    for name in names:
        lines.append(
            f"{name:<{width}}" + "".join(f"{counts[s].per_class[name]:>9}" for s in SPLITS)
        )
    lines.append(f"{'total':<{width}}" + "".join(f"{counts[s].total:>9}" for s in SPLITS))
    size, channels = manifest.patch_size, manifest.channels
    patches = sum(entry.patches for entry in manifest.shards)
    raw = patches * size * size * channels
    params = manifest.params
    lines += [
        "",
        f"patches      {patches} of {size}x{size}x{channels}, split mode {params.split.mode}, seed {params.seed}",
        f"labels       {_labels(manifest)}",
        f"shards       {len(manifest.shards)} ({params.shards.compression}, level {params.shards.level})",
        f"bytes        {on_disk:,} {where}, {raw:,} raw pixels, ratio {on_disk / raw if raw else 0:.3f}",
        f"per patch    {on_disk / patches if patches else 0:.0f} bytes",
        f"fingerprint  {manifest.fingerprint}",
    ]
    lines += [
        f"EMPTY        {empty}; `patchpack verify` fails on it" for empty in empty_parts(manifest)
    ]
    return "\n".join(lines)


def _labels(manifest: Manifest) -> str:
    """Where the labels come from, and whether mask targets are stored."""
    labels = manifest.params.labels
    if not labels.per_patch:
        text = "from class folders"
    else:
        rule = labels.rule if labels.rule == "centre" else f"majority >= {labels.min_fraction:g}"
        files = sum(record.labels is not None for record in manifest.sources)
        plural = "" if files == 1 else "s"
        text = f"from {labels.origin} ({files} label file{plural}, hashed), rule {rule}"
    if manifest.params.extract.targets == "mask":
        text += "; mask targets stored"
    return text


def _size(manifest: Manifest, entry: ShardEntry) -> int:
    """Bytes on disk of one shard; 0 when it is missing or outside the folder (verify says which)."""
    try:
        path = manifest.shard_path(entry)
        return path.stat().st_size if path.is_file() else 0
    except (IntegrityError, OSError):
        return 0
