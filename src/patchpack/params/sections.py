"""The declarations of every params.yaml section: each field once, with its key, type, default,
bounds and a one-line doc (:mod:`patchpack.schema`). Single keys are checked by the generic reader;
rules that join keys live in :mod:`patchpack.params.rules`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from patchpack.errors import ConfigError
from patchpack.schema import Reader, Spec, param

SPLITS = ("train", "val", "test")
SPLIT_MODES = ("image", "region", "patch")
COMPRESSIONS = ("zstd", "gzip", "none")
MODELS = ("cnn", "resnet50")
SAMPLINGS = ("random", "grid")
ROIS = ("all", "tissue", "mask", "tissue+mask")
TARGETS = ("none", "mask")
LABEL_ORIGINS = ("folder", "mask", "annotations")
LABEL_RULES = ("centre", "majority")

# Upper limits: far above any real dataset, low enough that the plan and its arrays fit in memory.
MAX_PATCHES = 10_000_000  # extract.per_image and extract.per_class
MAX_PATCH_SIZE = 4096  # extract.patch_size, pixels
MAX_BLOCK_SIZE = 65536  # split.block_size, pixels
CHUNK_BYTES = (
    2**20
)  # pixels an HDF5 chunk of images holds, about, when shards.chunk_patches is null
CHUNK_ROWS = 256  # ... and at most this many patches


def _read_fractions(reader: Reader, raw: object, key: str) -> tuple[float, float, float]:
    given = reader.mapping(raw, key)
    reader.known(given, key, SPLITS)
    missing = [name for name in SPLITS if name not in given]
    if missing:
        raise reader.problem(
            f"{key} is missing {', '.join(missing)}; give train, val and test (0 is allowed)"
        )
    share = Spec(doc="", kind="float", minimum=0.0)
    train, val, test = (reader.number(share, given[name], f"{key}.{name}") for name in SPLITS)
    return train, val, test


def _read_classes(reader: Reader, raw: object, key: str) -> tuple[str, ...]:
    """A list of class names, checked by :func:`_check_labels` (its rules depend on labels.from)."""
    if not isinstance(raw, list):
        raise reader.fail(key, "a list of class names", raw)
    return tuple(raw)


@dataclasses.dataclass(frozen=True)
class BaseParams:
    """The root of every random choice."""

    seed: int = param(
        2019,
        "root seed: every random choice derives from it and a source's id",
        minimum=0,
        maximum=2**63 - 1,
        maximum_text="below 2**63",
    )


@dataclasses.dataclass(frozen=True)
class SourceParams:
    """Where images come from and how they are decoded."""

    dir: str = param(
        "data/demo",
        "images, one subfolder per class; or a URL (`s3://bucket/prefix`)",
        kind="path",
    )
    channels: int = param(
        1,
        "1 = grayscale, 3 = RGB; every image is converted by one rule",
        choices=(1, 3),
        expected="1 (grayscale) or 3 (RGB)",
    )
    max_megapixels: float = param(
        100.0,
        "most pixels decoded at once: a whole small image, or one window of a slide",
        kind="float",
        positive=True,
    )
    cache_mb: int = param(
        256,
        "memory for a slide's decoded tiles and windows, MB: sized to what a shard needs, at "
        "most this (speed only: the bytes never change)",
        minimum=16,
    )
    level: int = param(
        0, "pyramid level patches are cut from (0 = full resolution)", minimum=0, maximum=64
    )
    mpp: float | None = param(
        None,
        "or the level closest to this many microns per pixel (not both)",
        kind="float",
        null=True,
        positive=True,
    )


@dataclasses.dataclass(frozen=True)
class ExtractParams:
    """How many patches of which size are drawn from each image."""

    patch_size: int = param(32, "square patches, pixels", minimum=1, maximum=MAX_PATCH_SIZE)
    per_image: int | None = param(
        400,
        "patches drawn from each image (or per_class instead, for balanced classes)",
        kind="count",
        maximum=MAX_PATCHES,
    )
    per_class: int | None = param(
        None, "patches per class, shared by its images", kind="count", maximum=MAX_PATCHES
    )
    min_std: float = param(
        2.0,
        "reject near-blank patches whose pixel std is below this; 0 keeps all",
        kind="float",
        minimum=0.0,
    )
    max_tries: int = param(
        50, "candidate draws per wanted patch before giving up on an image", minimum=1
    )
    sampling: str = param(
        "random",
        "random | grid (every stride-th position; per_image/per_class null, min_std 0)",
        kind="choice",
        choices=SAMPLINGS,
    )
    stride: int | None = param(
        None,
        "grid step in pixels (null: patch_size, patches that touch)",
        kind="count",
        maximum=MAX_BLOCK_SIZE,
    )
    roi: str = param(
        "all",
        "all | tissue (Otsu mask of a low-resolution level) | mask (the labelled area) | tissue+mask",
        kind="choice",
        choices=ROIS,
    )
    min_roi_fraction: float = param(
        0.5,
        "a patch is accepted when at least this much of it lies in the ROI",
        kind="float",
        minimum=0.0,
        maximum=1.0,
        expected="between 0 and 1",
    )
    targets: str = param(
        "none",
        "none | mask (store each patch's label mask: labels.from mask or annotations)",
        kind="choice",
        choices=TARGETS,
        omit_default=True,  # added after format 2: manifests of datasets without masks keep their bytes
    )

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

    origin: str = param(
        "folder",
        "folder (class subfolders) | mask (a label raster per image) | annotations (GeoJSON)",
        kind="choice",
        choices=LABEL_ORIGINS,
        key="from",
    )
    dir: str | None = param(
        None, "mask/annotations: label files at each image's relative path", kind="path", path=True
    )
    classes: tuple[str, ...] = param(
        (),
        "mask/annotations: class names; class number 1 is the first, 0 unlabelled",
        kind="custom",
        null=True,
        read=_read_classes,
    )
    rule: str = param(
        "centre",
        "centre (class under the patch's centre) | majority (of its area)",
        kind="choice",
        choices=LABEL_RULES,
    )
    min_fraction: float = param(
        0.5,
        "majority: the class must cover at least this fraction",
        kind="float",
        positive=True,
        maximum=1.0,
        expected="above 0 and at most 1",
    )

    @property
    def per_patch(self) -> bool:
        """Whether labels come from label files (per patch) rather than from folders (per image)."""
        return self.origin != "folder"


@dataclasses.dataclass(frozen=True)
class SplitParams:
    """How sources (or regions of them) are divided into train/val/test."""

    mode: str = param(
        "region",
        "image | region | patch (patch is leaky: see the guarantees)",
        kind="choice",
        choices=SPLIT_MODES,
    )
    fractions: tuple[float, float, float] = param(
        (0.7, 0.15, 0.15),
        "shares of train, val and test; they sum to 1",
        kind="custom",
        read=_read_fractions,
        dump=lambda value: dict(zip(SPLITS, value, strict=True)),
    )
    block_size: int = param(
        64,
        "region mode: side of the blocks an image is cut into, >= patch_size",
        minimum=1,
        maximum=MAX_BLOCK_SIZE,
    )

    def fraction(self, split: str) -> float:
        return self.fractions[SPLITS.index(split)]


@dataclasses.dataclass(frozen=True)
class ShardParams:
    """How patches are packed into HDF5 shards."""

    target_patches: int = param(
        512, "mean patches per shard; boundaries fall between images, content-defined", minimum=1
    )
    chunk_patches: int | None = param(
        None,
        "HDF5 chunk rows (null: about 1 MiB of pixels, at most 256); reads touch whole chunks",
        kind="count",
        maximum=2**20,
    )
    compression: str = param(
        "zstd",
        "zstd (hdf5plugin) | gzip (readable by any HDF5) | none",
        kind="choice",
        choices=COMPRESSIONS,
    )
    level: int = param(3, "compression level: zstd 1..22, gzip 0..9, none 0")

    def chunk_rows(self, patch_bytes: int) -> int:
        """Rows per HDF5 chunk of images for patches of ``patch_bytes`` bytes (as the writer cuts them)."""
        return chunk_rows(self.chunk_patches, patch_bytes)


def chunk_rows(chunk_patches: int | None, patch_bytes: int) -> int:
    """Rows per HDF5 chunk: ``chunk_patches`` when set, else as many patches as fit in about 1 MiB,
    at most :data:`CHUNK_ROWS` (the loader shuffles whole chunks: small patches keep several chunks
    per shuffle buffer)."""
    if chunk_patches is not None:
        return chunk_patches
    return max(1, min(CHUNK_ROWS, CHUNK_BYTES // max(1, patch_bytes)))


LEVELS = {"zstd": (1, 22), "gzip": (0, 9), "none": (0, 0)}


@dataclasses.dataclass(frozen=True)
class CardParams:
    """What the dataset card and its Croissant file say about the dataset (``patchpack card``)."""

    name: str = param(
        "patchpack-dataset", "the dataset's name in its card and Croissant file", kind="str"
    )
    description: str | None = param(
        None,
        "one paragraph on what the dataset is (null: a sentence from the params)",
        kind="str",
        null=True,
    )
    license: str | None = param(
        None, "an SPDX id (`CC-BY-4.0`) or a license URL (null: not stated)", kind="str", null=True
    )
    citation: str | None = param(
        None, "how to cite the dataset (BibTeX or a sentence; null: none)", kind="str", null=True
    )
    url: str | None = param(
        None, "where the dataset is published: the git repository to clone", kind="str", null=True
    )


@dataclasses.dataclass(frozen=True)
class ModelParams:
    """Training settings for one model.

    ``bn_batches``: train batches run in training mode before each validation to re-estimate the
    BatchNorm moving statistics (:mod:`patchpack.training.batchnorm`); 0 keeps Keras' moving averages.
    A model without BatchNorm ignores it.
    """

    epochs: int = param(10, "an upper bound: early stopping (patience) may end sooner", minimum=1)
    batch_size: int = param(64, "patches per step", minimum=1)
    learning_rate: float = param(1e-3, "Adam's learning rate", kind="float", positive=True)
    patience: int = param(3, "epochs without a better val loss before stopping", minimum=0)
    bn_batches: int = param(
        0, "train batches that re-estimate BatchNorm statistics (0: Keras' averages)", minimum=0
    )


# Per-model defaults, the same as params.yaml's (a test keeps them equal).
DEFAULT_MODELS: Mapping[str, ModelParams] = {
    "cnn": ModelParams(epochs=30, batch_size=64, learning_rate=1e-3, patience=3),
    "resnet50": ModelParams(epochs=1, batch_size=32, learning_rate=1e-3, patience=2, bn_batches=16),
}


@dataclasses.dataclass(frozen=True)
class TrainParams:
    """Training settings shared by every model, and one :class:`ModelParams` per model."""

    mixed_precision: bool = param(False, "mixed_float16 on a GPU; ignored on CPU", kind="bool")
    jit_compile: bool = param(
        False, "XLA-compiled steps on a GPU; ignored on CPU (JAX always compiles)", kind="bool"
    )
    loader_workers: int = param(2, "threads reading shards while the model trains", minimum=0)
    models: Mapping[str, ModelParams] = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_MODELS)
    )

    def model(self, name: str) -> ModelParams:
        if name not in self.models:
            raise ConfigError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
        return self.models[name]
