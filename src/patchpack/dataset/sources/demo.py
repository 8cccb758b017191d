"""The built-in demo: photographs shipped inside scikit-image, the demo slide and its labels."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from patchpack.errors import SourceError

# The demo: real photographs that ship inside scikit-image, so the pipeline runs offline.
# One class per photograph; region splits keep train/val/test pixels apart inside each one.
DEMO_IMAGES = (
    ("astronaut", "astronaut.png"),
    ("brick", "brick.png"),
    ("camera", "camera.png"),
    ("coins", "coins.png"),
    ("grass", "grass.png"),
    ("gravel", "gravel.png"),
    ("hubble", "hubble_deep_field.jpg"),
    ("moon", "moon.png"),
)


def demo_folder() -> Path:
    """The folder inside scikit-image that holds the demo photographs."""
    import skimage.data

    return Path(skimage.data.__file__).parent


def export_demo(out: Path) -> list[Path]:
    """Copy the demo photographs, byte for byte, to ``out/<class>/<file>``.

    The folder is built beside ``out`` and renamed into place, so ``out`` is either complete or absent.
    """
    origin = demo_folder()
    missing = [name for _, name in DEMO_IMAGES if not (origin / name).is_file()]
    if missing:
        raise SourceError(
            f"{origin}: scikit-image lacks the demo images {', '.join(missing)}; "
            f"reinstall it with `pip install --force-reinstall scikit-image`"
        )
    out = Path(out)
    demo_classes = {class_name for class_name, _ in DEMO_IMAGES}
    if out.exists() and any(entry.name not in demo_classes for entry in out.iterdir()):
        raise SourceError(
            f"{out}: folder exists and holds more than the demo; choose an empty or new folder"
        )
    staging = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    written = []
    for class_name, name in DEMO_IMAGES:
        target = staging / class_name / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(origin / name, target)
        written.append(out / class_name / name)
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)
    return written


DEMO_SLIDE = "demo/slide.tif"


def export_demo_slide(out: Path, *, side: int = 20480) -> Path:
    """Write the demo slide (see :mod:`patchpack.dataset.demo_slide`) to ``out/demo/slide.tif``."""
    from patchpack.dataset.demo_slide import tinted_photographs, write_demo_slide

    if side < 1536:
        raise SourceError(f"--side must be at least 1536 pixels (received {side})")
    out = Path(out)
    if out.exists() and any(entry.name != "demo" for entry in out.iterdir()):
        raise SourceError(
            f"{out}: folder exists and holds more than the demo slide; choose an empty or new folder"
        )
    photographs = tinted_photographs(demo_folder(), [name for _, name in DEMO_IMAGES])
    return write_demo_slide(out / DEMO_SLIDE, photographs, side=side)


DEMO_CLASSES = tuple(class_name for class_name, _ in DEMO_IMAGES)


def export_demo_labels(out: Path, *, side: int = 20480) -> list[Path]:
    """Write the demo slide's regions (one per photograph, classed by its name) to ``out/demo/``:
    ``slide.geojson`` (as QuPath exports annotations) and ``slide.png`` (the same as a raster)."""
    from patchpack.dataset.demo_slide import write_demo_labels

    out = Path(out)
    check_demo_labels_folder(out)
    return write_demo_labels(out, list(DEMO_CLASSES), side=side)


def check_demo_labels_folder(out: Path) -> None:
    """Refuse a folder for the demo labels that holds anything else (checked before the slide is
    written, so a refused folder leaves nothing behind)."""
    if out.exists() and (not out.is_dir() or any(entry.name != "demo" for entry in out.iterdir())):
        raise SourceError(
            f"{out}: folder exists and holds more than the demo labels; choose an empty or new folder"
        )
