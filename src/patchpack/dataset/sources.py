"""Source images: discovery, labels, the built-in demo, decoding and the one mode-conversion rule.

A source folder holds one subfolder per class (the image-folder convention)::

    images/
      brick/  a.png  b.tif
      grass/  c.jpg

Each image's id is its path relative to the folder, in POSIX form (``brick/a.png``); every listing is
sorted by id, so nothing depends on the order the file system returns or on modification times.

Conversion rule (applied to every image, documented in the README):

* 16-bit and 32-bit integer grayscale (``I;16``, ``I``) is scaled to 8 bits by dropping the low byte
  (``value >> 8``, after clipping to 0..65535);
* palette images are expanded to RGB (or RGBA when they have transparency), ``1`` (bilevel) to ``L``,
  and CMYK/YCbCr/LAB to RGB;
* alpha is dropped (the stored colour is kept, not composited);
* then ``channels: 1`` takes ITU-R 601-2 luma (Pillow's ``convert("L")``) and ``channels: 3`` takes
  RGB, replicating gray into three channels.

Float images (mode ``F``) are refused: their scale is unknown. Multi-frame TIFFs contribute their first frame.
"""

from __future__ import annotations

import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from patchpack.dataset.io import file_sha256
from patchpack.errors import SourceError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
FORMATS = ("PNG", "JPEG", "TIFF")

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


@dataclass(frozen=True)
class SourceRecord:
    """What the manifest keeps of a source: its id, class, size and file hash (never a local path)."""

    id: str
    class_name: str
    width: int
    height: int
    sha256: str

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "class": self.class_name,
            "width": self.width,
            "height": self.height,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class SourceImage:
    """One image of the catalog.

    Attributes
    ----------
    id : str, the path relative to the source folder, POSIX form
    label : int, index of ``class_name`` in the sorted class names
    class_name : str, the name of the subfolder
    path : Path, where the file is now (not recorded in the manifest)
    width, height : int, pixels
    sha256 : str, of the file's bytes
    """

    id: str
    label: int
    class_name: str
    path: Path
    width: int
    height: int
    sha256: str

    def record(self) -> SourceRecord:
        """What the manifest keeps of this source: everything but the local path."""
        return SourceRecord(self.id, self.class_name, self.width, self.height, self.sha256)


def catalog(folder: str | Path, *, max_megapixels: float) -> tuple[list[str], list[SourceImage]]:
    """Discover, label and check every image under ``folder``.

    Every image's header is read here, before anything is written, so a bad file fails the run early.

    Returns
    -------
    class_names : list of str, sorted
    sources : list of SourceImage, sorted by id

    Raises
    ------
    SourceError
        For a missing folder, no class subfolders, an empty class, a file that is not a supported
        image, a corrupt header or an image above ``max_megapixels``.
    """
    root = Path(folder)
    if not root.exists():
        raise SourceError(
            f"{root}: source folder does not exist; set source.dir in params.yaml or pass --source DIR"
        )
    if not root.is_dir():
        raise SourceError(
            f"{root}: source is not a folder; point source.dir at a folder of class subfolders"
        )
    entries = sorted(_visible(root))
    stray = [entry for entry in entries if entry.is_file()]
    if stray:
        raise SourceError(
            f"{stray[0]}: files must sit in one subfolder per class; move it into a class folder"
        )
    class_names = [entry.name for entry in entries if entry.is_dir()]
    if not class_names:
        raise SourceError(
            f"{root}: no class subfolders; put images in {root}/<class name>/ (one folder per class)"
        )
    sources: list[SourceImage] = []
    for label, name in enumerate(class_names):
        files = sorted(
            path for path in (root / name).rglob("*") if path.is_file() and not _hidden(path, root)
        )
        if not files:
            raise SourceError(
                f"{root / name}: class folder is empty; add images to it or remove the folder"
            )
        for path in files:
            sources.append(_inspect(root, path, label, name, max_megapixels))
    sources.sort(key=lambda source: source.id)
    return class_names, sources


def _visible(root: Path) -> list[Path]:
    return [entry for entry in root.iterdir() if not entry.name.startswith(".")]


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _inspect(
    root: Path, path: Path, label: int, class_name: str, max_megapixels: float
) -> SourceImage:
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise SourceError(
            f"{path}: not an image (supported: {', '.join(IMAGE_SUFFIXES)}); "
            f"remove it from the source folder"
        )
    with _open(path, max_megapixels) as image:
        width, height = image.size
        if image.mode == "F":
            raise SourceError(
                f"{path}: 32-bit float images have no fixed scale; convert it to 8- or 16-bit"
            )
    return SourceImage(
        id=path.relative_to(root).as_posix(),
        label=label,
        class_name=class_name,
        path=path,
        width=width,
        height=height,
        sha256=file_sha256(path),
    )


def _open(path: Path, max_megapixels: float) -> Image.Image:
    """Open an image lazily (header only) with the size guard applied before any pixel is decoded."""
    limit = int(max_megapixels * 1_000_000)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise SourceError(
            f"{path}: image header claims too many pixels ({exc}); raise source.max_megapixels "
            f"only if you trust the file"
        ) from exc
    except UnidentifiedImageError:
        raise SourceError(
            f"{path}: not a readable image (unknown or corrupt header); re-export it as PNG, JPEG or TIFF"
        ) from None
    except OSError as exc:
        raise SourceError(f"{path}: cannot open image ({exc}); check the file") from exc
    if image.format not in FORMATS:
        image.close()
        raise SourceError(
            f"{path}: {image.format} images are not supported; convert it to PNG, JPEG or TIFF"
        )
    width, height = image.size
    if width * height > limit:
        image.close()
        raise SourceError(
            f"{path}: {width}x{height} is {width * height / 1e6:.0f} megapixels, above "
            f"source.max_megapixels={max_megapixels:g} (a decompression-bomb guard); raise it only "
            f"if you trust the file"
        )
    return image


def load_pixels(source: SourceImage, channels: int, max_megapixels: float) -> np.ndarray:
    """Decode a source to the configured channels by the module's conversion rule.

    Returns
    -------
    pixels : ndarray of shape (height, width, channels), uint8
    """
    with _open(source.path, max_megapixels) as image:
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise SourceError(
                f"{source.path}: corrupt or truncated image data ({exc}); re-export or remove it"
            ) from exc
        converted = _to_channels(image, channels)
    pixels = np.asarray(converted, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    if pixels.shape != (source.height, source.width, channels):
        raise SourceError(
            f"{source.path}: decoded to shape {pixels.shape}, expected "
            f"{(source.height, source.width, channels)}; the file changed during extraction"
        )
    return pixels


def _to_channels(image: Image.Image, channels: int) -> Image.Image:
    mode = image.mode
    if mode.startswith("I"):
        wide = np.asarray(image, dtype=np.int64)
        image = Image.fromarray((np.clip(wide, 0, 65535) >> 8).astype(np.uint8), mode="L")
    elif mode in ("P", "PA"):
        image = image.convert("RGBA" if "transparency" in image.info or mode == "PA" else "RGB")
    elif mode == "1":
        image = image.convert("L")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        image = image.convert("RGB")
    if image.mode == "LA":
        image = image.getchannel("L")
    elif image.mode == "RGBA":
        image = image.convert("RGB")
    return image.convert("L" if channels == 1 else "RGB")


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
