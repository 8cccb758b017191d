"""The environment envelope: read from package metadata, the same strings the modules report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import imagecodecs
import openslide
import pytest
import tifffile
import zarr

from patchpack.dataset.envelope import current_environment, distribution_versions


def test_versions_from_metadata_equal_the_modules_own() -> None:
    environment = current_environment()
    assert environment["tifffile"] == tifffile.__version__
    assert environment["zarr"] == zarr.__version__
    assert environment["imagecodecs"] == imagecodecs.__version__
    assert environment["openslide-python"] == openslide.__version__
    assert environment["openslide"] == str(openslide.__library_version__)
    for codec in ("jpeg8", "jpeg2k", "webp"):
        assert environment[f"imagecodecs.{codec}"] == str(
            getattr(imagecodecs, f"{codec}_version")()
        )


def test_reading_the_envelope_imports_no_decoder() -> None:
    """A dataset of small images decodes no slide: its envelope must not import the slide readers
    (nor importlib.metadata, which costs more than the folder listings)."""
    code = (
        "import json, sys; from patchpack.dataset.envelope import current_environment; "
        "env = current_environment(); "
        "print(json.dumps([env, sorted(m for m in ('zarr', 'tifffile', 'openslide', "
        "'importlib.metadata') "
        "if m in sys.modules)]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    environment, imported = json.loads(done.stdout)
    assert imported == []
    assert environment == current_environment()


def test_versions_from_folder_names_equal_importlib_metadata() -> None:
    """Every distribution of this environment: the dist-info folder name gives the version that
    importlib.metadata reads from its METADATA file."""
    from importlib import metadata

    names = tuple(sorted({dist.metadata["Name"] for dist in metadata.distributions()}))
    found = distribution_versions(names)
    assert len(found) == len(names) > 50
    assert found == {name: metadata.version(name) for name in names}


def test_first_folder_on_the_path_wins_and_egg_info_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "Tiff_File-0.0.1.dist-info").mkdir()  # shadows the installed tifffile
    egg = tmp_path / "only_an_egg-3.1.egg-info"
    egg.mkdir()
    (egg / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: only-an-egg\nVersion: 3.1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = distribution_versions(("tifffile", "tiff-file", "only-an-egg", "not-installed-at-all"))
    assert found == {"tiff-file": "0.0.1", "tifffile": tifffile.__version__, "only-an-egg": "3.1"}
