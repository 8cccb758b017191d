"""The dataset manifest: what a complete dataset contains, with the hashes that prove it.

``manifest.json`` is written last, in canonical JSON (sorted keys, fixed separators, a trailing
newline), so its presence marks a complete dataset and its bytes depend only on the content.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchpack.errors import IntegrityError
from patchpack.params import SPLITS
from patchpack.shards import FORMAT_VERSION

MANIFEST_NAME = "manifest.json"


def canonical_json(value: Any) -> str:
    """JSON with sorted keys, fixed separators and a trailing newline: equal values, equal bytes."""
    return json.dumps(value, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def write_json_atomic(path: Path, value: Any) -> None:
    """Write canonical JSON to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(canonical_json(value), encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class ShardEntry:
    """One shard as the manifest records it; ``path`` is relative to the dataset folder."""

    path: str
    split: str
    patches: int
    sha256: str
    content_sha256: str
    patch_digests: str

    def digests(self) -> list[str]:
        """The per-patch digests (16 hex characters each), in row order."""
        return [self.patch_digests[i : i + 16] for i in range(0, len(self.patch_digests), 16)]


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest.json. ``raw`` keeps every field; the attributes are the common ones."""

    folder: Path
    raw: dict[str, Any]

    @property
    def class_names(self) -> list[str]:
        return list(self.raw["class_names"])

    @property
    def shards(self) -> list[ShardEntry]:
        return [ShardEntry(**entry) for entry in self.raw["shards"]]

    @property
    def fingerprint(self) -> str:
        return str(self.raw["fingerprint"])

    @property
    def patch_size(self) -> int:
        return int(self.raw["params"]["extract"]["patch_size"])

    @property
    def channels(self) -> int:
        return int(self.raw["params"]["channels"])

    def shards_for(self, split: str) -> list[ShardEntry]:
        """The shards of ``split`` in canonical order."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        return [entry for entry in self.shards if entry.split == split]

    def count(self, split: str) -> int:
        return sum(entry.patches for entry in self.shards_for(split))


def load_manifest(folder: str | Path) -> Manifest:
    """Read ``<folder>/manifest.json``.

    Raises
    ------
    IntegrityError
        When the manifest is missing (extraction incomplete or data not pulled) or unreadable.
    """
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IntegrityError(
            f"{path}: no manifest, so the dataset is incomplete or absent; "
            f"run `patchpack extract` (or `dvc pull` / `dvc repro`)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityError(
            f"{path}: unreadable manifest ({exc}); regenerate with `dvc repro`"
        ) from exc
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if version != FORMAT_VERSION:
        raise IntegrityError(
            f"{path}: format version {version!r}, this patchpack reads {FORMAT_VERSION}; "
            f"regenerate with `patchpack extract` or install the matching patchpack"
        )
    return Manifest(folder=folder, raw=raw)


def fingerprint(class_names: list[str], shards: Sequence[Mapping[str, Any]]) -> str:
    """The dataset's identity: sha256 over class names and each shard's path, count and content hash.

    It depends on pixels and provenance only, not on compression or the HDF5 container's bytes.
    """
    lines: list[Any] = [FORMAT_VERSION, class_names]
    lines += [[s["path"], s["patches"], s["content_sha256"]] for s in shards]
    return hashlib.sha256(canonical_json(lines).encode()).hexdigest()


def environment() -> dict[str, str]:
    """The versions that can change a shard's bytes or a patch's pixels."""
    import h5py
    import hdf5plugin
    import numpy
    import PIL
    from PIL import features

    return {
        "python": platform.python_version(),
        "platform": sys.platform,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "libjpeg": str(features.version("jpg")),
        "zlib": zlib.ZLIB_RUNTIME_VERSION,
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
        "hdf5plugin": hdf5plugin.version,
    }
