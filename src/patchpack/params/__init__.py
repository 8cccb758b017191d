"""params.yaml -> frozen, typed dataclasses. All configuration is validated here, once.

Each field is declared once (:mod:`patchpack.params.sections`, with :mod:`patchpack.schema`): its key, type, default, bounds and a one-line
doc. One generic reader checks a parsed params file against the declarations, the manifest's
``params`` are written and read back from them, and the docs' params reference is generated from
them (``python -m patchpack.params.reference`` prints it; a test keeps ``docs/params.md`` current). Only rules
that join several keys are written by hand, each naming the keys it concerns.

Every check fails with a :class:`~patchpack.errors.ConfigError` whose message names the key, echoes
what it received and says what would be accepted, e.g.
``params.yaml: split.fractions must sum to 1 (received 0.7 + 0.2 + 0.2 = 1.1)``.
The rest of patchpack takes these dataclasses (or plain values taken from them) and never opens YAML
(:mod:`patchpack.params.yamlfile` reads the file). Sizes and counts have upper limits (``MAX_PATCHES``,
``MAX_PATCH_SIZE``, ``MAX_BLOCK_SIZE``), so a typo fails here in milliseconds instead of running out
of memory minutes later.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from patchpack.params.rules import check_extract, check_labels, check_together
from patchpack.params.sections import (
    CHUNK_BYTES,
    COMPRESSIONS,
    DEFAULT_MODELS,
    LABEL_ORIGINS,
    LABEL_RULES,
    LEVELS,
    MAX_BLOCK_SIZE,
    MAX_PATCH_SIZE,
    MAX_PATCHES,
    MODELS,
    ROIS,
    SAMPLINGS,
    SPLIT_MODES,
    SPLITS,
    TARGETS,
    BaseParams,
    CardParams,
    ExtractParams,
    LabelParams,
    ModelParams,
    ShardParams,
    SourceParams,
    SplitParams,
    TrainParams,
    chunk_rows,
)
from patchpack.schema import Reader, dump_fields, read_fields, same_as, section

__all__ = [
    "CHUNK_BYTES",
    "COMPRESSIONS",
    "DEFAULT_MODELS",
    "LABEL_ORIGINS",
    "LABEL_RULES",
    "LEVELS",
    "MAX_BLOCK_SIZE",
    "MAX_PATCHES",
    "MAX_PATCH_SIZE",
    "MODELS",
    "ROIS",
    "SAMPLINGS",
    "SECTIONS",
    "SPLITS",
    "SPLIT_MODES",
    "TARGETS",
    "BaseParams",
    "CardParams",
    "DatasetParams",
    "ExtractParams",
    "LabelParams",
    "ModelParams",
    "Params",
    "ShardParams",
    "SourceParams",
    "SplitParams",
    "TrainParams",
    "chunk_rows",
    "load_params",
    "params_from_dict",
]


@dataclasses.dataclass(frozen=True)
class DatasetParams:
    """The params that decide a dataset's content: what the manifest records (no paths, no guards).

    Its fields are the declarations of params.yaml's (``base.seed``, ``source.channels`` ...), so
    the manifest's ``params`` are written by :func:`~patchpack.schema.dump_fields` and read back
    by the same reader as params.yaml. Fields added after format 2 (``labels``,
    ``extract.targets``) are written only when they differ from their defaults, so a dataset
    labelled by folders keeps the manifest bytes it had before they existed.
    """

    seed: int = same_as(BaseParams, "seed")
    channels: int = same_as(SourceParams, "channels")
    extract: ExtractParams = section(ExtractParams, "how patches are drawn")
    split: SplitParams = section(SplitParams, "how patches are split")
    shards: ShardParams = section(ShardParams, "how shards are packed")
    level: int = same_as(SourceParams, "level")
    mpp: float | None = same_as(SourceParams, "mpp")
    labels: LabelParams = section(LabelParams, "where labels come from", omit_default=True)
    card: CardParams = section(CardParams, "what the dataset card says", omit_default=True)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values, as the manifest stores them under ``params``."""
        return dump_fields(self)

    @classmethod
    def from_dict(cls, raw: object, origin: str = "manifest") -> DatasetParams:
        """The inverse of :meth:`to_dict`, validated like params.yaml (errors name the key)."""
        reader = Reader(origin)
        given = reader.mapping(raw, "params")
        scalars = read_fields(cls, given, "params", reader, required=True)
        for name in ("extract", "split", "shards"):
            if name not in given:
                raise reader.problem(f"params.{name} is missing")
        labels = reader.mapping(given.get("labels", {}), "params.labels")
        extract = reader.mapping(given["extract"], "params.extract")
        roi = extract.get("roi")
        if labels or (isinstance(roi, str) and "mask" in roi.split("+")):
            labels = {**labels, "dir": "."}  # no label folder is recorded (a path): any one passes
        params = params_from_dict(
            {
                "base": {"seed": scalars["seed"]},
                "source": {k: scalars[k] for k in ("channels", "level", "mpp")},
                "extract": extract,
                "split": given["split"],
                "shards": given["shards"],
                "labels": labels,
                "card": given.get("card", {}),
            },
            origin=origin,
        )
        return params.dataset


