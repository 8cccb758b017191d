from __future__ import annotations

import os
from pathlib import Path

import pytest

from support.images import make_folder

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """A folder of 3 classes x 2 real PNG images of 96x128 pixels."""
    return make_folder(tmp_path / "images")
