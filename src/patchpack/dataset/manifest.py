"""The dataset manifest: what a complete dataset contains, with the hashes that prove it.

One frozen :class:`Manifest` is used on both sides: ``extract`` builds it with :meth:`Manifest.create`
and writes :meth:`Manifest.to_json`; ``verify``, ``info``, the loader and ``pull`` read it with
:func:`load_manifest`, which validates every field (a manifest may come from someone else) and names
the first bad key. ``manifest.json`` is written last, as :func:`~patchpack.dataset.io.manifest_json`
(sorted keys, fixed separators, a trailing newline), so its presence marks a complete dataset and its
bytes depend only on the content.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import re
import sys
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patchpack._version import __version__
from patchpack.dataset.io import file_sha256, manifest_json, write_json_atomic
from patchpack.dataset.shards import FORMAT_VERSION, ShardData, ShardLayout
from patchpack.dataset.sources import SourceRecord
from patchpack.errors import ConfigError, IntegrityError
from patchpack.params import SPLITS, DatasetParams

MANIFEST_NAME = "manifest.json"
SHARD_PATH = re.compile(r"^(train|val|test)/shard-[0-9]{5,}\.h5$")
ROI_PATH = re.compile(r"^roi/[0-9a-f]{16}\.png$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_DIGEST = 16  # hex characters per patch digest
MAX_MANIFEST_BYTES = 1 << 30


def contained(folder: Path, relative: str) -> Path:
    """``folder / relative``, refused when it resolves outside ``folder``.

    A link is accepted only when it resolves into the object store of the DVC cache of the project
    that holds ``folder`` (``.dvc/cache/files/``, or the ``cache.dir`` its config names): that is how
    DVC's ``cache.type symlink`` checks a dataset out. A link anywhere else is refused, since a
    dataset must hold its own shards.

    Raises
    ------
    IntegrityError
        When the path resolves outside ``folder`` and outside its project's DVC cache.
    """
    path = Path(folder) / relative
    root = Path(folder).resolve()
    target = path.resolve()
    if root in target.parents:
        return path
    cache = dvc_cache_objects(root)
    if cache is not None and cache in target.parents:
        return path
    raise IntegrityError(
        f"{relative}: resolves to {target}, outside the dataset folder {root} and outside its "
        f"project's DVC cache (a symlink); a dataset must hold its own shards: pull or extract it again"
    )


def dvc_cache_objects(folder: Path) -> Path | None:
    """The object folder of the DVC cache of the project holding ``folder`` (``None`` outside one).

    It is ``.dvc/cache/files`` unless ``.dvc/config`` or ``.dvc/config.local`` sets ``cache.dir``
    (relative to ``.dvc``), the later file winning as in DVC.
    """
    import configparser

    for project in (folder, *folder.parents):
        dvc_dir = project / ".dvc"
        if not dvc_dir.is_dir():
            continue
        cache = dvc_dir / "cache"
        for name in ("config", "config.local"):
            parser = configparser.ConfigParser(interpolation=None, strict=False)
            try:
                parser.read(dvc_dir / name, encoding="utf-8")
            except (configparser.Error, UnicodeDecodeError):
                continue
            if parser.has_option("cache", "dir"):
                cache = (dvc_dir / parser.get("cache", "dir")).expanduser()
        return (cache / "files").resolve()
    return None


@dataclass(frozen=True)
class ShardEntry:
    """One shard as the manifest records it; ``path`` is relative to the dataset folder."""

    path: str
    split: str
    patches: int
    sha256: str
    content_sha256: str
    patch_digests: str

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
            fingerprint=fingerprint(class_names, shards),
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
                "shards": [dataclasses.asdict(entry) for entry in self.shards],
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


def fingerprint(class_names: Sequence[str], shards: Sequence[ShardEntry]) -> str:
    """The dataset's identity: sha256 over class names and each shard's path, count and content hash.

    It depends on pixels and provenance only, not on compression or the HDF5 container's bytes.
    """
    lines: list[Any] = [FORMAT_VERSION, list(class_names)]
    lines += [[s.path, s.patches, s.content_sha256] for s in shards]
    return hashlib.sha256(manifest_json(lines).encode()).hexdigest()


def annotated_environment() -> dict[str, str]:
    """:func:`current_environment` plus shapely and GEOS, which decide labels from annotations
    (repairs, unions, areas): the envelope of a dataset labelled by GeoJSON files."""
    import shapely

    return {
        **current_environment(),
        "shapely": shapely.__version__,
        "geos": shapely.geos_version_string,
    }


def current_environment() -> dict[str, str]:
    """The versions that can change a shard's bytes or a patch's pixels (tile decoders included)."""
    import h5py
    import hdf5plugin
    import numpy
    import PIL
    from PIL import features

    from patchpack.dataset.readers import backend_versions

    return {
        **backend_versions(),
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


def _has(item: object, key: str) -> bool:
    return isinstance(item, dict) and key in item


class _Parser:
    """Validates a parsed manifest; errors name the key and say the dataset cannot be trusted."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def fail(self, key: str, expected: str, value: object) -> IntegrityError:
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return IntegrityError(
            f"{self.origin}: {key} must be {expected} (received {shown}); the manifest is damaged "
            f"or not from patchpack: regenerate it or pull it again"
        )

    def mapping(
        self, value: object, key: str, keys: tuple[str, ...] | None = None
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, "an object", value)
        if keys is not None:
            missing = [name for name in keys if name not in value]
            extra = sorted(str(name) for name in value if name not in keys)
            if missing:
                raise IntegrityError(
                    f"{self.origin}: {key}.{missing[0]} is missing; the manifest is damaged"
                )
            if extra:
                raise IntegrityError(
                    f"{self.origin}: {key}.{extra[0]} is not a manifest key; the manifest is damaged "
                    f"or from another patchpack version"
                )
        return value

    def string(self, value: object, key: str, pattern: re.Pattern[str] | None = None) -> str:
        if not isinstance(value, str) or (pattern is not None and not pattern.match(value)):
            raise self.fail(
                key, "a string" if pattern is None else f"a string like {pattern.pattern}", value
            )
        return value

    def integer(self, value: object, key: str, maximum: int = 2**31 - 1) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
            raise self.fail(key, f"an integer from 0 to {maximum}", value)
        return value

    def strings(self, value: object, key: str) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(key, "a list of strings", value)
        return tuple(self.string(item, f"{key}[{i}]") for i, item in enumerate(value))

    def manifest(self, raw: object, folder: Path | None) -> Manifest:
        top = self.mapping(raw, "manifest")
        version = top.get("format_version")
        if version != FORMAT_VERSION:
            raise IntegrityError(
                f"{self.origin}: format version {version!r}, this patchpack reads {FORMAT_VERSION}; "
                f"regenerate with `patchpack extract` or install the matching patchpack"
            )
        keys = ("format_version", "patchpack", "class_names", "params", "sources", "counts",
                "shards", "fingerprint", "environment")  # fmt: skip
        top = self.mapping(raw, "manifest", keys)
        class_names = self.strings(top["class_names"], "class_names")
        if not class_names or len(set(class_names)) != len(class_names):
            raise self.fail("class_names", "a non-empty list of distinct names", top["class_names"])
        try:
            params = DatasetParams.from_dict(top["params"], origin=f"{self.origin}: params")
        except ConfigError as exc:
            raise IntegrityError(f"{exc}; the manifest is damaged") from None
        shards = self.shards(top["shards"])
        return Manifest(
            class_names=class_names,
            params=params,
            sources=self.sources(top["sources"]),
            counts=self.counts(top["counts"], class_names),
            shards=shards,
            fingerprint=self.string(top["fingerprint"], "fingerprint", _HEX64),
            environment=self.environment(top["environment"]),
            patchpack=self.string(top["patchpack"], "patchpack"),
            folder=folder,
        )

    def shards(self, value: object) -> tuple[ShardEntry, ...]:
        if not isinstance(value, list):
            raise self.fail("shards", "a list", value)
        entries = []
        seen: set[str] = set()
        for i, item in enumerate(value):
            key = f"shards[{i}]"
            entry = self.mapping(item, key, tuple(f.name for f in dataclasses.fields(ShardEntry)))
            path = self.string(entry["path"], f"{key}.path", SHARD_PATH)
            split = self.string(entry["split"], f"{key}.split")
            if path.split("/")[0] != split:
                raise self.fail(f"{key}.split", f"the split its path names ({path})", split)
            if path in seen:
                raise self.fail(f"{key}.path", "unique", path)
            seen.add(path)
            patches = self.integer(entry["patches"], f"{key}.patches")
            digests = self.string(entry["patch_digests"], f"{key}.patch_digests")
            if len(digests) != _DIGEST * patches:
                raise self.fail(
                    f"{key}.patch_digests", f"{patches} digests of 16 hex characters", digests
                )
            entries.append(
                ShardEntry(
                    path=path,
                    split=split,
                    patches=patches,
                    sha256=self.string(entry["sha256"], f"{key}.sha256", _HEX64),
                    content_sha256=self.string(
                        entry["content_sha256"], f"{key}.content_sha256", _HEX64
                    ),
                    patch_digests=digests,
                )
            )
        return tuple(entries)

    def sources(self, value: object) -> tuple[SourceRecord, ...]:
        if not isinstance(value, list):
            raise self.fail("sources", "a list", value)
        keys = tuple(SourceRecord("", "", 0, 0, "").to_dict())
        labelled = tuple(SourceRecord("", "", 0, 0, "", labels="", labels_sha256="").to_dict())
        return tuple(
            self.source(
                self.mapping(item, f"sources[{i}]", labelled if _has(item, "labels") else keys),
                f"sources[{i}]",
            )
            for i, item in enumerate(value)
        )

    def source(self, entry: dict[str, Any], key: str) -> SourceRecord:
        roi = entry["roi"]
        if roi is not None:
            self.string(roi, f"{key}.roi", ROI_PATH)
        return SourceRecord(
            id=self.string(entry["id"], f"{key}.id"),
            class_name=self.string(entry["class"], f"{key}.class"),
            width=self.integer(entry["width"], f"{key}.width"),
            height=self.integer(entry["height"], f"{key}.height"),
            sha256=self.string(entry["sha256"], f"{key}.sha256", _HEX64),
            backend=self.string(entry["backend"], f"{key}.backend"),
            level=self.integer(entry["level"], f"{key}.level", 64),
            downsample=self.number(entry["downsample"], f"{key}.downsample"),
            mpp=None if entry["mpp"] is None else self.number(entry["mpp"], f"{key}.mpp"),
            roi=roi,
            roi_sha256=None
            if roi is None
            else self.string(entry["roi_sha256"], f"{key}.roi_sha256", _HEX64),
            roi_downsample=None
            if roi is None
            else self.number(entry["roi_downsample"], f"{key}.roi_downsample"),
            labels=None if "labels" not in entry else self.string(entry["labels"], f"{key}.labels"),
            labels_sha256=None
            if "labels" not in entry
            else self.string(entry["labels_sha256"], f"{key}.labels_sha256", _HEX64),
        )

    def number(self, value: object, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e9:
            raise self.fail(key, "a positive number", value)
        return float(value)

    def counts(self, value: object, class_names: tuple[str, ...]) -> dict[str, SplitCount]:
        top = self.mapping(value, "counts", SPLITS)
        result = {}
        for split in SPLITS:
            entry = self.mapping(top[split], f"counts.{split}", ("total", "per_class"))
            per_class = self.mapping(entry["per_class"], f"counts.{split}.per_class", class_names)
            result[split] = SplitCount(
                total=self.integer(entry["total"], f"counts.{split}.total", 2**62),
                per_class={
                    name: self.integer(per_class[name], f"counts.{split}.per_class.{name}", 2**62)
                    for name in class_names
                },
            )
        return result

    def environment(self, value: object) -> dict[str, str]:
        env = self.mapping(value, "environment")
        return {str(key): self.string(item, f"environment.{key}") for key, item in env.items()}
