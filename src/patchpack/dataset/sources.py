"""Source images: discovery, labels, the built-in demo, decoding and the one mode-conversion rule.

A source folder holds one subfolder per class (the image-folder convention)::

    images/
      brick/  a.png  b.tif
      grass/  c.jpg

Each image's id is its path relative to the folder, in POSIX form (``brick/a.png``), normalised to
Unicode NFC, and so are class names: a folder copied through macOS (which may store names decomposed,
NFD) gives the same ids, hence the same dataset. Every listing is sorted by id, so nothing depends on
the order the file system returns or on modification times.

A catalog refuses what would make a dataset ambiguous or silently incomplete: two files with the same
bytes (their patches could land in two splits, or under two labels), two names that are equal once
normalised, a symbolic link whose target is missing, anything that is neither a file nor a folder,
and names that are not valid UTF-8.

Conversion rule (applied to every image, documented in docs/guarantees.md):

* orientation first: pixels are taken as a viewer shows them. An EXIF Orientation tag (or XMP
  ``tiff:Orientation``) other than 1 is applied as :func:`PIL.ImageOps.exif_transpose` applies it, and
  the catalog's width and height are the displayed ones (swapped for orientations 5 to 8);
* 16-bit and 32-bit integer grayscale (``I;16``, ``I``) is scaled to 8 bits by dropping the low byte
  (``value >> 8``, after clipping to 0..65535);
* palette images are expanded to RGB (or RGBA when they have transparency), ``1`` (bilevel) to ``L``,
  and CMYK/YCbCr/LAB to RGB;
* alpha is dropped (the stored colour is kept, not composited);
* then ``channels: 1`` takes ITU-R 601-2 luma (Pillow's ``convert("L")``) and ``channels: 3`` takes
  RGB, replicating gray into three channels.

Float images (mode ``F``) are refused: their scale is unknown. Multi-frame TIFFs contribute their first frame.

Tiled TIFFs (the ``tifffile`` backend, see :mod:`patchpack.dataset.readers`) follow the same rule
with the same arithmetic, so one image stored tiled or in strips gives the same pixels: MINISWHITE
inverted (up to 8 bits; 16-bit MINISWHITE is kept as stored, as Pillow's ``I;16`` keeps it), 1-, 2-
and 4-bit gray spread over 0..255 (bilevel to 0 and 255), palette indices through the colormap's
high bytes, CMYK to RGB by Pillow's own conversion; a photometric with no such rule (CIELAB, YCbCr
without JPEG, ...) is refused in one line.

Resolution: ``source.mpp`` picks the level whose microns per pixel are closest to it, and refuses
(one line, naming the file and every level's resolution) when even that level is more than
``MPP_TOLERANCE`` (10%) away, since patches would silently be of another scale than asked for. A
resolution the file records as malformed, zero, negative or not finite counts as none recorded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
import re
import shutil
import struct
import unicodedata
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from patchpack.dataset.io import file_sha256
from patchpack.dataset.readers import (
    SUFFIXES,
    ArrayReader,
    Level,
    Reader,
    choose_backend,
    open_reader,
)
from patchpack.errors import SourceError
from patchpack.schema import dump_fields, param

IMAGE_SUFFIXES = SUFFIXES
FORMATS = ("PNG", "JPEG", "TIFF")
# How far (relative) the level source.mpp picks may be from it: a 0.5 µm/px level serves
# source.mpp 0.46 to 0.55, not 2.0
MPP_TOLERANCE = 0.10

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

# EXIF orientations that turn the image a quarter (ImageOps.exif_transpose transposes or rotates by
# 90 or 270 degrees): the displayed width is the stored height.
_QUARTER_TURNS = (5, 6, 7, 8)
# PNG chunks that can carry EXIF or XMP orientation (eXIf, and the text chunks holding
# "Raw profile type exif" or XMP); Pillow reads those that follow the pixel data only when decoding.
_PNG_METADATA = (b"eXIf", b"tEXt", b"zTXt", b"iTXt")


SHARD_PATH = re.compile(r"^(train|val|test)/shard-[0-9]{5,}\.h5$")
ROI_PATH = re.compile(r"^roi/[0-9a-f]{16}\.png$")
HEX64: dict[str, Any] = {"kind": "str", "pattern": re.compile(r"^[0-9a-f]{64}$")}
COUNT: dict[str, Any] = {
    "minimum": 0,
    "maximum": 2**31 - 1,
    "expected": "an integer from 0 to 2147483647",
}
_SCALE: dict[str, Any] = {
    "kind": "float",
    "positive": True,
    "maximum": 1e9,
    "expected": "a positive number",
}


@dataclass(frozen=True)
class SourceRecord:
    """What the manifest keeps of a source: its id, class, size and file hash (never a local path).

    ``labels`` and ``labels_sha256`` are written only for sources that have a label file, so
    manifests of folder-labelled datasets keep their bytes.
    """

    id: str = param(doc="relative POSIX path, NFC", kind="str")
    class_name: str = param(doc="its class folder", kind="str", empty=True, key="class")
    width: int = param(doc="level-0 width as displayed", **COUNT)
    height: int = param(doc="level-0 height as displayed", **COUNT)
    sha256: str = param(doc="sha256 of the file's bytes", **HEX64)
    backend: str = param("pillow", "the reader chosen for the file", kind="str")
    level: int = param(0, "the level patches are cut from", minimum=0, maximum=64,
                       expected="an integer from 0 to 64")  # fmt: skip
    downsample: float = param(1.0, "level-0 pixels per pixel of that level", **_SCALE)
    mpp: float | None = param(
        None, "microns per pixel at level 0, when the file says", null=True, **_SCALE
    )
    roi: str | None = param(
        None, "the ROI mask's path in the dataset", kind="str", null=True, pattern=ROI_PATH
    )
    roi_sha256: str | None = param(None, "sha256 of the ROI mask", null=True, **HEX64)
    roi_downsample: float | None = param(None, "level-0 pixels per mask pixel", null=True, **_SCALE)
    labels: str | None = param(
        None, "the label file's relative path", kind="str", omit_none=True, null=True
    )
    labels_sha256: str | None = param(
        None, "sha256 of the label file", omit_none=True, null=True, **HEX64
    )

    def to_dict(self) -> dict[str, object]:
        """The manifest's entry."""
        return dump_fields(self)


