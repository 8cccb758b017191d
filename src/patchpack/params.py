"""params.yaml -> frozen, typed dataclasses. All configuration is validated here, once.

Every check fails with a :class:`~patchpack.errors.ConfigError` whose message names the key, echoes
what it received and says what would be accepted, e.g.
``params.yaml: split.fractions must sum to 1 (received 0.7 + 0.2 + 0.2 = 1.1)``.
The rest of patchpack takes these dataclasses (or plain values taken from them) and never opens YAML.

A params file is UTF-8 YAML without aliases (``*name``): an alias can make a few lines expand into
billions of values, and params.yaml never needs one. A key written twice in one mapping (two
``extract:`` blocks) is refused with both lines, where PyYAML would silently keep the last. Sizes
and counts have upper limits (``MAX_PATCHES``, ``MAX_PATCH_SIZE``, ``MAX_BLOCK_SIZE``), so a typo
fails here in milliseconds instead of running out of memory minutes later.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from patchpack.errors import ConfigError

SPLITS = ("train", "val", "test")
SPLIT_MODES = ("image", "region", "patch")
COMPRESSIONS = ("zstd", "gzip", "none")
MODELS = ("cnn", "resnet50")
SAMPLINGS = ("random", "grid")
ROIS = ("all", "tissue", "mask", "tissue+mask")
TARGETS = ("none", "mask")
LABEL_ORIGINS = ("folder", "mask", "annotations")
LABEL_RULES = ("centre", "majority")
LABEL_KEYS = ("from", "dir", "classes", "rule", "min_fraction")
MAX_CLASSES = 255  # a label raster and a mask target hold class numbers 1..255 in uint8 (0: none)
EXTRACT_KEYS = (
    "patch_size",
    "per_image",
    "per_class",
    "min_std",
    "max_tries",
    "sampling",
    "stride",
    "roi",
    "min_roi_fraction",
    "targets",
)

# Upper limits: far above any real dataset, low enough that the plan and its arrays fit in memory.
MAX_PATCHES = 10_000_000  # extract.per_image and extract.per_class
MAX_PATCH_SIZE = 4096  # extract.patch_size, pixels
MAX_BLOCK_SIZE = 65536  # split.block_size, pixels

# What a hostile or broken YAML text can raise besides yaml.YAMLError: PyYAML's constructors let
# ValueError (``2019-02-30``), TypeError and AttributeError escape, and deep nesting recurses.
_PARSE_ERRORS = (yaml.YAMLError, ValueError, TypeError, AttributeError, RecursionError)


@dataclasses.dataclass(frozen=True)
class SourceParams:
    """Where images come from and how they are decoded."""

    dir: str = "data/demo"
    channels: int = 1
    max_megapixels: float = 100.0
    level: int = 0
    mpp: float | None = None


@dataclasses.dataclass(frozen=True)
class ExtractParams:
    """How many patches of which size are drawn from each image."""

    patch_size: int = 32
    per_image: int | None = 400
    per_class: int | None = None
    min_std: float = 2.0
    max_tries: int = 50
    sampling: str = "random"
    stride: int | None = None
    roi: str = "all"
    min_roi_fraction: float = 0.5
    targets: str = "none"

    def step(self) -> int:
        """The grid's stride: ``stride``, or ``patch_size`` (patches that touch, no overlap)."""
        return self.stride if self.stride is not None else self.patch_size