@dataclasses.dataclass(frozen=True)
class Params:
    """Everything in params.yaml, validated."""

    seed: int = same_as(BaseParams, "seed")
    source: SourceParams = section(SourceParams, "where images come from")
    extract: ExtractParams = section(ExtractParams, "how patches are drawn")
    split: SplitParams = section(SplitParams, "how patches are split into train/val/test")
    shards: ShardParams = section(ShardParams, "how patches are packed into HDF5 shards")
    train: TrainParams = section(TrainParams, "how the models are trained")
    labels: LabelParams = section(LabelParams, "where each patch's label comes from")
    card: CardParams = section(CardParams, "what the dataset card and Croissant file say")

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
            card=self.card,
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
            card=dataset.card,
        )


SECTIONS = ("base", "source", "extract", "split", "shards", "train", "labels", "card")


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
    from patchpack.params.yamlfile import read_yaml

    path = Path(path)
    raw = read_yaml(path)
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


def params_from_dict(raw: object, origin: str = "params") -> Params:
    """Validate a params mapping (the parsed YAML) into :class:`Params`."""
    reader = Reader(origin)
    top = reader.mapping(raw, "")
    reader.known(top, "", SECTIONS)

    def read(
        cls: type[Any], name: str, defaults: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        given = reader.mapping(top.get(name, {}), name)
        return given, read_fields(cls, given, name, reader, defaults=defaults)

    _, base = read(BaseParams, "base")
    _, source = read(SourceParams, "source")
    extract_raw, extract = read(ExtractParams, "extract")
    _, split = read(SplitParams, "split")
    shards_raw, shards = read(ShardParams, "shards")
    labels_raw, labels = read(LabelParams, "labels")
    _, card = read(CardParams, "card")
    params = Params(
        seed=base["seed"],
        source=SourceParams(**source),
        extract=ExtractParams(**check_extract(reader, extract_raw, extract)),
        split=SplitParams(**_check_split(reader, split)),
        shards=ShardParams(**_check_shards(reader, shards_raw, shards)),
        train=_train(reader, top.get("train", {})),
        labels=LabelParams(**check_labels(reader, labels_raw, labels, _defaults(LabelParams))),
        card=CardParams(**card),
    )
    check_together(reader, params)
    return params


def _defaults(cls: type[Any]) -> dict[str, Any]:
    return dataclasses.asdict(cls())


def _check_split(reader: Reader, values: dict[str, Any]) -> dict[str, Any]:
    fractions = values["fractions"]
    total = math.fsum(fractions)
    if not math.isclose(total, 1.0, abs_tol=1e-9):
        shown = " + ".join(f"{value:g}" for value in fractions)
        raise reader.problem(f"split.fractions must sum to 1 (received {shown} = {total:g})")
    if fractions[0] == 0:
        raise reader.problem("split.fractions.train must be above 0 (received 0)")
    return values


def _check_shards(reader: Reader, given: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The level's range depends on the compression; its default is 3, or the highest allowed."""
    low, high = LEVELS[values["compression"]]
    if "level" not in given:
        values["level"] = min(values["level"], high)
    if not low <= values["level"] <= high:
        raise reader.problem(
            f"shards.level for {values['compression']} must be between {low} and {high} "
            f"(received {values['level']})"
        )
    return values


def _train(reader: Reader, raw: object) -> TrainParams:
    given = reader.mapping(raw, "train")
    reader.known(given, "train", ("mixed_precision", "jit_compile", "loader_workers", *MODELS))
    shared = read_fields(
        TrainParams, {k: v for k, v in given.items() if k not in MODELS}, "train", reader
    )
    models = {
        name: ModelParams(
            **read_fields(
                ModelParams,
                reader.mapping(given.get(name, {}), f"train.{name}"),
                f"train.{name}",
                reader,
                defaults=DEFAULT_MODELS[name],
            )
        )
        for name in MODELS
    }
    return TrainParams(**shared, models=models)