@dataclass(frozen=True)
class LabelFile:
    """A source's label file (see :mod:`patchpack.dataset.labels`), as the catalog found it.

    Attributes
    ----------
    kind : str, ``mask`` (a raster) or ``annotations`` (GeoJSON)
    path : Path, where the file is now (not recorded in the manifest)
    relative : str, its path relative to ``labels.dir``, POSIX form (recorded in the manifest)
    sha256 : str, of the file's bytes
    downsample : float, level-0 pixels per raster pixel (1.0 for annotations)
    """

    kind: str
    path: Path
    relative: str
    sha256: str
    downsample: float = 1.0


@dataclass(frozen=True)
class SourceImage:
    """One image of the catalog.

    Attributes
    ----------
    id : str, the path relative to the source folder, POSIX form, Unicode NFC
    label : int, index of ``class_name`` in the sorted class names
    class_name : str, the name of the subfolder, Unicode NFC
    path : Path, where the file is now, as spelled on disk (not recorded in the manifest)
    width, height : int, level-0 pixels as displayed (after the EXIF orientation)
    sha256 : str, of the file's bytes
    backend : str, the reader that decodes it (see :mod:`patchpack.dataset.readers`)
    levels : tuple of Level, the pyramid, level 0 first
    mpp : float or None, microns per pixel at level 0, when the file says
    level : int, the level patches are cut from (``source.level`` or the one closest to ``source.mpp``)
    labels : LabelFile or None, its label file, when labels or the ROI come from label files
    url : str or None, where it was fetched from when ``source.dir`` is a URL (see
        :mod:`patchpack.dataset.fetch`); ``path`` is then its cached copy
    """

    id: str
    label: int
    class_name: str
    path: Path
    width: int
    height: int
    sha256: str
    backend: str = "pillow"
    levels: tuple[Level, ...] = ()
    mpp: float | None = None
    level: int = 0
    labels: LabelFile | None = None
    url: str | None = None

    @property
    def size(self) -> Level:
        """The sampled level: patches are drawn on its pixel grid."""
        return self.levels[self.level] if self.levels else Level(self.height, self.width, 1.0)

    def record(self) -> SourceRecord:
        """What the manifest keeps of this source: everything but the local path."""
        return SourceRecord(
            self.id,
            self.class_name,
            self.width,
            self.height,
            self.sha256,
            backend=self.backend,
            level=self.level,
            downsample=self.size.downsample,
            mpp=self.mpp,
            labels=None if self.labels is None else self.labels.relative,
            labels_sha256=None if self.labels is None else self.labels.sha256,
        )


