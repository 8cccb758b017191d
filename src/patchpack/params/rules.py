"""The params rules that join several keys, each naming the keys it concerns.

Single keys are declared in :mod:`patchpack.params` and checked by the generic reader; what is here
cannot be said of one key alone (``set exactly one of extract.per_image and extract.per_class``).
"""

from __future__ import annotations

from typing import Any

from patchpack.schema import Reader

MAX_CLASSES = 255  # a label raster and a mask target hold class numbers 1..255 in uint8 (0: none)


def check_extract(reader: Reader, given: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Random sampling needs exactly one patch count; grid sampling none (the grid decides it)."""
    if values["sampling"] == "grid":
        for key in ("per_image", "per_class"):
            if given.get(key) is not None:
                raise reader.problem(
                    f"extract.{key} must be null with sampling: grid, where the grid decides the "
                    f"count (received {given[key]!r})"
                )
        if given.get("min_std", 0) != 0:
            raise reader.problem(
                f"extract.min_std must be 0 with sampling: grid, whose positions are fixed by the "
                f"stride and the ROI (received {given['min_std']!r}); use roi: tissue to skip "
                f"background"
            )
        return {**values, "per_image": None, "per_class": None, "min_std": 0.0}
    if given.get("per_class") is not None and "per_image" not in given:
        values = {**values, "per_image": None}  # per_class alone replaces the per_image default
    per_image, per_class = values["per_image"], values["per_class"]
    if (per_image is None) == (per_class is None):
        raise reader.problem(
            f"set exactly one of extract.per_image and extract.per_class "
            f"(received per_image={per_image}, per_class={per_class}); set the other to null"
        )
    if given.get("stride") is not None:
        raise reader.problem(
            f"extract.stride applies to sampling: grid only (received stride={given['stride']!r} "
            f"with sampling: random); set it to null"
        )
    return values


def check_labels(
    reader: Reader, given: dict[str, Any], values: dict[str, Any], defaults: dict[str, Any]
) -> dict[str, Any]:
    """Folder labels take no label options; label files need their folder and class names.
    ``defaults`` are the section's defaults, by attribute name."""
    origin = values["origin"]
    if origin == "folder":
        options = {
            "classes": given.get("classes"),
            "rule": None if values["rule"] == defaults["rule"] else values["rule"],
            "min_fraction": None
            if values["min_fraction"] == defaults["min_fraction"]
            else values["min_fraction"],
        }
        for key, value in options.items():
            if value is not None:
                raise reader.problem(
                    f"labels.{key} applies to labels.from: mask or annotations; with labels.from: "
                    f"folder the class subfolders are the classes (received {key}={value!r}); "
                    f"remove it"
                )
        return {**values, "classes": ()}
    if values["dir"] is None:
        raise reader.problem(
            f"labels.from: {origin} needs labels.dir, the folder of label files (one per image, "
            f"at the image's relative path); set labels.dir"
        )
    return {**values, "classes": _class_list(reader, given.get("classes"), origin)}


def _class_list(reader: Reader, value: object, origin: str) -> tuple[str, ...]:
    """``labels.classes``: 1 to ``MAX_CLASSES`` distinct, non-empty names, in class-number order."""
    if not isinstance(value, list) or not value:
        raise reader.problem(
            f"labels.from: {origin} needs labels.classes, a list of class names (raster value or "
            f"class number 1 is the first; 0 is unlabelled) (received {value!r})"
        )
    if len(value) > MAX_CLASSES:
        raise reader.problem(
            f"labels.classes holds {len(value)} names, at most {MAX_CLASSES} fit a uint8 label raster"
        )
    for i, name in enumerate(value):
        if not isinstance(name, str) or not name.strip():
            raise reader.fail(f"labels.classes[{i}]", "a non-empty string", name)
    seen: set[str] = set()
    for name in value:
        if name in seen:
            raise reader.problem(f"labels.classes names {name!r} twice; each class once")
        seen.add(name)
    return tuple(value)


def check_together(reader: Reader, params: Any) -> None:
    """The rules that join sections: the source's level, and ``labels`` with ``extract``."""
    source, extract, labels = params.source, params.extract, params.labels
    if source.mpp is not None and source.level:
        raise reader.problem(
            f"set source.level or source.mpp, not both (received level={source.level}, "
            f"mpp={source.mpp:g}); set the other to null or 0"
        )
    if "mask" in extract.roi.split("+") and labels.dir is None:
        raise reader.problem(
            f"extract.roi: {extract.roi} needs labels.dir (the label rasters or ROI masks, one per "
            f"image); set labels.dir or use extract.roi: all or tissue"
        )
    if labels.origin == "folder" and labels.dir is not None and "mask" not in extract.roi:
        raise reader.problem(
            f"labels.dir is used by labels.from: mask or annotations or by extract.roi: mask "
            f"(received labels.from: folder, extract.roi: {extract.roi}); set one of them or "
            f"remove labels.dir"
        )
    if extract.targets == "mask" and not labels.per_patch:
        raise reader.problem(
            f"extract.targets: mask stores each patch's label mask, so it needs labels.from: mask "
            f"or annotations (received labels.from: {labels.origin})"
        )
    if labels.per_patch and extract.per_class is not None:
        raise reader.problem(
            f"extract.per_class balances classes of whole images, but with labels.from: "
            f"{labels.origin} a patch's class is only known once it is drawn; use extract.per_image"
        )
