"""``README.md`` in a dataset folder: the dataset card, for people.

What the dataset is, its classes and counts per split, the params that decided it, its fingerprint
and environment, how to pull, verify and load it, its license and how to cite it. Everything comes
from the manifest (and ``card.*`` in its params), so the card is a function of the dataset: no date,
no absolute path, the same bytes at any worker count.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from patchpack.dataset.card.croissant import CROISSANT_NAME
from patchpack.dataset.card.index import INDEX_NAME
from patchpack.params import SPLITS

if TYPE_CHECKING:
    from patchpack.dataset.manifest import Manifest

CARD_NAME = "README.md"


def describe(manifest: Manifest) -> str:
    """``card.description``, or one sentence on the dataset made from its manifest."""
    given = manifest.params.card.description
    if given is not None:
        return given
    size, params = manifest.patch_size, manifest.params
    colour = "grayscale" if manifest.channels == 1 else "RGB"
    patches = sum(entry.patches for entry in manifest.shards)
    sources = len(manifest.sources)
    return (
        f"{patches} {colour} image patches of {size}x{size} pixels from {sources} source "
        f"image{'' if sources == 1 else 's'} in {len(manifest.class_names)} classes, split by "
        f"{params.split.mode} into train, val and test, stored in {len(manifest.shards)} HDF5 "
        f"shards ({params.shards.compression})."
    )


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _counts(manifest: Manifest) -> list[str]:
    lines = ["| class | " + " | ".join(SPLITS) + " | all |", "|---|" + "---:|" * 4]
    for name in manifest.class_names:
        per = [manifest.counts[split].per_class[name] for split in SPLITS]
        lines.append(f"| {_cell(name)} | " + " | ".join(map(str, per)) + f" | {sum(per)} |")
    totals = [manifest.counts[split].total for split in SPLITS]
    lines.append("| **all** | " + " | ".join(map(str, totals)) + f" | {sum(totals)} |")
    return lines


def _facts(manifest: Manifest) -> list[str]:
    params = manifest.params
    colour = "grayscale (1 channel)" if manifest.channels == 1 else "RGB (3 channels)"
    rows = [
        ("fingerprint", f"`{manifest.fingerprint}`"),
        ("format version", str(manifest.format_version)),
        ("written by", f"patchpack {manifest.patchpack}"),
        ("patches", f"{manifest.patch_size}x{manifest.patch_size}, {colour}"),
        ("seed", str(params.seed)),
        (
            "split",
            f"by {params.split.mode}, fractions {' / '.join(map(str, params.split.fractions))}",
        ),
        ("labels", f"from {params.labels.origin}"),
        (
            "shards",
            f"{len(manifest.shards)}, {params.shards.compression} level {params.shards.level}",
        ),
        ("sources", f"{len(manifest.sources)} images, each hashed in manifest.json"),
    ]
    return ["| | |", "|---|---|", *(f"| {key} | {value} |" for key, value in rows)]


def _usage(manifest: Manifest) -> list[str]:
    url = manifest.params.card.url
    clone = [f"git clone {url}", "cd <the clone>"] if url else ["cd <the project that tracks it>"]
    return [
        "## Pull and verify",
        "",
        "The folder is a DVC output: pull it, then check every shard against the manifest.",
        "",
        "```bash",
        *clone,
        "dvc pull                      # or: patchpack pull --split train",
        "patchpack verify <this folder>",
        "```",
        "",
        "## Load",
        "",
        f"`{INDEX_NAME}` has one row per patch ({', '.join(f'`{c}`' for c in ('split', 'shard', 'row', 'label', 'class_name', 'source_id', 'y', 'x'))} ...);",
        f"`{CROISSANT_NAME}` describes the files and those records in MLCommons Croissant.",
        "",
        "```python",
        "import pandas as pd",
        f'index = pd.read_csv("{INDEX_NAME}", dtype={{"digest": str}})',
        "",
        "import mlcroissant as mlc",
        f'patches = mlc.Dataset(jsonld="{CROISSANT_NAME}").records("patches")',
        "```",
    ]


def card_markdown(manifest: Manifest) -> str:
    """The text of ``README.md`` for the dataset ``manifest`` describes."""
    card = manifest.params.card
    environment = [
        f"| {_cell(key)} | {_cell(value)} |" for key, value in sorted(manifest.environment.items())
    ]
    lines = [
        f"# {card.name}",
        "",
        describe(manifest),
        "",
        *_facts(manifest),
        "",
        "## Classes and counts",
        "",
        *_counts(manifest),
        "",
        *_usage(manifest),
        "",
        "## Params",
        "",
        "The params that decide the content, as `manifest.json` records them:",
        "",
        "```json",
        json.dumps(manifest.params.to_dict(), sort_keys=True, indent=1, ensure_ascii=False),
        "```",
        "",
        "## Environment",
        "",
        "The versions that decide the shards' bytes, on the machine that wrote them:",
        "",
        "| package | version |",
        "|---|---|",
        *environment,
        "",
        "## License",
        "",
        card.license
        if card.license is not None
        else "Not stated (set `card.license` in params.yaml).",
        "",
        "## Citation",
        "",
    ]
    if card.citation is None:
        lines += ["Not stated (set `card.citation` in params.yaml)."]
    else:
        lines += ["```", card.citation.rstrip("\n"), "```"]
    return "\n".join(lines) + "\n"
