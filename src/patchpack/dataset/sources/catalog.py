"""Source discovery: the folder convention, ids, what a catalog refuses, and the level it samples.

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

Resolution: ``source.mpp`` picks the level whose microns per pixel are closest to it, and refuses
(one line, naming the file and every level's resolution) when even that level is more than
``MPP_TOLERANCE`` (10%) away, since patches would silently be of another scale than asked for. A
resolution the file records as malformed, zero, negative or not finite counts as none recorded.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from patchpack.dataset.readers import SUFFIXES, Level, choose_backend, open_reader
from patchpack.dataset.sources.decode import _displayed_size, _open
from patchpack.dataset.sources.hashing import source_sha256
from patchpack.dataset.sources.records import SourceImage
from patchpack.errors import SourceError

IMAGE_SUFFIXES = SUFFIXES
# How far (relative) the level source.mpp picks may be from it: a 0.5 µm/px level serves
# source.mpp 0.46 to 0.55, not 2.0
MPP_TOLERANCE = 0.10


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
