"""Verify a dataset against its manifest, rebuild and compare, and audit split leakage.

For each shard, ``verify`` first compares the file's sha256 (what DVC and partners see). On a mismatch
it decodes the shard and compares the content sha256 over the decoded arrays, which tells "same pixels,
other container bytes" (another HDF5 or zstd build) from "different pixels"; for the latter it names the
first differing patch with its source and coordinates, using the per-patch digests in the manifest.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from patchpack.audit.card_check import check_card
from patchpack.audit.leakage import audit_leakage, audit_note
from patchpack.dataset.io import file_sha256
from patchpack.dataset.manifest import Manifest, ShardEntry, fingerprint, load_manifest
from patchpack.dataset.shards import (
    SHARD_GLOB,
    ShardData,
    ShardMismatch,
    read_shard,
)
from patchpack.engine.output import stable_read
from patchpack.errors import IntegrityError
from patchpack.params import SPLITS


@dataclass
class Report:
    """The outcome of a check: problems make it fail, notes only inform."""

    title: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def render(self) -> str:
        lines = [f"{self.title}: {'OK' if self.ok else 'FAILED'}"]
        lines += [f"  FAIL {problem}" for problem in self.problems]
        lines += [f"  note {note}" for note in self.notes]
        return "\n".join(lines)


def verify(
    folder: Path,
    *,
    allow_container_diff: bool = False,
    splits: tuple[str, ...] | None = None,
    fetch: Fetch | None = None,
) -> Report:
    """Check every shard of the dataset in ``folder`` against its manifest and audit leakage.

    Every shard is decoded and its content hash compared, whatever its file hash says, and the
    fingerprint is recomputed from the entries, so a shard edited together with its manifest entry
    fails too. ``allow_container_diff`` accepts shards whose decoded content matches but whose bytes
    differ. ``splits`` checks only those splits' shards (a partial pull): the others are reported
    as not pulled, and the leakage audit covers the splits checked. ``fetch`` brings each shard
    into ``folder`` for the block in which it is checked (a remote read, whose cache folder holds
    a few shards at a time); its :class:`IntegrityError` is a failed check.

    Raises
    ------
    DatasetChanged
        When an extract replaced the folder while it was being read: run again.
    ValueError
        When ``splits`` names an unknown split.
    """
    folder = Path(folder)
    for split in splits or ():
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    with stable_read(folder):
        return _verify(folder, allow_container_diff, splits, fetch)


Fetch = Callable[[ShardEntry], contextlib.AbstractContextManager[object]]


def _verify(
    folder: Path,
    allow_container_diff: bool,
    splits: tuple[str, ...] | None,
    fetch: Fetch | None = None,
) -> Report:
    report = Report(f"verify {folder}" + (f" ({', '.join(splits)})" if splits else ""))
    try:
        manifest = load_manifest(folder)
    except IntegrityError as exc:
        report.problems.append(str(exc))
        return report
    chosen = [e for e in manifest.shards if splits is None or e.split in splits]
    if fetch is None:  # a cache folder holds what was fetched, not the whole folder
        _check_extras(folder, manifest, report)
    _check_rois(manifest, report)
    provenance: list[ShardData] = []
    for entry in chosen:
        data = _check_fetched(manifest, entry, report, allow_container_diff, fetch)
        if data is not None:
            # the audit needs coordinates only: dropping the pixels keeps memory to one shard
            empty = np.empty((0, *data.images.shape[1:]), np.uint8)  # not a view: it would
            provenance.append(dataclasses.replace(data, images=empty, masks=None))  # hold them
    before = len(report.problems)
    _check_counts(manifest, report)
    _check_fingerprint(manifest, report)
    # the card is compared once the shards and the manifest pass: else it only repeats their damage
    comparable = len(provenance) == len(chosen) and len(report.problems) == before
    problems, notes = check_card(manifest, splits, provenance if comparable else None)
    report.problems += problems
    report.notes += notes
    if len(provenance) == len(chosen):
        report.problems += audit_leakage(manifest, provenance)
        covered = "" if splits is None else f" (among {', '.join(splits)})"
        report.notes.append(audit_note(manifest.params.split.mode) + covered)
    else:
        report.notes.append("leakage audit skipped: some shards are missing or unreadable")
    if splits is not None:
        absent = [s for s in SPLITS if s not in splits and manifest.shards_for(s)]
        if absent:
            report.notes.append(f"not pulled, not checked: {', '.join(absent)}")
    report.notes.append(
        f"{len(chosen)} of {len(manifest.shards)} shards checked, "
        f"{sum(e.patches for e in chosen)} patches, fingerprint {manifest.fingerprint}"
        if splits is not None
        else f"{len(manifest.shards)} shards, {sum(e.patches for e in manifest.shards)} patches, "
        f"fingerprint {manifest.fingerprint}"
    )
    return report


def _check_extras(folder: Path, manifest: Manifest, report: Report) -> None:
    expected = {entry.path for entry in manifest.shards}
    expected |= {record.roi for record in manifest.sources if record.roi}
    on_disk = {path.relative_to(folder).as_posix() for path in folder.glob(f"*/{SHARD_GLOB}")}
    on_disk |= {path.relative_to(folder).as_posix() for path in folder.glob("roi/*")}
    leftovers = sorted(path.relative_to(folder).as_posix() for path in folder.glob("*/.shard-*"))
    for path in sorted(on_disk - expected) + leftovers:
        report.problems.append(f"{path}: extra file not in the manifest; delete it or re-extract")


def _check_rois(manifest: Manifest, report: Report) -> None:
    """Each source's tissue mask: present, inside the folder, with the recorded sha256."""
    for record in manifest.sources:
        try:
            path = manifest.roi_path(record)
        except IntegrityError as exc:
            report.problems.append(str(exc))
            continue
        if path is None:
            continue
        if not path.is_file():
            report.problems.append(
                f"{record.roi}: tissue mask of {record.id} is missing; pull or extract again"
            )
        elif file_sha256(path) != record.roi_sha256:
            report.problems.append(
                f"{record.roi}: tissue mask of {record.id} differs from the manifest; pull or extract again"
            )


