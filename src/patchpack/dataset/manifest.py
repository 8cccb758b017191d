"""The dataset manifest: what a complete dataset contains, with the hashes that prove it.

One frozen :class:`Manifest` is used on both sides: ``extract`` builds it with :meth:`Manifest.create`
and writes :meth:`Manifest.to_json`; ``verify``, ``info``, the loader and ``pull`` read it with
:func:`load_manifest`, which validates every field (a manifest may come from someone else) and names
the first bad key. ``manifest.json`` is written last, as :func:`~patchpack.dataset.io.manifest_json`
(sorted keys, fixed separators, a trailing newline), so its presence marks a complete dataset and its
bytes depend only on the content.

Its records (:class:`ShardEntry`, :class:`SplitCount`) are declared in
:mod:`patchpack.dataset.manifest_records`, the environment envelope in :mod:`patchpack.dataset.envelope`
and where a listed file may resolve in :mod:`patchpack.dataset.containment`; all are importable here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patchpack._version import __version__
from patchpack.dataset.containment import contained, dvc_cache_objects
from patchpack.dataset.envelope import annotated_environment, current_environment
from patchpack.dataset.io import manifest_json, write_json_atomic
from patchpack.dataset.manifest_records import _DIGEST, ShardEntry, SplitCount
from patchpack.dataset.shards import FORMAT_VERSION, READABLE_FORMATS, ShardLayout
from patchpack.dataset.sources import COUNT, HEX64, SourceRecord
from patchpack.errors import ConfigError, IntegrityError
from patchpack.params import SPLITS, DatasetParams
from patchpack.schema import Reader, Spec, dump_fields, param, read_record

MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 1 << 30
DAMAGED = "; the manifest is damaged or not from patchpack: regenerate it or pull it again"

__all__ = [
    "DAMAGED",
    "MANIFEST_NAME",
    "MAX_MANIFEST_BYTES",
    "Manifest",
    "ShardEntry",
    "SplitCount",
    "annotated_environment",
    "contained",
    "current_environment",
    "dvc_cache_objects",
    "fingerprint",
    "load_manifest",
]


@dataclass(frozen=True)
class Manifest:
    """A dataset's manifest (``manifest.json``), parsed and validated.

    ``folder`` is where it was read from (``None`` for one being built); it is not part of the JSON.
    """

    class_names: tuple[str, ...]
    params: DatasetParams
    sources: tuple[SourceRecord, ...]
    counts: Mapping[str, SplitCount]
    shards: tuple[ShardEntry, ...]
    fingerprint: str
    environment: Mapping[str, str]
    patchpack: str
    format_version: int = FORMAT_VERSION
    folder: Path | None = field(default=None, compare=False, repr=False)

    @classmethod
    def create(
        cls,
        *,
        class_names: Sequence[str],
        params: DatasetParams,
        sources: Sequence[SourceRecord],
        counts: Mapping[str, SplitCount],
        shards: Sequence[ShardEntry],
        environment: Mapping[str, str] | None = None,
    ) -> Manifest:
        """A new manifest; the fingerprint is computed, the environment read when not given."""
        return cls(
            class_names=tuple(class_names),
            params=params,
            sources=tuple(sources),
            counts=dict(counts),
            shards=tuple(shards),
            fingerprint=fingerprint(class_names, shards, params.to_dict()),
            environment=dict(environment if environment is not None else current_environment()),
            patchpack=__version__,
        )

    @property
    def patch_size(self) -> int:
        return self.params.extract.patch_size

    @property
    def channels(self) -> int:
        return self.params.channels

    def layout(self, entry: ShardEntry) -> ShardLayout:
        """What the shard of ``entry`` must hold: checked before any of its arrays is read."""
        return ShardLayout(
            patches=entry.patches,
            patch_size=self.patch_size,
            channels=self.channels,
            split=entry.split,
            class_names=self.class_names,
            masks=self.params.extract.targets == "mask",
            format_version=self.format_version,
        )

    def shard_path(self, entry: ShardEntry) -> Path:
        """Where the shard of ``entry`` is, refused when it would lead outside the dataset folder.

        Entry paths are validated as ``<split>/shard-NNNNN.h5`` when the manifest is read; this also
        refuses a shard (or split folder) that is a symlink resolving outside the folder, except into
        the DVC cache of the project holding the folder (DVC's ``cache.type symlink`` layout).
        """
        if self.folder is None:
            raise ValueError("this manifest was not read from a folder")
        return contained(self.folder, entry.path)

    def roi_path(self, record: SourceRecord) -> Path | None:
        """Where a source's tissue mask is (``None`` without one); inside the folder, or refused."""
        if record.roi is None or self.folder is None:
            return None
        return contained(self.folder, record.roi)

    def shards_for(self, split: str) -> list[ShardEntry]:
        """The shards of ``split`` in canonical order."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        return [entry for entry in self.shards if entry.split == split]

    def count(self, split: str) -> int:
        return sum(entry.patches for entry in self.shards_for(split))

    def to_json(self) -> str:
        """The canonical JSON text of ``manifest.json``."""
        return manifest_json(
            {
                "format_version": self.format_version,
                "patchpack": self.patchpack,
                "class_names": list(self.class_names),
                "params": self.params.to_dict(),
                "sources": [source.to_dict() for source in self.sources],
                "counts": {
                    split: {"total": count.total, "per_class": dict(count.per_class)}
                    for split, count in self.counts.items()
                },
                "shards": [dump_fields(entry) for entry in self.shards],
                "fingerprint": self.fingerprint,
                "environment": dict(self.environment),
            }
        )

    def write(self, folder: Path) -> Path:
        """Write ``<folder>/manifest.json`` atomically; return its path."""
        path = Path(folder) / MANIFEST_NAME
        write_json_atomic(path, json.loads(self.to_json()))
        return path

    @classmethod
    def from_json(
        cls, text: str, *, origin: str = MANIFEST_NAME, folder: Path | None = None
    ) -> Manifest:
        """Parse and validate manifest JSON; every problem is an :class:`IntegrityError` naming the key."""
        try:
            raw = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise IntegrityError(
                f"{origin}: not valid JSON ({type(exc).__name__}); regenerate with `dvc repro`"
            ) from None
        return _Parser(origin).manifest(raw, folder)


def load_manifest(folder: str | Path) -> Manifest:
    """Read and validate ``<folder>/manifest.json``.

    Raises
    ------
    IntegrityError
        When the manifest is missing (extraction incomplete or data not pulled), unreadable, of another
        format version, or malformed (the message names the key).
    """
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise IntegrityError(
            f"{path}: no manifest, so the dataset is incomplete or absent; "
            f"run `patchpack extract` (or `dvc pull` / `dvc repro`)"
        ) from None
    except OSError as exc:
        raise IntegrityError(
            f"{path}: unreadable manifest ({exc.strerror}); regenerate with `dvc repro`"
        ) from exc
    if len(data) > MAX_MANIFEST_BYTES:
        raise IntegrityError(
            f"{path}: manifest is larger than 1 GiB; it is not a patchpack manifest"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise IntegrityError(
            f"{path}: manifest is not UTF-8 text; regenerate with `dvc repro`"
        ) from None
    return Manifest.from_json(text, origin=str(path), folder=folder)


# shards.* params that decide only the HDF5 container's bytes, never the content: not fingerprinted
CONTAINER_PARAMS = ("chunk_patches", "compression", "level")


def fingerprint(
    class_names: Sequence[str],
    shards: Sequence[ShardEntry],
    params: Mapping[str, Any] | None,
    format_version: int = FORMAT_VERSION,
) -> str:
    """The dataset's identity: sha256 over the format, class names, the params that decide the
    content (from format 3: all but the container's, :data:`CONTAINER_PARAMS`, and the card's
    words, ``card.*``) and each shard's path, count and content hash.

    It depends on pixels, provenance and params only, not on compression or the HDF5 container's
    bytes. Format 2 did not cover the params: ``params`` is ignored for it.
    """
    lines: list[Any] = [format_version, list(class_names)]
    if format_version >= 3:
        content = {k: v for k, v in (params or {}).items() if k not in ("shards", "card")}
        packing = dict((params or {}).get("shards", {}))
        content["shards"] = {k: v for k, v in packing.items() if k not in CONTAINER_PARAMS}
        lines.append(content)
    lines += [[s.path, s.patches, s.content_sha256] for s in shards]
    return hashlib.sha256(manifest_json(lines).encode()).hexdigest()


class _Parser:
    """Validates a parsed manifest against the declarations of its records (:class:`ShardEntry`,
    :class:`~patchpack.dataset.sources.SourceRecord`); errors name the key and say the dataset
    cannot be trusted."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.reader = Reader(origin, IntegrityError, DAMAGED)

    def fail(self, key: str, expected: str, value: object) -> IntegrityError:
        return self.reader.fail(key, expected, value)  # type: ignore[return-value]

    def record(self, cls: type[Any], raw: object, key: str) -> Any:
        return read_record(cls, raw, key, self.reader, unknown="is not a manifest key")

    def manifest(self, raw: object, folder: Path | None) -> Manifest:
        top = self.reader.mapping(raw, "manifest")
        version = top.get("format_version")
        if isinstance(version, bool) or version not in READABLE_FORMATS:
            readable = " and ".join(str(v) for v in READABLE_FORMATS)
            raise IntegrityError(
                f"{self.origin}: format version {version!r}, this patchpack reads {readable}; "
                f"regenerate with `patchpack extract` or install the matching patchpack"
            )
        top = self.record(_Top, raw, "manifest").__dict__
        class_names = top["class_names"]
        if not class_names or len(set(class_names)) != len(class_names):
            raise self.fail("class_names", "a non-empty list of distinct names", list(class_names))
        try:
            params = DatasetParams.from_dict(top["params"], origin=f"{self.origin}: params")
        except ConfigError as exc:
            raise IntegrityError(f"{exc}; the manifest is damaged") from None
        return Manifest(
            class_names=class_names,
            params=params,
            sources=self.sources(top["sources"]),
            counts=self.counts(top["counts"], class_names),
            shards=self.shards(top["shards"]),
            fingerprint=top["fingerprint"],
            environment=self.environment(top["environment"]),
            patchpack=top["patchpack"],
            format_version=version,
            folder=folder,
        )

    def items(self, value: object, key: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(key, "a list", value)
        return value

    def shards(self, value: object) -> tuple[ShardEntry, ...]:
        entries = []
        seen: set[str] = set()
        for i, item in enumerate(self.items(value, "shards")):
            key = f"shards[{i}]"
            entry: ShardEntry = self.record(ShardEntry, item, key)
            if entry.path.split("/")[0] != entry.split:
                raise self.fail(
                    f"{key}.split", f"the split its path names ({entry.path})", entry.split
                )
            if entry.path in seen:
                raise self.fail(f"{key}.path", "unique", entry.path)
            seen.add(entry.path)
            if len(entry.patch_digests) != _DIGEST * entry.patches:
                raise self.fail(
                    f"{key}.patch_digests",
                    f"{entry.patches} digests of 16 hex characters",
                    entry.patch_digests,
                )
            entries.append(entry)
        return tuple(entries)

    def sources(self, value: object) -> tuple[SourceRecord, ...]:
        records = []
        for i, item in enumerate(self.items(value, "sources")):
            key = f"sources[{i}]"
            record: SourceRecord = self.record(SourceRecord, item, key)
            if record.roi is None:  # the mask's hash and scale mean nothing without the mask
                record = dataclasses.replace(record, roi_sha256=None, roi_downsample=None)
            elif record.roi_sha256 is None or record.roi_downsample is None:
                raise self.fail(f"{key}.roi_sha256", "set with roi", record.roi_sha256)
            if (record.labels is None) != (record.labels_sha256 is None):
                raise self.fail(
                    f"{key}.labels_sha256", "set exactly with labels", record.labels_sha256
                )
            records.append(record)
        return tuple(records)

    def counts(self, value: object, class_names: tuple[str, ...]) -> dict[str, SplitCount]:
        top = self.reader.mapping(value, "counts")
        self.exact(top, "counts", SPLITS)
        count = dataclasses.replace(
            COUNT_SPEC, maximum=2**62, expected="an integer from 0 to 2**62"
        )
        result = {}
        for split in SPLITS:
            entry = self.reader.mapping(top[split], f"counts.{split}")
            self.exact(entry, f"counts.{split}", ("total", "per_class"))
            per_class = self.reader.mapping(entry["per_class"], f"counts.{split}.per_class")
            self.exact(per_class, f"counts.{split}.per_class", class_names)
            result[split] = SplitCount(
                total=self.reader.integer(count, entry["total"], f"counts.{split}.total"),
                per_class={
                    name: self.reader.integer(
                        count, per_class[name], f"counts.{split}.per_class.{name}"
                    )
                    for name in class_names
                },
            )
        return result

    def exact(self, value: dict[str, Any], key: str, keys: tuple[str, ...]) -> None:
        missing = [name for name in keys if name not in value]
        if missing:
            raise self.reader.problem(f"{key}.{missing[0]} is missing")
        extra = sorted(str(name) for name in value if name not in keys)
        if extra:
            raise self.reader.problem(f"{key}.{extra[0]} is not a manifest key")

    def environment(self, value: object) -> dict[str, str]:
        env = self.reader.mapping(value, "environment")
        text = Spec(doc="", kind="str", empty=True)
        return {
            str(key): self.reader.string(text, item, f"environment.{key}")
            for key, item in env.items()
        }


def _strings(reader: Reader, raw: object, key: str) -> tuple[str, ...]:
    if not isinstance(raw, list):
        raise reader.fail(key, "a list of strings", raw)
    text = Spec(doc="", kind="str", empty=True)
    return tuple(reader.string(text, item, f"{key}[{i}]") for i, item in enumerate(raw))


COUNT_SPEC = Spec(doc="", **COUNT)


@dataclass(frozen=True)
class _Top:
    """The top level of ``manifest.json``, as :meth:`Manifest.to_json` writes it."""

    format_version: int = param(doc="the shard and manifest format", minimum=0)
    patchpack: str = param(doc="the version that wrote it", kind="str")
    class_names: tuple[str, ...] = param(
        doc="class names, label order", kind="custom", read=_strings
    )
    params: dict[str, Any] = param(
        doc="the params that decide the content", kind="custom", read=lambda r, v, k: v
    )
    sources: list[Any] = param(doc="one record per source", kind="custom", read=lambda r, v, k: v)
    counts: dict[str, Any] = param(
        doc="patches per split and class", kind="custom", read=lambda r, v, k: v
    )
    shards: list[Any] = param(doc="one entry per shard", kind="custom", read=lambda r, v, k: v)
    fingerprint: str = param(doc="sha256 over the content hashes", **HEX64)
    environment: dict[str, Any] = param(
        doc="versions that decide bytes", kind="custom", read=lambda r, v, k: v
    )