def catalog(
    folder: str | Path,
    *,
    max_megapixels: float,
    level: int = 0,
    mpp: float | None = None,
    by_folder: bool = True,
) -> tuple[list[str], list[SourceImage]]:
    """Discover, label and check every image under ``folder``.

    Every image's header is read here, before anything is written, so a bad file fails the run early.
    With ``by_folder=False`` (labels from label files) images may lie anywhere below ``folder``;
    they get the empty class name and label 0, and no class names are returned.

    Returns
    -------
    class_names : list of str, sorted, Unicode NFC
    sources : list of SourceImage, sorted by id

    Raises
    ------
    SourceError
        For a missing folder, no class subfolders, an empty class, a file that is not a supported
        image, a corrupt header, an image above ``max_megapixels``, a dangling symbolic link or other
        entry that is not a file, a name that is not UTF-8, two names equal once normalised, or two
        files with the same bytes.
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
    if not by_folder:
        return [], _unlabelled(root, max_megapixels, level, mpp)
    classes = _class_folders(root)
    sources: list[SourceImage] = []
    for label, (name, directory) in enumerate(classes):
        files = _class_files(root, directory)
        if not files:
            raise SourceError(
                f"{directory}: class folder is empty; add images to it or remove the folder"
            )
        for path in files:
            source = _inspect(root, path, label, name, max_megapixels)
            sources.append(dataclasses.replace(source, level=choose_level(source, level, mpp)))
    sources.sort(key=lambda source: source.id)
    _refuse_duplicates(sources)
    return [name for name, _ in classes], sources


def _unlabelled(
    root: Path, max_megapixels: float, level: int, mpp: float | None
) -> list[SourceImage]:
    """Every image below ``root``, in any folder, for labels that come from label files."""
    files = _class_files(root, root)
    if not files:
        raise SourceError(f"{root}: source folder holds no images; add images or fix source.dir")
    sources = []
    for path in files:
        source = _inspect(root, path, 0, "", max_megapixels)
        sources.append(dataclasses.replace(source, level=choose_level(source, level, mpp)))
    sources.sort(key=lambda source: source.id)
    _refuse_duplicates(sources)
    return sources


def _class_folders(root: Path) -> list[tuple[str, Path]]:
    """``(class name, folder)`` for every class subfolder, sorted by the normalised name."""
    entries = sorted(_visible(root))
    for entry in entries:
        _check_entry(entry)
    stray = [entry for entry in entries if entry.is_file()]
    if stray:
        raise SourceError(
            f"{stray[0]}: files must sit in one subfolder per class; move it into a class folder"
        )
    classes = sorted((_nfc(entry.name, entry), entry) for entry in entries if entry.is_dir())
    if not classes:
        raise SourceError(
            f"{root}: no class subfolders; put images in {root}/<class name>/ (one folder per class)"
        )
    for (name, first), (same, second) in itertools.pairwise(classes):
        if name == same:
            raise SourceError(
                f"{first} and {second} are the same class name {name!r} once Unicode-normalised "
                f"(NFC); merge the two folders or rename one"
            )
    return classes


def _class_files(root: Path, directory: Path) -> list[Path]:
    """The files under a class folder (hidden ones left out), sorted; anything odd is refused."""
    found = sorted(path for path in directory.rglob("*") if not _hidden(path, root))
    for path in found:
        _check_entry(path)
    return [path for path in found if path.is_file()]


def _check_entry(path: Path) -> None:
    """Refuse a dangling symbolic link, or an entry that is neither a file nor a folder."""
    if path.is_file() or path.is_dir():
        return
    if path.is_symlink():
        raise SourceError(
            f"{path}: symbolic link to {os.readlink(path)}, which is missing or cannot be followed; "
            f"restore its target or remove the link"
        )
    raise SourceError(
        f"{path}: not a regular file (a pipe, socket or device); remove it from the source folder"
    )


def _nfc(name: str, path: Path) -> str:
    """``name`` in Unicode NFC, the one spelling ids and class names are hashed and sorted in."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise SourceError(
            f"{shown}: name is not valid UTF-8, so its id has no stable spelling; rename it"
        ) from None
    return unicodedata.normalize("NFC", name)


