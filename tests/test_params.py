from __future__ import annotations

from pathlib import Path

import pytest

from patchpack.errors import ConfigError
from patchpack.params import Params, load_params, params_from_dict
from support.images import small_raw


def test_repository_params_are_valid() -> None:
    params = load_params(Path(__file__).parents[1] / "params.yaml")
    assert params.source.dir == "data/demo"
    assert params.extract.per_image is not None and params.extract.per_class is None
    assert sum(params.split.fractions) == pytest.approx(1.0)


def test_defaults_fill_missing_sections() -> None:
    params = params_from_dict({})
    assert params.split.mode == "region"
    assert params.shards.compression == "zstd"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"extract": {"patch_sise": 3}}, r"unknown key 'extract.patch_sise'"),
        ({"bogus": 1}, r"unknown key 'bogus'"),
        (
            {"extract": {"patch_size": "big"}},
            r"extract.patch_size must be an integer \(received 'big'\)",
        ),
        ({"extract": {"patch_size": True}}, r"extract.patch_size must be an integer"),
        ({"extract": {"patch_size": 0}}, r"extract.patch_size must be at least 1 \(received 0\)"),
        (
            {"split": {"fractions": {"train": 0.7, "val": 0.2, "test": 0.2}}},
            r"split.fractions must sum to 1 \(received 0.7 \+ 0.2 \+ 0.2 = 1.1\)",
        ),
        ({"split": {"fractions": {"train": 0.7, "val": 0.3}}}, r"split.fractions is missing test"),
        ({"split": {"mode": "random"}}, r"split.mode must be one of image, region, patch"),
        (
            {"shards": {"compression": "lz4"}},
            r"shards.compression must be one of zstd, gzip, none \(received 'lz4'\)",
        ),
        (
            {"shards": {"compression": "gzip", "level": 12}},
            r"shards.level for gzip must be between 0 and 9",
        ),
        ({"source": {"channels": 2}}, r"source.channels must be 1 \(grayscale\) or 3 \(RGB\)"),
        (
            {"extract": {"per_image": 10, "per_class": 10}},
            r"set exactly one of extract.per_image and extract.per_class",
        ),
        ({"extract": {"per_image": None}}, r"set exactly one"),
        ({"base": {"seed": -1}}, r"base.seed must be at least 0"),
        ({"split": "region"}, r"split must be a mapping"),
        ({"train": {"cnn": {"epochs": 0}}}, r"train.cnn.epochs must be at least 1"),
        ({"train": {"mixed_precision": "yes"}}, r"train.mixed_precision must be true or false"),
        (
            {"extract": {"per_image": 1_000_000_000}},
            r"extract.per_image must be at most 10000000 \(received 1000000000\)",
        ),
        (
            {"extract": {"per_image": None, "per_class": 10_000_001}},
            r"extract.per_class must be at most 10000000 \(received 10000001\)",
        ),
        (
            {"extract": {"patch_size": 4097}},
            r"extract.patch_size must be at most 4096 \(received 4097\)",
        ),
        (
            {"split": {"block_size": 65537}},
            r"split.block_size must be at most 65536 \(received 65537\)",
        ),
    ],
)
def test_bad_params_name_the_key_and_value(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        params_from_dict(raw)


def test_per_class_alone_replaces_the_per_image_default() -> None:
    params = params_from_dict({"extract": {"per_class": 100}})
    assert (params.extract.per_image, params.extract.per_class) == (None, 100)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no such params file"):
        load_params(tmp_path / "absent.yaml")
    broken = tmp_path / "params.yaml"
    broken.write_text("base:\n  seed: [1,\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"is not valid YAML"):
        load_params(broken)


def test_upper_limits_are_accepted() -> None:
    params = params_from_dict(
        {"extract": {"per_image": 10_000_000, "patch_size": 4096}, "split": {"block_size": 65536}}
    )
    assert (params.extract.per_image, params.extract.patch_size) == (10_000_000, 4096)
    assert params.split.block_size == 65536


def test_a_params_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_bytes(b"base:\n  seed: 7 # caf\xe9\n")
    with pytest.raises(
        ConfigError, match=r"params.yaml: not UTF-8 text \(byte 0xe9 at offset 21\)"
    ):
        load_params(path)


def test_yaml_aliases_are_refused(tmp_path: Path) -> None:
    """Billion laughs: nine levels of aliases expand to 10**9 strings once the value is echoed."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{k}: &a{k} [{', '.join([f'*a{k - 1}'] * 10)}]" for k in range(1, 10)]
    bomb = tmp_path / "params.yaml"
    bomb.write_text(
        "extract:\n  patch_size:\n" + "".join(f"    {line}\n" for line in lines), encoding="utf-8"
    )
    with pytest.raises(
        ConfigError,
        match=r"params.yaml: line 4: YAML aliases \(\*a0\) are not allowed in params files",
    ):
        load_params(bomb)


def test_yaml_anchors_without_aliases_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("extract:\n  patch_size: &size 24\n", encoding="utf-8")
    assert load_params(path).extract.patch_size == 24


@pytest.mark.parametrize(
    "text",
    [
        "base:\n  seed: 2019-02-30\n",  # a date PyYAML parses, then fails to build (ValueError)
        "base:\n  seed: !!float 'x'\n",
        "base:\n  seed: " + "[" * 5000 + "]" * 5000 + "\n",  # nesting deep enough to recurse
    ],
)
def test_yaml_the_parser_cannot_build_is_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"params.yaml:.* is not valid YAML; fix the syntax"):
        load_params(path)


def test_source_override(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("base: {seed: 3}\n", encoding="utf-8")
    assert load_params(path, source_dir="elsewhere").source.dir == "elsewhere"


def test_dataset_dict_has_no_paths(tmp_path: Path) -> None:
    params = params_from_dict(small_raw(tmp_path / "somewhere"))
    assert str(tmp_path) not in repr(params.dataset_dict())


def test_params_yaml_and_the_code_defaults_agree() -> None:
    """One source of defaults: the committed params.yaml says exactly what the dataclasses default to."""
    committed = load_params(Path(__file__).parents[1] / "params.yaml")
    assert committed == Params()
    assert params_from_dict({}) == Params()