@dataclasses.dataclass(frozen=True)
class LabelParams:
    """Where each patch's label comes from (``labels`` in params.yaml).

    ``origin`` is ``labels.from``: ``folder`` (the image's class subfolder), ``mask`` (a label raster
    per image) or ``annotations`` (a GeoJSON file per image). For the last two, ``classes`` names the
    classes: raster value (or class number) ``i`` in 1..K is ``classes[i - 1]`` and 0 is unlabelled,
    and ``rule`` says how a patch is labelled: ``centre`` (the class under its centre pixel) or
    ``majority`` (the class of at least ``min_fraction`` of its area). ``dir`` holds the label files,
    at the same relative path as each image; it is a path, so the manifest does not record it.
    """

    origin: str = "folder"
    dir: str | None = None
    classes: tuple[str, ...] = ()
    rule: str = "centre"
    min_fraction: float = 0.5

    @property
    def per_patch(self) -> bool:
        """Whether labels come from label files (per patch) rather than from folders (per image)."""
        return self.origin != "folder"

    def to_dict(self) -> dict[str, Any]:
        """What the manifest records (no ``dir``: a local path)."""
        return {
            "from": self.origin,
            "classes": list(self.classes),
            "rule": self.rule,
            "min_fraction": self.min_fraction,
        }


@dataclasses.dataclass(frozen=True)
class SplitParams:
    """How sources (or regions of them) are divided into train/val/test."""

    mode: str = "region"
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    block_size: int = 64

    def fraction(self, split: str) -> float:
        return self.fractions[SPLITS.index(split)]


@dataclasses.dataclass(frozen=True)
class ShardParams:
    """How patches are packed into HDF5 shards."""

    target_patches: int = 512
    chunk_patches: int = 256
    compression: str = "zstd"
    level: int = 3


@dataclasses.dataclass(frozen=True)
class ModelParams:
    """Training settings for one model.

    ``bn_batches``: train batches run in training mode before each validation to re-estimate the
    BatchNorm moving statistics (:mod:`patchpack.training.batchnorm`); 0 keeps Keras' moving averages.
    A model without BatchNorm ignores it.
    """

    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    patience: int = 3
    bn_batches: int = 0


# Per-model defaults, the same as params.yaml's (a test keeps them equal).
DEFAULT_MODELS: Mapping[str, ModelParams] = {
    "cnn": ModelParams(epochs=30, batch_size=64, learning_rate=1e-3, patience=3),
    "resnet50": ModelParams(epochs=1, batch_size=32, learning_rate=1e-3, patience=2, bn_batches=16),
}


@dataclasses.dataclass(frozen=True)
class TrainParams:
    """Training settings shared by every model, and one :class:`ModelParams` per model."""

    mixed_precision: bool = False
    jit_compile: bool = False
    loader_workers: int = 2
    models: Mapping[str, ModelParams] = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_MODELS)
    )

    def model(self, name: str) -> ModelParams:
        if name not in self.models:
            raise ConfigError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
        return self.models[name]


