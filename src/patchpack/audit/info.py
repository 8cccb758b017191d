"""``patchpack info``: counts per split and class, bytes on disk, compression ratio, fingerprint."""

from __future__ import annotations

from pathlib import Path

from patchpack.dataset.manifest import load_manifest
from patchpack.params import SPLITS


def info(folder: Path) -> str:
    """A table of counts per split and class, bytes on disk, compression ratio and fingerprint."""
    folder = Path(folder)
    manifest = load_manifest(folder)
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
    on_disk = sum(
        (folder / e.path).stat().st_size for e in manifest.shards if (folder / e.path).is_file()
    )
    raw = patches * size * size * channels
    params = manifest.params
    lines += [
        "",
        f"patches      {patches} of {size}x{size}x{channels}, split mode {params.split.mode}, seed {params.seed}",
        f"shards       {len(manifest.shards)} ({params.shards.compression}, level {params.shards.level})",
        f"bytes        {on_disk:,} on disk, {raw:,} raw pixels, ratio {on_disk / raw if raw else 0:.3f}",
        f"per patch    {on_disk / patches if patches else 0:.0f} bytes",
        f"fingerprint  {manifest.fingerprint}",
    ]
    return "\n".join(lines)
