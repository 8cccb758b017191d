"""Reading a params file: UTF-8 YAML, without aliases and without a key written twice.

An alias (``*name``) can make a few lines expand into billions of values (billion laughs), and
params.yaml never needs one. A key written twice in one mapping (two ``extract:`` blocks) is refused
with both lines, where PyYAML would silently keep the last. What the YAML says is validated by
:mod:`patchpack.params`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from patchpack.errors import ConfigError

# What a hostile or broken YAML text can raise besides yaml.YAMLError: PyYAML's constructors let
# ValueError (``2019-02-30``), TypeError and AttributeError escape, and deep nesting recurses.
_PARSE_ERRORS = (yaml.YAMLError, ValueError, TypeError, AttributeError, RecursionError)


def read_yaml(path: Path) -> object:
    """The YAML document in the file at ``path`` (``None`` when empty).

    Raises
    ------
    ConfigError
        When the file is missing or unreadable, not UTF-8, not valid YAML, uses YAML aliases or
        holds a key twice in one mapping.
    """
    return _parse_yaml(path, _read_text(path))


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