@dataclasses.dataclass(frozen=True)
class DatasetParams:
    """The params that decide a dataset's content: what the manifest records (no paths, no guards)."""

    seed: int = 2019
    channels: int = 1
    extract: ExtractParams = dataclasses.field(default_factory=ExtractParams)
    split: SplitParams = dataclasses.field(default_factory=SplitParams)
    shards: ShardParams = dataclasses.field(default_factory=ShardParams)
    level: int = 0
    mpp: float | None = None
    labels: LabelParams = dataclasses.field(default_factory=LabelParams)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values, as the manifest stores them under ``params``.

        Keys added after format 2 (``labels``, ``extract.targets``) are written only when they differ
        from their defaults, so a dataset labelled by folders keeps the manifest bytes it had before
        they existed, and older manifests stay readable.
        """
        extract = dataclasses.asdict(self.extract)
        if self.extract.targets == ExtractParams.targets:
            del extract["targets"]
        result = {
            "seed": self.seed,
            "channels": self.channels,
            "level": self.level,
            "mpp": self.mpp,
            "extract": extract,
            "split": {
                "mode": self.split.mode,
                "fractions": dict(zip(SPLITS, self.split.fractions, strict=True)),
                "block_size": self.split.block_size,
            },
            "shards": dataclasses.asdict(self.shards),
        }
        if self.labels.per_patch:
            result["labels"] = self.labels.to_dict()
        return result

    @classmethod
    def from_dict(cls, raw: object, origin: str = "manifest") -> DatasetParams:
        """The inverse of :meth:`to_dict`, validated like params.yaml (errors name the key)."""
        reader = _Reader(origin)
        section = reader.mapping(raw, "params")
        keys = ("seed", "channels", "level", "mpp", "extract", "split", "shards")
        reader.known(section, "params", (*keys, "labels"))
        for key in keys:
            if key not in section:
                raise ConfigError(f"{origin}: params.{key} is missing")
        labels = reader.mapping(section.get("labels", {}), "params.labels")
        extract = section["extract"]
        roi = extract.get("roi") if isinstance(extract, Mapping) else None
        if labels or (isinstance(roi, str) and "mask" in roi.split("+")):
            # the manifest records no label folder (a local path): any one passes validation
            labels = {**labels, "dir": "."}
        params = params_from_dict(
            {
                "labels": labels,
                "base": {"seed": section["seed"]},
                "source": {
                    "channels": section["channels"],
                    "level": section["level"],
                    "mpp": section["mpp"],
                },
                "extract": section["extract"],
                "split": section["split"],
                "shards": section["shards"],
            },
            origin=origin,
        )
        return dataclasses.replace(
            params.dataset, labels=dataclasses.replace(params.dataset.labels, dir=None)
        )


@dataclasses.dataclass(frozen=True)
class Params:
    """Everything in params.yaml, validated."""

    seed: int = 2019
    source: SourceParams = dataclasses.field(default_factory=SourceParams)
    extract: ExtractParams = dataclasses.field(default_factory=ExtractParams)
    split: SplitParams = dataclasses.field(default_factory=SplitParams)
    shards: ShardParams = dataclasses.field(default_factory=ShardParams)
    train: TrainParams = dataclasses.field(default_factory=TrainParams)
    labels: LabelParams = dataclasses.field(default_factory=LabelParams)

    @property
    def dataset(self) -> DatasetParams:
        """The part of these params that decides a dataset's content (no paths)."""
        return DatasetParams(
            seed=self.seed,
            channels=self.source.channels,
            level=self.source.level,
            mpp=self.source.mpp,
            extract=self.extract,
            split=self.split,
            shards=self.shards,
            labels=dataclasses.replace(self.labels, dir=None),
        )

    def dataset_dict(self) -> dict[str, Any]:
        """:attr:`dataset` as plain JSON-able values (what the manifest records)."""
        return self.dataset.to_dict()

    def with_dataset(self, dataset: DatasetParams) -> Params:
        """These params with the content-deciding part replaced (e.g. by a manifest's, to rebuild it)."""
        return dataclasses.replace(
            self,
            seed=dataset.seed,
            source=dataclasses.replace(
                self.source, channels=dataset.channels, level=dataset.level, mpp=dataset.mpp
            ),
            extract=dataset.extract,
            split=dataset.split,
            shards=dataset.shards,
            labels=dataclasses.replace(dataset.labels, dir=self.labels.dir),
        )


def load_params(
    path: str | Path = "params.yaml",
    *,
    source_dir: str | None = None,
    labels_dir: str | None = None,
) -> Params:
    """Read and validate params.yaml; ``source_dir`` overrides ``source.dir``, ``labels_dir``
    ``labels.dir``.

    Raises
    ------
    ConfigError
        When the file is missing or unreadable, not UTF-8, not valid YAML, uses YAML aliases or
        holds a key twice in one mapping, or when any key is unknown, of the wrong type or
        impossible.
    """
    path = Path(path)
    raw = _parse_yaml(path, _read_text(path))
    params = params_from_dict({} if raw is None else raw, origin=str(path))
    if source_dir is not None:
        params = dataclasses.replace(
            params, source=dataclasses.replace(params.source, dir=str(source_dir))
        )
    if labels_dir is not None:
        # no check against labels.from here: `verify --rebuild` takes those from the manifest
        params = dataclasses.replace(
            params, labels=dataclasses.replace(params.labels, dir=str(labels_dir))
        )
    return params


