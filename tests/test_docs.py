"""The params reference page is generated from the declarations, and every declaration says what it
does: a new field is one declaration, and the docs follow."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from patchpack.params import (
    BaseParams,
    CardParams,
    DatasetParams,
    ExtractParams,
    LabelParams,
    ModelParams,
    ShardParams,
    SourceParams,
    SplitParams,
    TrainParams,
)
from patchpack.params.reference import reference_markdown
from patchpack.schema import declared, param, read_fields

REPO = Path(__file__).resolve().parents[1]
SECTIONS = (BaseParams, SourceParams, ExtractParams, LabelParams, SplitParams, ShardParams,
            TrainParams, ModelParams, CardParams)  # fmt: skip


def test_the_committed_params_reference_is_current() -> None:
    committed = (REPO / "docs" / "params.md").read_text(encoding="utf-8")
    assert committed == reference_markdown(), (
        "docs/params.md is stale: run `python -m patchpack.params.reference > docs/params.md`"
    )


def test_the_reference_is_printed_by_its_module() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "patchpack.params.reference"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert printed.stdout == reference_markdown() and not printed.stderr


@pytest.mark.parametrize("section", SECTIONS, ids=lambda cls: cls.__name__)
def test_every_declared_field_has_a_doc_and_appears_in_the_reference(section: type) -> None:
    text = reference_markdown()
    for field, spec, key in declared(section):
        assert spec.doc.strip(), f"{section.__name__}.{field.name} has no doc"
        if spec.kind != "section":
            assert f".{key}` |" in text, f"{section.__name__}.{key} is not in the reference"


def test_the_manifest_params_are_the_declared_ones() -> None:
    """DatasetParams reuses the declarations of params.yaml's fields, not copies that could drift."""
    specs = {field.name: spec for field, spec, _ in declared(DatasetParams)}
    for name, source in (("seed", BaseParams), ("channels", SourceParams), ("mpp", SourceParams)):
        original = next(spec for field, spec, _ in declared(source) if field.name == name)
        assert specs[name].doc == original.doc and specs[name].kind == original.kind


def test_a_new_field_is_one_declaration() -> None:
    """A field declared once is read, checked, defaulted and documented with no other code."""

    @dataclasses.dataclass(frozen=True)
    class Section:
        """A section for this test."""

        width: int = param(8, "how wide", minimum=2, maximum=64)

    from patchpack.errors import ConfigError
    from patchpack.schema import Reader, reference_rows

    reader = Reader("params.yaml")
    assert read_fields(Section, {}, "demo", reader) == {"width": 8}
    assert read_fields(Section, {"width": 9}, "demo", reader) == {"width": 9}
    with pytest.raises(
        ConfigError, match=r"params.yaml: demo.width must be at most 64 \(received 65\)"
    ):
        read_fields(Section, {"width": 65}, "demo", reader)
    with pytest.raises(ConfigError, match=r"unknown key 'demo.height'; known keys here: width"):
        read_fields(Section, {"height": 1}, "demo", reader)
    assert list(reference_rows(Section, "demo.")) == [("demo.width", "8", "how wide")]


def test_dvc_yaml_extract_stages_depend_on_exactly_the_byte_deciding_code() -> None:
    """One list says what decides bytes: dvc.yaml's extract stages and the staged-shard digest use it."""
    import yaml

    from patchpack.dataset import BYTE_DECIDING, byte_deciding_modules

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    want = {f"src/patchpack/{entry}" for entry in BYTE_DECIDING}
    extracts = [stage for stage in stages.values() if "patchpack extract" in str(stage.get("cmd"))]
    assert len(extracts) == 3
    for stage in extracts:
        code = {dep for dep in stage["deps"] if dep.startswith("src/")}
        assert code == want, stage["cmd"]
    modules = byte_deciding_modules()
    assert "dataset/extract.py" in modules and "params/sections.py" in modules
    assert "schema.py" in modules and not any(m.startswith("engine/") for m in modules)
