"""Patches per split and class, counted from the shards as written, and the check that every class
reaches every split when labels come from label files."""

from __future__ import annotations

from patchpack.dataset.manifest import ShardEntry, SplitCount
from patchpack.dataset.sources import SourceImage
from patchpack.errors import SourceError
from patchpack.params import SPLITS, Params


def _counts(
    done: list[tuple[ShardEntry, tuple[int, ...]]], class_names: list[str]
) -> dict[str, SplitCount]:
    """Patches per split and class, from the shards as written (a patch's label may come from a
    label file, known only once it is drawn)."""
    result: dict[str, SplitCount] = {}
    for name in SPLITS:
        per_class = dict.fromkeys(class_names, 0)
        for entry, counts in done:
            if entry.split == name:
                for class_name, count in zip(class_names, counts, strict=True):
                    per_class[class_name] += count
        result[name] = SplitCount(total=sum(per_class.values()), per_class=per_class)
    return result


def _check_labelled_splits(
    counts: dict[str, SplitCount], params: Params, sources: list[SourceImage]
) -> None:
    """With labels from label files, a patch's class is known once it is drawn: refuse a dataset in
    which a class has no patch in a split whose fraction is above 0 (the staged shards stay)."""
    for name, fraction in zip(SPLITS, params.split.fractions, strict=True):
        if fraction <= 0:
            continue
        for class_name, count in counts[name].per_class.items():
            if count:
                continue
            shown = ", ".join(str(source.path) for source in sources[:3])
            shown += f" and {len(sources) - 3} more" if len(sources) > 3 else ""
            raise SourceError(
                f"{shown}: the {name} split gets no patch labelled {class_name!r} by "
                f"{params.labels.dir}; label more of that class where the {name} split draws "
                f"(lower split.block_size), remove it from labels.classes, or set "
                f"split.fractions.{name} to 0"
            )