def _check_fetched(
    manifest: Manifest,
    entry: ShardEntry,
    report: Report,
    allow_container_diff: bool,
    fetch: Fetch | None,
) -> ShardData | None:
    if fetch is None:
        return _check_shard(manifest, entry, report, allow_container_diff)
    try:
        with fetch(entry):
            return _check_shard(manifest, entry, report, allow_container_diff)
    except IntegrityError as exc:
        report.problems.append(str(exc))
        return None


def _check_shard(
    manifest: Manifest, entry: ShardEntry, report: Report, allow_container_diff: bool
) -> ShardData | None:
    try:
        path = manifest.shard_path(entry)
    except IntegrityError as exc:
        report.problems.append(str(exc))
        return None
    if not path.is_file():
        report.problems.append(f"{entry.path}: missing; run `dvc pull` or `dvc repro`")
        return None
    try:
        same_bytes = file_sha256(path) == entry.sha256
    except OSError as exc:  # gone since the check above when an extract swapped the folder in
        # (stable_read then reports that instead)
        report.problems.append(
            f"{entry.path}: cannot read it ({exc.strerror}); check its permissions"
        )
        return None
    try:
        data = read_shard(path, manifest.layout(entry))
    except IntegrityError as exc:
        report.problems.append(_unreadable(entry, path, exc))
        return None
    if data.content_sha256() != entry.content_sha256:
        report.problems.append(f"{entry.path}: different pixels: {_first_difference(entry, data)}")
        return None
    if not same_bytes:
        message = (
            f"{entry.path}: same pixels, different bytes (file sha256 differs, decoded content "
            f"matches: another HDF5/zstd build or compression setting)"
        )
        if allow_container_diff:
            report.notes.append(message)
        else:
            report.problems.append(message + "; pass --pixels-only to accept")
    return data


def _unreadable(entry: ShardEntry, path: Path, exc: IntegrityError) -> str:
    if isinstance(exc, ShardMismatch):  # readable HDF5 that does not hold what the manifest says
        return f"{entry.path}: {exc.what}; run `dvc pull` or `dvc repro` to restore it"
    return (
        f"{entry.path}: truncated or corrupt ({path.stat().st_size} bytes, HDF5 cannot read it: "
        f"{exc.__cause__}); run `dvc pull` or `dvc repro` to restore it"
    )


def _check_fingerprint(manifest: Manifest, report: Report) -> None:
    recomputed = fingerprint(
        manifest.class_names,
        manifest.shards,
        manifest.params.to_dict(),
        manifest.format_version,
    )
    if recomputed != manifest.fingerprint:
        report.problems.append(
            f"manifest: fingerprint {manifest.fingerprint[:16]}... does not match its params and "
            f"shard entries ({recomputed[:16]}...): the manifest was edited; pull or extract it again"
        )


def _first_difference(entry: ShardEntry, data: ShardData) -> str:
    if len(data) != entry.patches:
        return f"holds {len(data)} patches, the manifest says {entry.patches}"
    for row, (want, got) in enumerate(zip(entry.digests(), data.patch_digests(), strict=True)):
        if want != got:
            y, x = (int(v) for v in data.coords[row])
            return (
                f"first differing patch is row {row} (patch {int(data.patch_index[row])} of "
                f"{data.source_of(row)} at y={y}, x={x}, as the damaged shard records them)"
            )
    return "patches match but labels, attributes or provenance differ"


def empty_parts(manifest: Manifest) -> list[str]:
    """Each split whose fraction is above 0 but holds no patch, or no patch of some class, in words."""
    found = []
    for split, fraction in zip(SPLITS, manifest.params.split.fractions, strict=True):
        if fraction <= 0:
            continue
        if manifest.count(split) == 0:
            found.append(f"the {split} split holds no patch")
            continue
        missing = [name for name, n in manifest.counts[split].per_class.items() if n == 0]
        if missing:
            found.append(f"the {split} split holds no patch of {', '.join(map(repr, missing))}")
    return found


def _check_counts(manifest: Manifest, report: Report) -> None:
    for empty in empty_parts(manifest):
        report.problems.append(
            f"manifest: {empty} (its fraction is above 0): not a usable dataset; extract it again "
            f"with a version that refuses this, and follow its advice"
        )
    for split in SPLITS:
        per_class = sum(manifest.counts[split].per_class.values())
        if per_class != manifest.counts[split].total:
            report.problems.append(
                f"manifest: {split} counts {manifest.counts[split].total} patches in all but "
                f"{per_class} per class"
            )
        claimed = manifest.counts[split].total
        if manifest.count(split) != claimed:
            report.problems.append(
                f"manifest: {split} counts {claimed} patches but its shards hold {manifest.count(split)}"
            )