def _read_text(path: Path) -> str:
    """The params file's text, decoded as UTF-8."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such params file; run from the project folder or pass --params PATH"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read params file ({exc.strerror})") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            f"save the params file as UTF-8"
        ) from exc


class _AliasRefused(yaml.YAMLError):
    """A YAML alias (``*name``) in a params file; ``mark`` is where it stands."""

    def __init__(self, anchor: str, mark: Any) -> None:
        super().__init__(anchor)
        self.anchor = anchor
        self.mark = mark


class _DuplicateKey(yaml.YAMLError):
    """A key written twice in one YAML mapping (``key`` dotted from the top); ``mark`` is the second."""

    def __init__(self, key: str, mark: Any, first: Any, block: bool) -> None:
        super().__init__(key)
        self.key = key
        self.mark = mark
        self.first = first
        self.block = block


class _ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases (each could repeat a whole subtree: billion laughs) and
    without duplicate keys (PyYAML keeps the last silently, so a second ``extract:`` block would
    replace the first)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped in types-PyYAML
            raise _AliasRefused(str(event.anchor), event.start_mark)
        return super().compose_node(parent, index)

    def construct_document(self, node: Any) -> Any:
        self._refuse_duplicates(node, "")
        return super().construct_document(node)

    def _refuse_duplicates(self, node: Any, where: str) -> None:
        """Walk the composed tree (no aliases, so no cycles); keys compare as the values they load
        as, so ``1`` and ``0x1`` are one key, as they would be in the mapping."""
        if isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._refuse_duplicates(item, f"{where}[{index}]")
            return
        if not isinstance(node, yaml.MappingNode):
            return
        seen: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<``: merged keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            name = f"{where}.{key}" if where else str(key)
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:  # an unhashable key: the constructor refuses it, with its line
                continue
            if first is not key_node.start_mark:
                block = isinstance(value_node, yaml.MappingNode)
                raise _DuplicateKey(name, key_node.start_mark, first, block)
            self._refuse_duplicates(value_node, name)


def _parse_yaml(path: Path, text: str) -> object:
    """The YAML document in ``text``, refused (with its line) when malformed, when it uses aliases
    or when a mapping holds one key twice."""
    try:
        return yaml.load(text, Loader=_ParamsLoader)  # a SafeLoader: no Python objects
    except _AliasRefused as exc:
        raise ConfigError(
            f"{path}: line {exc.mark.line + 1}: YAML aliases (*{exc.anchor}) are not allowed in "
            f"params files; write the value out in full"
        ) from exc
    except _DuplicateKey as exc:
        fix = "merge the two blocks" if exc.block else "keep one of them"
        raise ConfigError(
            f"{path}:{exc.mark.line + 1}: key {exc.key!r} appears twice (first on line "
            f"{exc.first.line + 1}); {fix}"
        ) from exc
    except _PARSE_ERRORS as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} is not valid YAML; fix the syntax") from exc


def params_from_dict(raw: object, origin: str = "params") -> Params:
    """Validate a params mapping (the parsed YAML) into :class:`Params`."""
    reader = _Reader(origin)
    top = reader.mapping(raw, "")
    reader.known(top, "", ("base", "source", "extract", "split", "shards", "train", "labels"))
    base = reader.mapping(top.get("base", {}), "base")
    reader.known(base, "base", ("seed",))
    seed = reader.integer(base, "base.seed", Params.seed, minimum=0)
    if seed >= 2**63:
        raise ConfigError(f"{origin}: base.seed must be below 2**63 (received {seed})")
    params = Params(
        seed=seed,
        source=_source(reader, top.get("source", {})),
        extract=_extract(reader, top.get("extract", {})),
        split=_split(reader, top.get("split", {})),
        shards=_shards(reader, top.get("shards", {})),
        train=_train(reader, top.get("train", {})),
        labels=_labels(reader, top.get("labels", {})),
    )
    _check_labelling(reader.origin, params)
    return params


def _labels(reader: _Reader, raw: object) -> LabelParams:
    section = reader.mapping(raw, "labels")
    reader.known(section, "labels", LABEL_KEYS)
    default = LabelParams()
    origin = reader.choice(section, "labels.from", default.origin, LABEL_ORIGINS)
    directory = None
    if section.get("dir") is not None:
        directory = reader.string(section, "labels.dir", ".")
    rule = reader.choice(section, "labels.rule", default.rule, LABEL_RULES)
    fraction = reader.number(section, "labels.min_fraction", default.min_fraction, positive=True)
    if fraction > 1:
        raise ConfigError(
            f"{reader.origin}: labels.min_fraction must be above 0 and at most 1 "
            f"(received {fraction:g})"
        )
    classes: tuple[str, ...] = ()
    if origin == "folder":
        given = {
            "classes": section.get("classes"),
            "rule": None if rule == default.rule else rule,
            "min_fraction": None if fraction == default.min_fraction else fraction,
        }
        for key, value in given.items():
            if value is not None:
                raise ConfigError(
                    f"{reader.origin}: labels.{key} applies to labels.from: mask or annotations; "
                    f"with labels.from: folder the class subfolders are the classes "
                    f"(received {key}={value!r}); remove it"
                )
    else:
        if directory is None:
            raise ConfigError(
                f"{reader.origin}: labels.from: {origin} needs labels.dir, the folder of label "
                f"files (one per image, at the image's relative path); set labels.dir"
            )
        classes = _class_list(reader, section.get("classes"), origin)
    return LabelParams(
        origin=origin, dir=directory, classes=classes, rule=rule, min_fraction=fraction
    )


def _class_list(reader: _Reader, value: object, origin: str) -> tuple[str, ...]:
    """``labels.classes``: 1 to ``MAX_CLASSES`` distinct, non-empty names, in class-number order."""
    if not isinstance(value, list) or not value:
        raise ConfigError(
            f"{reader.origin}: labels.from: {origin} needs labels.classes, a list of class names "
            f"(raster value or class number 1 is the first; 0 is unlabelled) (received {value!r})"
        )
    if len(value) > MAX_CLASSES:
        raise ConfigError(
            f"{reader.origin}: labels.classes holds {len(value)} names, at most {MAX_CLASSES} "
            f"fit a uint8 label raster"
        )
    for i, name in enumerate(value):
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(
                f"{reader.origin}: labels.classes[{i}] must be a non-empty string (received {name!r})"
            )
    seen: set[str] = set()
    for name in value:
        if name in seen:
            raise ConfigError(
                f"{reader.origin}: labels.classes names {name!r} twice; each class once"
            )
        seen.add(name)
    return tuple(value)


def _check_labelling(origin: str, params: Params) -> None:
    """The rules that join ``labels`` to ``extract``: each names both keys it concerns."""
    extract, labels = params.extract, params.labels
    if "mask" in extract.roi.split("+") and labels.dir is None:
        raise ConfigError(
            f"{origin}: extract.roi: {extract.roi} needs labels.dir (the label rasters or ROI "
            f"masks, one per image); set labels.dir or use extract.roi: all or tissue"
        )
    if labels.origin == "folder" and labels.dir is not None and "mask" not in extract.roi:
        raise ConfigError(
            f"{origin}: labels.dir is used by labels.from: mask or annotations or by "
            f"extract.roi: mask (received labels.from: folder, extract.roi: {extract.roi}); "
            f"set one of them or remove labels.dir"
        )
    if extract.targets == "mask" and not labels.per_patch:
        raise ConfigError(
            f"{origin}: extract.targets: mask stores each patch's label mask, so it needs "
            f"labels.from: mask or annotations (received labels.from: {labels.origin})"
        )
    if labels.per_patch and extract.per_class is not None:
        raise ConfigError(
            f"{origin}: extract.per_class balances classes of whole images, but with labels.from: "
            f"{labels.origin} a patch's class is only known once it is drawn; use extract.per_image"
        )


def _source(reader: _Reader, raw: object) -> SourceParams:
    section = reader.mapping(raw, "source")
    reader.known(section, "source", ("dir", "channels", "max_megapixels", "level", "mpp"))
    default = SourceParams()
    directory = reader.string(section, "source.dir", default.dir)
    channels = reader.integer(section, "source.channels", default.channels)
    if channels not in (1, 3):
        raise ConfigError(
            f"{reader.origin}: source.channels must be 1 (grayscale) or 3 (RGB) (received {channels})"
        )
    max_mp = reader.number(section, "source.max_megapixels", default.max_megapixels, positive=True)
    level = reader.integer(section, "source.level", default.level, minimum=0, maximum=64)
    mpp = None
    if section.get("mpp") is not None:
        mpp = reader.number(section, "source.mpp", 1.0, positive=True)
        if level:
            raise ConfigError(
                f"{reader.origin}: set source.level or source.mpp, not both "
                f"(received level={level}, mpp={mpp:g}); set the other to null or 0"
            )
    return SourceParams(
        dir=directory, channels=channels, max_megapixels=max_mp, level=level, mpp=mpp
    )


def _extract(reader: _Reader, raw: object) -> ExtractParams:
    section = reader.mapping(raw, "extract")
    reader.known(section, "extract", EXTRACT_KEYS)
    default = ExtractParams()
    sampling = reader.choice(section, "extract.sampling", default.sampling, SAMPLINGS)
    if sampling == "grid":
        return _grid(reader, section)
    patch_size = reader.integer(
        section, "extract.patch_size", default.patch_size, minimum=1, maximum=MAX_PATCH_SIZE
    )
    per_image = reader.optional_integer(section, "extract.per_image", default.per_image)
    per_class = reader.optional_integer(section, "extract.per_class", None)
    if "per_class" in section and per_class is not None and "per_image" not in section:
        per_image = None
    if (per_image is None) == (per_class is None):
        raise ConfigError(
            f"{reader.origin}: set exactly one of extract.per_image and extract.per_class "
            f"(received per_image={per_image}, per_class={per_class}); set the other to null"
        )
    min_std = reader.number(section, "extract.min_std", default.min_std, minimum=0.0)
    max_tries = reader.integer(section, "extract.max_tries", default.max_tries, minimum=1)
    if section.get("stride") is not None:
        raise ConfigError(
            f"{reader.origin}: extract.stride applies to sampling: grid only "
            f"(received stride={section['stride']!r} with sampling: random); set it to null"
        )
    return ExtractParams(
        patch_size=patch_size,
        per_image=per_image,
        per_class=per_class,
        min_std=min_std,
        max_tries=max_tries,
        roi=reader.choice(section, "extract.roi", default.roi, ROIS),
        min_roi_fraction=_roi_fraction(reader, section),
        targets=reader.choice(section, "extract.targets", default.targets, TARGETS),
    )


def _grid(reader: _Reader, section: Mapping[str, Any]) -> ExtractParams:
    """``sampling: grid``: every position of the grid in the ROI; the grid decides the count."""
    default = ExtractParams()
    patch_size = reader.integer(
        section, "extract.patch_size", default.patch_size, minimum=1, maximum=MAX_PATCH_SIZE
    )
    for key in ("per_image", "per_class"):
        if section.get(key) is not None:
            raise ConfigError(
                f"{reader.origin}: extract.{key} must be null with sampling: grid, where the grid "
                f"decides the count (received {section[key]!r})"
            )
    if section.get("min_std", 0) != 0:
        raise ConfigError(
            f"{reader.origin}: extract.min_std must be 0 with sampling: grid, whose positions are "
            f"fixed by the stride and the ROI (received {section['min_std']!r}); use roi: tissue "
            f"to skip background"
        )
    stride = reader.optional_integer(section, "extract.stride", None)
    if stride is not None and stride > MAX_BLOCK_SIZE:
        raise ConfigError(
            f"{reader.origin}: extract.stride must be at most {MAX_BLOCK_SIZE} (received {stride})"
        )
    return ExtractParams(
        patch_size=patch_size,
        per_image=None,
        per_class=None,
        min_std=0.0,
        max_tries=reader.integer(section, "extract.max_tries", default.max_tries, minimum=1),
        sampling="grid",
        stride=stride,
        roi=reader.choice(section, "extract.roi", default.roi, ROIS),
        min_roi_fraction=_roi_fraction(reader, section),
        targets=reader.choice(section, "extract.targets", default.targets, TARGETS),
    )


def _roi_fraction(reader: _Reader, section: Mapping[str, Any]) -> float:
    value = reader.number(
        section, "extract.min_roi_fraction", ExtractParams().min_roi_fraction, minimum=0.0
    )
    if value > 1:
        raise ConfigError(
            f"{reader.origin}: extract.min_roi_fraction must be between 0 and 1 (received {value:g})"
        )
    return value


def _split(reader: _Reader, raw: object) -> SplitParams:
    section = reader.mapping(raw, "split")
    reader.known(section, "split", ("mode", "fractions", "block_size"))
    default = SplitParams()
    mode = reader.string(section, "split.mode", default.mode)
    if mode not in SPLIT_MODES:
        raise ConfigError(
            f"{reader.origin}: split.mode must be one of {', '.join(SPLIT_MODES)} (received {mode!r})"
        )
    fractions = default.fractions
    if "fractions" in section:
        given = reader.mapping(section["fractions"], "split.fractions")
        reader.known(given, "split.fractions", SPLITS)
        missing = [name for name in SPLITS if name not in given]
        if missing:
            raise ConfigError(
                f"{reader.origin}: split.fractions is missing {', '.join(missing)}; "
                f"give train, val and test (0 is allowed)"
            )
        fractions = tuple(  # type: ignore[assignment]
            reader.number(given, f"split.fractions.{name}", 0.0, minimum=0.0) for name in SPLITS
        )
    total = math.fsum(fractions)
    if not math.isclose(total, 1.0, abs_tol=1e-9):
        shown = " + ".join(f"{value:g}" for value in fractions)
        raise ConfigError(
            f"{reader.origin}: split.fractions must sum to 1 (received {shown} = {total:g})"
        )
    if fractions[0] == 0:
        raise ConfigError(f"{reader.origin}: split.fractions.train must be above 0 (received 0)")
    block_size = reader.integer(
        section, "split.block_size", default.block_size, minimum=1, maximum=MAX_BLOCK_SIZE
    )
    return SplitParams(mode=mode, fractions=fractions, block_size=block_size)


def _shards(reader: _Reader, raw: object) -> ShardParams:
    section = reader.mapping(raw, "shards")
    reader.known(section, "shards", ("target_patches", "chunk_patches", "compression", "level"))
    default = ShardParams()
    target = reader.integer(section, "shards.target_patches", default.target_patches, minimum=1)
    chunk = reader.integer(section, "shards.chunk_patches", default.chunk_patches, minimum=1)
    compression = reader.string(section, "shards.compression", default.compression)
    if compression not in COMPRESSIONS:
        raise ConfigError(
            f"{reader.origin}: shards.compression must be one of {', '.join(COMPRESSIONS)} "
            f"(received {compression!r})"
        )
    level_range = {"zstd": (1, 22), "gzip": (0, 9), "none": (0, 0)}[compression]
    level = reader.integer(section, "shards.level", min(default.level, level_range[1]))
    if not level_range[0] <= level <= level_range[1]:
        raise ConfigError(
            f"{reader.origin}: shards.level for {compression} must be between "
            f"{level_range[0]} and {level_range[1]} (received {level})"
        )
    return ShardParams(
        target_patches=target, chunk_patches=chunk, compression=compression, level=level
    )


def _train(reader: _Reader, raw: object) -> TrainParams:
    section = reader.mapping(raw, "train")
    reader.known(section, "train", ("mixed_precision", "jit_compile", "loader_workers", *MODELS))
    default = TrainParams()
    models = {}
    for name in MODELS:
        sub = reader.mapping(section.get(name, {}), f"train.{name}")
        reader.known(
            sub,
            f"train.{name}",
            ("epochs", "batch_size", "learning_rate", "patience", "bn_batches"),
        )
        base = DEFAULT_MODELS[name]
        models[name] = ModelParams(
            epochs=reader.integer(sub, f"train.{name}.epochs", base.epochs, minimum=1),
            batch_size=reader.integer(sub, f"train.{name}.batch_size", base.batch_size, minimum=1),
            learning_rate=reader.number(
                sub, f"train.{name}.learning_rate", base.learning_rate, positive=True
            ),
            patience=reader.integer(sub, f"train.{name}.patience", base.patience, minimum=0),
            bn_batches=reader.integer(sub, f"train.{name}.bn_batches", base.bn_batches, minimum=0),
        )
    return TrainParams(
        mixed_precision=reader.boolean(section, "train.mixed_precision", default.mixed_precision),
        jit_compile=reader.boolean(section, "train.jit_compile", default.jit_compile),
        loader_workers=reader.integer(
            section, "train.loader_workers", default.loader_workers, minimum=0
        ),
        models=models,
    )


class _Reader:
    """Typed access to a parsed YAML mapping, with errors that name the key and the value."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def _fail(self, key: str, expected: str, value: object) -> ConfigError:
        return ConfigError(f"{self.origin}: {key} must be {expected} (received {value!r})")

    def mapping(self, value: object, key: str) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise self._fail(key or "the top level", "a mapping of keys to values", value)
        return dict(value)

    def known(self, section: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> None:
        for name in sorted(map(str, section)):
            if name not in allowed:
                where = f"{key}.{name}" if key else name
                raise ConfigError(
                    f"{self.origin}: unknown key {where!r}; known keys here: {', '.join(allowed)}"
                )

    def string(self, section: Mapping[str, Any], key: str, default: str) -> str:
        value = section.get(key.rsplit(".", 1)[-1], default)
        if not isinstance(value, str) or not value:
            raise self._fail(key, "a non-empty string", value)
        return value

    def choice(
        self, section: Mapping[str, Any], key: str, default: str, allowed: tuple[str, ...]
    ) -> str:
        value = self.string(section, key, default)
        if value not in allowed:
            raise ConfigError(
                f"{self.origin}: {key} must be one of {', '.join(allowed)} (received {value!r})"
            )
        return value

    def boolean(self, section: Mapping[str, Any], key: str, default: bool) -> bool:
        value = section.get(key.rsplit(".", 1)[-1], default)
        if not isinstance(value, bool):
            raise self._fail(key, "true or false", value)
        return value

    def integer(
        self,
        section: Mapping[str, Any],
        key: str,
        default: int,
        minimum: int | None = None,
        name: str | None = None,
        maximum: int | None = None,
    ) -> int:
        value = section.get(key.rsplit(".", 1)[-1], default)
        shown = name or key
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(shown, "an integer", value)
        if minimum is not None and value < minimum:
            raise self._fail(shown, f"at least {minimum}", value)
        if maximum is not None and value > maximum:
            raise self._fail(shown, f"at most {maximum}", value)
        return value

    def optional_integer(
        self, section: Mapping[str, Any], key: str, default: int | None
    ) -> int | None:
        """A patch count: null, or an integer from 1 to ``MAX_PATCHES``."""
        value = section.get(key.rsplit(".", 1)[-1], default)
        if value is None:
            return None
        return self.integer(
            {"value": value}, f"{key}.value", 0, minimum=1, name=key, maximum=MAX_PATCHES
        )

    def number(
        self,
        section: Mapping[str, Any],
        key: str,
        default: float,
        minimum: float | None = None,
        positive: bool = False,
    ) -> float:
        value = section.get(key.rsplit(".", 1)[-1], default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise self._fail(key, "a number", value)
        if minimum is not None and value < minimum:
            raise self._fail(key, f"at least {minimum:g}", value)
        if positive and value <= 0:
            raise self._fail(key, "above 0", value)
        return float(value)
