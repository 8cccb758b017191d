"""The environment envelope: read from package metadata, the same strings the modules report."""

from __future__ import annotations

import json
import subprocess
import sys

import imagecodecs
import openslide
import tifffile
import zarr

from patchpack.dataset.envelope import current_environment


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
    """A dataset of small images decodes no slide: its envelope must not import the slide readers."""
    code = (
        "import json, sys; from patchpack.dataset.envelope import current_environment; "
        "env = current_environment(); "
        "print(json.dumps([env, sorted(m for m in ('zarr', 'tifffile', 'openslide') "
        "if m in sys.modules)]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    environment, imported = json.loads(done.stdout)
    assert imported == []
    assert environment == current_environment()
