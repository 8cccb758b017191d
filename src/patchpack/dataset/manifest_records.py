"""The records a manifest lists: one :class:`ShardEntry` per shard, one :class:`SplitCount` per split."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from patchpack.dataset.io import file_sha256
from patchpack.dataset.shards import ShardData
from patchpack.dataset.sources import COUNT, HEX64, SHARD_PATH
from patchpack.schema import param

_DIGEST = 16  # hex characters per patch digest


@dataclass(frozen=True)
class ShardEntry:
    """One shard as the manifest records it; ``path`` is relative to the dataset folder."""

    path: str = param(doc="the shard's path in the dataset", kind="str", pattern=SHARD_PATH)
    split: str = param(doc="its split, the first part of its path", kind="str")
    patches: int = param(doc="patches it holds", **COUNT)
    sha256: str = param(doc="sha256 of the file's bytes", **HEX64)
    content_sha256: str = param(doc="sha256 over the decoded arrays", **HEX64)
    patch_digests: str = param(
        doc="16 hex characters per patch, in row order", kind="str", empty=True
    )

    @classmethod
    def of(cls, relative: str, split: str, file: Path, data: ShardData) -> ShardEntry:
        """The entry for the shard ``data`` written at ``file`` (``relative`` to the dataset)."""
        return cls.of_bytes(relative, split, file_sha256(file), data)

    @classmethod
    def of_bytes(cls, relative: str, split: str, sha256: str, data: ShardData) -> ShardEntry:
        """The entry for the shard ``data`` whose file bytes have the given ``sha256``."""
        return cls(
            path=relative,
            split=split,
            patches=len(data),
            sha256=sha256,
            content_sha256=data.content_sha256(),
            patch_digests="".join(data.patch_digests()),
        )

    def digests(self) -> list[str]:
        """The per-patch digests (16 hex characters each), in row order."""
        text = self.patch_digests
        return [text[i : i + _DIGEST] for i in range(0, len(text), _DIGEST)]


@dataclass(frozen=True)
class SplitCount:
    """Patches of one split: the total and the count per class name."""

    total: int
    per_class: Mapping[str, int]