def _refuse_duplicates(sources: Sequence[SourceImage]) -> None:
    """Refuse two sources with one id (names equal once normalised) or with the same bytes.

    ``sources`` is sorted by id, so the pair named is the same on every machine.
    """
    by_id: dict[str, SourceImage] = {}
    by_hash: dict[str, SourceImage] = {}
    for source in sources:
        first = by_id.setdefault(source.id, source)
        if first is not source:
            raise SourceError(
                f"{first.path} and {source.path} have the same id {source.id!r} once "
                f"Unicode-normalised (NFC); rename one of them"
            )
        first = by_hash.setdefault(source.sha256, source)
        if first is not source:
            where = "two splits" if first.label == source.label else "two splits under two labels"
            raise SourceError(
                f"{first.path} and {source.path} are the same image (sha256 {source.sha256[:16]}...), "
                f"so its patches could land in {where}; remove one of them"
            )


def _visible(root: Path) -> list[Path]:
    return [entry for entry in root.iterdir() if not entry.name.startswith(".")]


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def choose_level(source: SourceImage, level: int, mpp: float | None) -> int:
    """``level`` (checked to exist), or with ``mpp`` the level whose resolution is closest to it.

    Raises
    ------
    SourceError
        For a level that does not exist; with ``mpp``, for a file that records no resolution, or
        whose closest level is more than ``MPP_TOLERANCE`` from ``mpp``.
    """
    levels = source.levels or (source.size,)
    if mpp is None:
        if level >= len(levels):
            raise SourceError(
                f"{source.path}: source.level {level} does not exist (it has levels 0 to "
                f"{len(levels) - 1}); lower source.level"
            )
        return level
    if source.mpp is None or not mpp > 0:
        raise SourceError(
            f"{source.path}: the file records no resolution (microns per pixel; a missing, zero, "
            f"negative or malformed value counts as none), so source.mpp={mpp:g} cannot choose a "
            f"level; use source.level instead"
        )
    resolutions = [source.mpp * entry.downsample for entry in levels]
    distances = [abs(math.log(resolution / mpp)) for resolution in resolutions]
    closest = distances.index(min(distances))
    if abs(resolutions[closest] - mpp) > MPP_TOLERANCE * mpp:
        listed = ", ".join(
            f"{resolution:.3g}{' µm/px' if index == 0 else ''} at level {index}"
            for index, resolution in enumerate(resolutions)
        )
        raise SourceError(
            f"{source.path}: source.mpp={mpp:g} is more than {MPP_TOLERANCE:.0%} from every "
            f"level's resolution ({listed}); set source.level instead, an mpp within "
            f"{MPP_TOLERANCE:.0%} of a level, or use a pyramidal file with a level near {mpp:g} µm/px"
        )
    return closest


def _inspect(
    root: Path, path: Path, label: int, class_name: str, max_megapixels: float
) -> SourceImage:
    backend = choose_backend(path)
    source_id = _nfc(path.relative_to(root).as_posix(), path)
    if backend != "pillow":
        with open_reader(
            path, channels=3, max_megapixels=max_megapixels, backend=backend
        ) as reader:
            base = reader.levels[0]
            return SourceImage(
                id=source_id,
                label=label,
                class_name=class_name,
                path=path,
                width=base.width,
                height=base.height,
                sha256=source_sha256(path),
                backend=backend,
                levels=reader.levels,
                mpp=reader.mpp,
            )
    with _open(path, max_megapixels) as image:
        if image.mode == "F":
            raise SourceError(
                f"{path}: 32-bit float images have no fixed scale; convert it to 8- or 16-bit"
            )
        width, height = _displayed_size(image, path)
    return SourceImage(
        id=source_id,
        label=label,
        class_name=class_name,
        path=path,
        width=width,
        height=height,
        sha256=source_sha256(path),
        levels=(Level(height, width, 1.0),),
    )


def _displayed_size(image: Image.Image, path: Path) -> tuple[int, int]:
    """``(width, height)`` as a viewer shows the image, read from its header (no pixel decoded)."""
    width, height = image.size
    if image.format == "TIFF":
        return width, height  # Pillow's TIFF reader already reports (and decodes) TIFFs upright
    with _exif_errors(path):
        if image.format == "PNG" and not _png_metadata_after_pixels(path):
            # PngImageFile.getexif decodes every pixel in case metadata follows them; none does here,
            # so the chunks read with the header hold all of it.
            exif = Image.Image.getexif(image)
        else:
            exif = image.getexif()
        orientation = exif.get(ExifTags.Base.Orientation, 1)
    return (height, width) if orientation in _QUARTER_TURNS else (width, height)


