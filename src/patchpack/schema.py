"""Declarations: every field of a params section or a manifest record is declared once.

A field is a dataclass field whose metadata holds a :class:`Spec`: its key (when it differs from the
attribute), its kind, its bounds and a one-line doc; the default is the dataclass default. One generic
reader (:func:`read_fields`) validates a parsed mapping against the declarations, with messages that
name the key and echo what it received (``extract.patch_size must be at least 1 (received 0)``); one
generic writer (:func:`dump_fields`) turns a dataclass back into plain JSON-able values; the params
reference page of the docs is generated from the same declarations (:func:`reference_rows`).

Only rules that join several fields (``set exactly one of extract.per_image and extract.per_class``)
are written by hand, beside the section they concern.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from patchpack.errors import ConfigError, PatchpackError

SPEC = "patchpack.spec"
T = TypeVar("T")

# what each kind reads: a JSON/YAML scalar of that kind (``count``: null or a positive integer)
KINDS = ("int", "float", "str", "bool", "choice", "count", "path", "custom", "section")


@dataclasses.dataclass(frozen=True)
class Spec:
    """How one field is read, checked, written and documented.

    ``kind`` is one of :data:`KINDS`; ``null`` allows ``None``; ``minimum``/``maximum``/``positive``
    bound numbers; ``choices`` lists allowed values (``choice``, or an ``int`` with ``expected``
    saying them in words); ``pattern`` constrains strings; ``key`` is the key in the file when it is
    not the attribute's name; ``path`` marks a local path, never written to a manifest;
    ``omit_default`` fields (added after a format was fixed) are written only when they differ from
    their default, so older files keep their bytes; ``omit_none`` fields only when not ``None``;
    ``empty`` allows an empty string; ``read``/``dump`` convert a ``custom`` field.
    """

    doc: str
    kind: str = "int"
    null: bool = False
    minimum: float | None = None
    maximum: float | None = None
    positive: bool = False
    choices: tuple[Any, ...] = ()
    expected: str | None = None
    maximum_text: str | None = None
    pattern: re.Pattern[str] | None = None
    key: str | None = None
    path: bool = False
    omit_default: bool = False
    omit_none: bool = False
    empty: bool = False
    read: Callable[[Reader, object, str], Any] | None = None
    dump: Callable[[Any], Any] | None = None


def param(default: Any = dataclasses.MISSING, doc: str = "", **options: Any) -> Any:
    """A dataclass field declared with its :class:`Spec` (``default`` is the dataclass default)."""
    spec = Spec(doc=doc, **options)
    if spec.kind not in KINDS:
        raise ValueError(f"unknown kind {spec.kind!r}")
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata={SPEC: spec})
    if isinstance(default, list | dict | set):
        raise TypeError("declare an immutable default (a tuple), or a section with section()")
    return dataclasses.field(default=default, metadata={SPEC: spec})


def section(factory: Callable[[], Any], doc: str, **options: Any) -> Any:
    """A field holding a nested section (a declared dataclass)."""
    return dataclasses.field(
        default_factory=factory, metadata={SPEC: Spec(doc=doc, kind="section", **options)}
    )


def spec_of(cls: type, name: str) -> Spec:
    """The :class:`Spec` of field ``name`` of ``cls``, to declare a copy of it elsewhere."""
    for field in dataclasses.fields(cls):
        if field.name == name:
            return field.metadata[SPEC]  # type: ignore[no-any-return]
    raise KeyError(name)


def same_as(cls: type, name: str, **changes: Any) -> Any:
    """A field declared as field ``name`` of ``cls`` is (the same spec and default)."""
    for field in dataclasses.fields(cls):
        if field.name == name:
            spec = dataclasses.replace(field.metadata[SPEC], **changes)
            if field.default_factory is not dataclasses.MISSING:
                return dataclasses.field(
                    default_factory=field.default_factory, metadata={SPEC: spec}
                )
            return dataclasses.field(default=field.default, metadata={SPEC: spec})
    raise KeyError(name)


def declared(cls: type) -> Iterator[tuple[dataclasses.Field[Any], Spec, str]]:
    """``(field, spec, key)`` for every declared field of ``cls``, in declaration order."""
    for field in dataclasses.fields(cls):
        spec = field.metadata.get(SPEC)
        if spec is not None:
            yield field, spec, spec.key or field.name


def default_of(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


class Reader:
    """Typed access to a parsed mapping, with errors that name the key and echo the value.

    ``error`` is the exception raised (:class:`ConfigError` for params, ``IntegrityError`` for a
    manifest) and ``advice`` ends every message (what to do about a damaged file).
    """

    def __init__(
        self, origin: str, error: type[PatchpackError] = ConfigError, advice: str = ""
    ) -> None:
        self.origin = origin
        self.error = error
        self.advice = advice

    def problem(self, text: str) -> PatchpackError:
        return self.error(f"{self.origin}: {text}{self.advice}")

    def fail(self, key: str, expected: str, value: object) -> PatchpackError:
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return self.problem(f"{key} must be {expected} (received {shown})")

    def mapping(self, value: object, key: str) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(key or "the top level", "a mapping of keys to values", value)
        return dict(value)

    def known(self, section: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> None:
        for name in sorted(map(str, section)):
            if name not in allowed:
                where = f"{key}.{name}" if key else name
                raise self.problem(f"unknown key {where!r}; known keys here: {', '.join(allowed)}")

    def value(self, spec: Spec, raw: object, key: str) -> Any:
        """``raw`` (the value found at ``key``) checked against ``spec``."""
        if raw is None and (spec.null or spec.kind in ("count", "path")):
            return None
        if spec.kind == "custom":
            assert spec.read is not None
            return spec.read(self, raw, key)
        reader = _SCALARS[spec.kind]
        return reader(self, spec, raw, key)

    def integer(self, spec: Spec, raw: object, key: str) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise self.fail(key, "an integer", raw)
        if spec.choices and raw not in spec.choices:
            raise self.fail(key, spec.expected or f"one of {spec.choices}", raw)
        if spec.minimum is not None and raw < spec.minimum:
            raise self.fail(key, spec.expected or f"at least {int(spec.minimum)}", raw)
        if spec.maximum is not None and raw > spec.maximum:
            words = spec.maximum_text or spec.expected or f"at most {int(spec.maximum)}"
            raise self.fail(key, words, raw)
        return raw

    def count(self, spec: Spec, raw: object, key: str) -> int:
        return self.integer(dataclasses.replace(spec, minimum=spec.minimum or 1), raw, key)

    def number(self, spec: Spec, raw: object, key: str) -> float:
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            raise self.fail(key, "a number", raw)
        if spec.minimum is not None and raw < spec.minimum:
            raise self.fail(key, spec.expected or f"at least {spec.minimum:g}", raw)
        if spec.positive and raw <= 0:
            raise self.fail(key, spec.expected or "above 0", raw)
        if spec.maximum is not None and raw > spec.maximum:
            raise self.fail(key, spec.expected or f"at most {spec.maximum:g}", raw)
        return float(raw)

    def string(self, spec: Spec, raw: object, key: str) -> str:
        if not isinstance(raw, str) or not (raw or spec.empty):
            raise self.fail(key, "a string" if spec.empty else "a non-empty string", raw)
        if spec.pattern is not None and not spec.pattern.match(raw):
            raise self.fail(key, f"a string like {spec.pattern.pattern}", raw)
        return raw

    def choice(self, spec: Spec, raw: object, key: str) -> str:
        value = self.string(spec, raw, key)
        if value not in spec.choices:
            raise self.problem(
                f"{key} must be one of {', '.join(spec.choices)} (received {value!r})"
            )
        return value

    def boolean(self, spec: Spec, raw: object, key: str) -> bool:
        if not isinstance(raw, bool):
            raise self.fail(key, "true or false", raw)
        return raw


_SCALARS: dict[str, Callable[[Reader, Spec, object, str], Any]] = {
    "int": Reader.integer,
    "float": Reader.number,
    "str": Reader.string,
    "path": Reader.string,
    "choice": Reader.choice,
    "bool": Reader.boolean,
    "count": Reader.count,
}


def read_fields(
    cls: type[T],
    raw: Mapping[str, Any],
    where: str,
    reader: Reader,
    *,
    defaults: T | None = None,
    required: bool = False,
) -> dict[str, Any]:
    """The values of every declared scalar field of ``cls`` in ``raw`` (a mapping found at
    ``where``), by attribute name; a missing key takes the default (of ``defaults`` when given),
    or, with ``required``, is an error. Sections (nested dataclasses) are left to the caller.
    Unknown keys are refused."""
    fields = list(declared(cls))
    reader.known(raw, where, tuple(key for _, _, key in fields))
    values: dict[str, Any] = {}
    for field, spec, key in fields:
        if spec.kind == "section":
            continue
        full = f"{where}.{key}" if where else key
        if key in raw:
            values[field.name] = reader.value(spec, raw[key], full)
        elif required and not spec.omit_default and not spec.omit_none:
            raise reader.problem(f"{full} is missing")
        else:
            values[field.name] = (
                getattr(defaults, field.name) if defaults is not None else default_of(field)
            )
    return values


def read_record(
    cls: type[T], raw: object, where: str, reader: Reader, unknown: str = "is not a known key"
) -> T:
    """A record of ``cls`` from ``raw``, every declared key required (``omit_default`` and
    ``omit_none`` keys may be absent) and no other key allowed: a file someone else wrote."""
    given = reader.mapping(raw, where)
    keys = {key: spec for _, spec, key in declared(cls)}
    for key, spec in keys.items():
        if key not in given and not (spec.omit_default or spec.omit_none):
            raise reader.problem(f"{where}.{key} is missing")
    extra = sorted(str(key) for key in given if key not in keys)
    if extra:
        raise reader.problem(f"{where}.{extra[0]} {unknown}")
    return cls(**read_fields(cls, given, where, reader))


def dump_fields(obj: Any) -> dict[str, Any]:
    """Plain JSON-able values of a declared dataclass (sections dumped in turn); local paths left
    out, ``omit_default`` fields left out at their default and ``omit_none`` fields when ``None``."""
    result: dict[str, Any] = {}
    for field, spec, key in declared(type(obj)):
        value = getattr(obj, field.name)
        if spec.path:
            continue
        if spec.omit_default and value == default_of(field):
            continue
        if spec.omit_none and value is None:
            continue
        if spec.dump is not None:
            value = spec.dump(value)
        elif spec.kind == "section":
            value = dump_fields(value)
        elif isinstance(value, tuple):
            value = list(value)
        result[key] = value
    return result


def reference_rows(cls: type, prefix: str = "") -> Iterator[tuple[str, str, str]]:
    """``(key, default, doc)`` of every declared field of ``cls``, sections expanded, for the docs."""
    for field, spec, key in declared(cls):
        full = f"{prefix}{key}"
        if spec.kind == "section":
            yield from reference_rows(type(default_of(field)), f"{full}.")
            continue
        default = default_of(field)
        shown = spec.dump(default) if spec.dump is not None and default is not None else default
        yield full, _yaml_scalar(shown), spec.doc


def _yaml_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml_scalar(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_yaml_scalar(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)
