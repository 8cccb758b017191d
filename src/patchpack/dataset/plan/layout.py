"""Shard boundaries: which rows of which images each shard of a split holds.

Rows of a split are ordered by (source id, patch index). A shard closes after an image when a hash of
the image's id falls below ``n_patches / target_patches`` (content-defined, as in rsync), or before an
image that would push it past twice the target. Adding an image therefore changes the shard it lands in
(and at most its neighbour), not every shard after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from patchpack.dataset.plan.draws import id_hash
from patchpack.dataset.shards import shard_name
from patchpack.params import SPLITS


@dataclass(frozen=True)
class Piece:
    """Rows ``start:stop`` of one image's patches in one split (positions within that split)."""

    image: int
    start: int
    stop: int


@dataclass(frozen=True)
class ShardSpec:
    """One shard to write: its split, its number within the split and the pieces it holds, in order."""

    split: str
    index: int
    pieces: tuple[Piece, ...]

    @property
    def path(self) -> str:
        return f"{self.split}/{shard_name(self.index)}"

    @property
    def patches(self) -> int:
        return sum(piece.stop - piece.start for piece in self.pieces)


def cut_shards(
    counts: Sequence[dict[str, int]], ids: Sequence[str], *, target: int
) -> list[ShardSpec]:
    """Group each split's rows into shards at content-defined boundaries between images."""
    specs = []
    for name in SPLITS:
        groups = _cut_split([c[name] for c in counts], ids, split=name, target=target)
        specs += [ShardSpec(split=name, index=i, pieces=group) for i, group in enumerate(groups)]
    return specs


def _cut_split(
    counts: Sequence[int], ids: Sequence[str], *, split: str, target: int
) -> list[tuple[Piece, ...]]:
    cap = 2 * target
    groups: list[tuple[Piece, ...]] = []
    pieces: list[Piece] = []
    filled = 0
    for image, (source_id, n) in enumerate(zip(ids, counts, strict=True)):
        for start in range(0, n, cap):
            stop = min(n, start + cap)
            if filled and filled + stop - start > cap:
                groups.append(tuple(pieces))
                pieces, filled = [], 0
            pieces.append(Piece(image, start, stop))
            filled += stop - start
        if n and _closes(source_id, split, n, target):
            groups.append(tuple(pieces))
            pieces, filled = [], 0
    if pieces:
        groups.append(tuple(pieces))
    return groups


def _closes(source_id: str, split: str, n: int, target: int) -> bool:
    u = id_hash(f"shard-boundary:{split}:{source_id}") / 2**63
    return u < n / target