def _upright(image: Image.Image, path: Path) -> None:
    """Turn a decoded image, in place, the way its EXIF orientation says a viewer shows it."""
    with _exif_errors(path):
        ImageOps.exif_transpose(image, in_place=True)


@contextlib.contextmanager
def _exif_errors(path: Path) -> Iterator[None]:
    """Around Pillow's EXIF parsing: a file it cannot parse fails in one line.

    Pillow warns about odd tags (a truncated maker note, a repeated value) and keeps what it can
    read; a viewer does the same, so those warnings are silenced rather than shown per image.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    except (OSError, SyntaxError, ValueError, struct.error) as exc:
        raise SourceError(
            f"{path}: unreadable EXIF metadata ({exc}); re-export the image or remove it"
        ) from exc


def _png_metadata_after_pixels(path: Path) -> bool:
    """Whether a PNG has an eXIf or text chunk after its image data (chunk headers only, no decoding).

    A truncated or unreadable file answers ``False``: its decoding fails later, with its own message.
    """
    seen_pixels = False
    try:
        with path.open("rb") as handle:
            handle.seek(8)  # past the PNG signature
            while len(header := handle.read(8)) == 8:
                length, kind = struct.unpack(">I4s", header)
                if kind == b"IEND":
                    break
                if kind == b"IDAT":
                    seen_pixels = True
                elif seen_pixels and kind in _PNG_METADATA:
                    return True
                handle.seek(length + 4, os.SEEK_CUR)  # the data and its CRC
    except OSError:
        return False
    return False


def _open(path: Path, max_megapixels: float) -> Image.Image:
    """Open an image lazily (header only) with the size guard applied before any pixel is decoded."""
    limit = int(max_megapixels * 1_000_000)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Pillow warns about odd EXIF while it sniffs a JPEG; _exif_errors says why it is quiet.
            warnings.simplefilter("ignore", UserWarning)
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
    """Decode a source, upright, to the configured channels by the module's conversion rule.

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
        _upright(image, source.path)
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


_HASHED: dict[tuple[str, int, int, int, int, int], str] = {}


def _stat_key(path: Path) -> tuple[str, int, int, int, int, int]:
    """What identifies a file's bytes without reading them: path, device, inode, size, mtime and
    ctime. A rewrite that restores size and mtime (``os.utime``) still moves the ctime, which no
    process can set back."""
    status = path.stat()
    return (
        str(path),
        status.st_dev,
        status.st_ino,
        status.st_size,
        status.st_mtime_ns,
        status.st_ctime_ns,
    )


def check_file(path: Path, sha256: str, what: str = "source") -> None:
    """Refuse a file whose bytes are not those the catalog hashed (changed, or a stale copy)."""
    try:
        digest = source_sha256(path)
    except OSError as exc:
        raise SourceError(
            f"{path}: cannot read the {what} ({exc.strerror}); every worker needs the source "
            f"and label folders at the same path"
        ) from exc
    if digest != sha256:
        raise SourceError(
            f"{path}: its bytes differ from those the catalog hashed (sha256 {sha256[:16]}...): "
            f"the file changed, or this node holds another copy; give every worker the same "
            f"sources and run again"
        )


def remember_sha256(path: Path, sha256: str) -> None:
    """Record a file's sha256, computed while it was written (a fetched source), for this process."""
    _HASHED[_stat_key(path)] = sha256


def source_sha256(path: Path) -> str:
    """sha256 of a source file, hashed once per process while it stays the same file.

    The catalog hashes every source; the worker checks (before and after decoding) and tissue masks
    in the same process then reuse the hash instead of reading the file again, as long as the file's
    :func:`_stat_key` is unchanged. Another process, or another node, hashes anew.
    """
    key = _stat_key(path)
    if key not in _HASHED:
        _HASHED[key] = file_sha256(path)
    return _HASHED[key]


def reader_for(source: SourceImage, channels: int, max_megapixels: float) -> Reader:
    """A reader over ``source``: small images decoded whole, slides through their windowed backend."""
    if source.backend == "pillow":
        return ArrayReader(source.path, load_pixels(source, channels, max_megapixels))
    return open_reader(
        source.path, channels=channels, max_megapixels=max_megapixels, backend=source.backend
    )


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
