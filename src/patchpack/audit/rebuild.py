"""``patchpack verify --rebuild``: regenerate a dataset from its sources and compare it, shard by shard
and patch by patch, with the folder (after the checks of :func:`patchpack.audit.verify.verify`)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from patchpack.audit.verify import Report, verify
from patchpack.dataset.manifest import Manifest, load_manifest
from patchpack.dataset.shards import (
    FORMAT_VERSION,
    ShardData,
    read_shard,
)
from patchpack.errors import ConfigError, IntegrityError, OutputError
from patchpack.params import Params


def verify_rebuild(folder: Path, params: Params, *, workers: int = 1) -> Report:
    """Regenerate the dataset from its sources into a temporary folder and compare it with ``folder``.

    The rebuild uses the params recorded in the manifest and the source folder from ``params``.
    """
    from patchpack.dataset.extract import extract

    folder = Path(folder)
    _check_rebuildable(folder)
    report = verify(folder)
    report.title = f"verify --rebuild {folder}"
    try:
        manifest = load_manifest(folder)
    except IntegrityError:
        return report
    scratch = _scratch(folder)
    try:
        rebuilt = extract(
            params.with_dataset(manifest.params), out=scratch / "patches", workers=workers
        )
        report.problems += _label_files_changed(manifest, rebuilt)
        theirs = {entry.path: entry for entry in rebuilt.shards}
        ours = {entry.path: entry for entry in manifest.shards}
        for path in sorted(set(ours) | set(theirs)):
            if path not in theirs:
                report.problems.append(f"{path}: in the dataset but not produced by the rebuild")
            elif path not in ours:
                report.problems.append(f"{path}: produced by the rebuild but not in the dataset")
            elif theirs[path].content_sha256 != ours[path].content_sha256:
                report.problems.append(
                    _rebuild_difference(
                        path,
                        read_shard(folder / path),
                        read_shard(scratch / "patches" / path),
                        manifest.class_names,
                    )
                )
            elif theirs[path].sha256 != ours[path].sha256:
                report.notes.append(f"{path}: rebuild gives the same pixels in different bytes")
        if rebuilt.fingerprint == manifest.fingerprint:
            report.notes.append(f"rebuild reproduces fingerprint {manifest.fingerprint}")
        else:
            report.problems.append(
                f"rebuild fingerprint {rebuilt.fingerprint} differs from {manifest.fingerprint}"
            )
        env_diff = sorted(
            key
            for key, value in rebuilt.environment.items()
            if manifest.environment.get(key) != value
        )
        if env_diff:
            report.notes.append(
                f"environment differs from the manifest's in: {', '.join(env_diff)}"
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return report


def _check_rebuildable(folder: Path) -> None:
    """Refuse, before any work, a dataset of an older format: this patchpack cannot give its bytes."""
    try:
        manifest = load_manifest(folder)
    except IntegrityError:
        return  # verify reports it
    if manifest.format_version != FORMAT_VERSION:
        raise ConfigError(
            f"{folder}: written in format {manifest.format_version} by patchpack "
            f"{manifest.patchpack}, and this patchpack extracts format {FORMAT_VERSION} (what "
            f"changed: docs/format.md), so a rebuild cannot match its bytes; run `patchpack verify` "
            f"without --rebuild to check its hashes, or install patchpack {manifest.patchpack}"
        )


def _scratch(folder: Path) -> Path:
    """A temporary folder for the rebuild: beside the dataset (same disk), else the system's
    temporary folder when the dataset's folder is read-only."""
    for place in (folder.parent, None):
        try:
            return Path(tempfile.mkdtemp(prefix=".rebuild-", dir=place))
        except OSError as exc:
            error = exc
    raise OutputError(
        f"{folder.parent}: cannot create a folder for the rebuild there or in "
        f"{tempfile.gettempdir()} ({error.strerror}); set TMPDIR to a writable folder"
    ) from error


def _label_files_changed(manifest: Manifest, rebuilt: Manifest) -> list[str]:
    """A line for each source whose label file is not the one the dataset was built from."""
    now = {record.id: record for record in rebuilt.sources}
    problems = []
    for record in manifest.sources:
        other = now.get(record.id)
        if record.labels_sha256 is None or other is None:
            continue
        if other.labels_sha256 != record.labels_sha256:
            problems.append(
                f"different labels: the label file of {record.id} ({other.labels}) has sha256 "
                f"{(other.labels_sha256 or '-')[:16]}..., the dataset was built from "
                f"{record.labels} with sha256 {record.labels_sha256[:16]}..."
            )
    return problems


def _rebuild_difference(
    path: str, ours: ShardData, theirs: ShardData, class_names: tuple[str, ...]
) -> str:
    """What differs first between a shard and its rebuild: a label, a position, a mask or pixels."""
    if len(ours) != len(theirs):
        return f"{path}: the rebuild holds {len(theirs)} patches, the dataset {len(ours)}"
    for row in range(len(ours)):
        where = (
            f"row {row} (patch {int(ours.patch_index[row])} of {ours.source_of(row)} at "
            f"y={int(ours.coords[row, 0])}, x={int(ours.coords[row, 1])})"
        )
        if ours.source_of(row) != theirs.source_of(row) or not np.array_equal(
            ours.coords[row], theirs.coords[row]
        ):
            y, x = (int(v) for v in theirs.coords[row])
            return (
                f"{path}: rebuild gives different patches: {where} is patch "
                f"{int(theirs.patch_index[row])} of {theirs.source_of(row)} at y={y}, x={x} in "
                f"the rebuild"
            )
        if ours.labels[row] != theirs.labels[row]:
            return (
                f"{path}: rebuild gives different labels: the first patch whose label changed is "
                f"{where}: {_class(class_names, ours.labels[row])} in the dataset, "
                f"{_class(class_names, theirs.labels[row])} in the rebuild"
            )
        if _masks_differ(ours, theirs, row):
            return f"{path}: rebuild gives different label masks: the first is {where}"
        if not np.array_equal(ours.images[row], theirs.images[row]):
            return f"{path}: rebuild gives different pixels: the first differing patch is {where}"
    return f"{path}: rebuild gives different attributes or provenance (patches, labels match)"


def _masks_differ(ours: ShardData, theirs: ShardData, row: int) -> bool:
    if ours.masks is None or theirs.masks is None:
        return ours.masks is not theirs.masks
    return not np.array_equal(ours.masks[row], theirs.masks[row])


def _class(class_names: tuple[str, ...], label: int) -> str:
    index = int(label)
    return repr(class_names[index]) if 0 <= index < len(class_names) else f"label {index}"
