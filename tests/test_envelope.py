"""The environment envelope: read from package metadata, the same strings the modules report."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
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


def test_versions_from_folder_names_equal_importlib_metadata(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every distribution of this environment (pip's dist-info folders): the folder names alone,
    importlib.metadata not asked, give the version that importlib.metadata reads from METADATA."""
    from importlib import metadata

    names = tuple(sorted({dist.metadata["Name"] for dist in metadata.distributions()}))
    expected = {name: metadata.version(name) for name in names}

    def not_asked(name: str) -> str:
        raise AssertionError(f"importlib.metadata asked for {name}")

    monkeypatch.setattr(metadata, "version", not_asked)
    found = distribution_versions(names)
    assert len(found) == len(names) > 50
    assert found == expected


def test_the_first_entry_on_the_path_wins_as_importlib_metadata_decides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dist-info folder earlier on the path shadows the installed one (its name in any case and
    spelling); an egg-info found first is read by importlib.metadata, as are distributions in a
    zip file on the path; a distribution installed nowhere is left out."""
    from importlib import metadata

    first, second = tmp_path / "first", tmp_path / "second"
    (first / "TiffFile-0.0.1.DIST-INFO").mkdir(parents=True)
    egg = first / "Zarr.egg-info"
    egg.mkdir()
    (egg / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: zarr\nVersion: 9.9\n")
    (second / "zarr-0.0.2.dist-info").mkdir(parents=True)  # after the egg: not the one found
    archive = tmp_path / "dists.zip"
    with zipfile.ZipFile(archive, "w") as packed:
        packed.writestr("only_zipped-1.5.dist-info/METADATA", "Name: only-zipped\nVersion: 1.5\n")
    monkeypatch.syspath_prepend(str(archive))
    monkeypatch.syspath_prepend(str(second))
    monkeypatch.syspath_prepend(str(first))
    names = ("tifffile", "zarr", "only-zipped", "not-installed-at-all")
    found = distribution_versions(names)
    assert found == {"tifffile": "0.0.1", "zarr": "9.9", "only-zipped": "1.5"}
    assert found["zarr"] == metadata.version("zarr")
