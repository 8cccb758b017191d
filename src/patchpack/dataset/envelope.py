"""The environment envelope: the versions that can change a shard's bytes or a patch's pixels, which
the manifest records and a Dask worker must match.

Versions come from the installed packages' metadata, not from importing them: tifffile, zarr and
OpenSlide cost a third of a second to import, and a dataset of small images decodes none of them.
The metadata is read from the names of the ``*.dist-info`` folders on ``sys.path`` (one directory
listing each), in the order ``importlib.metadata`` searches them, without importing it (20-40 ms,
most of it its e-mail parser); a distribution whose first hit is an ``.egg-info`` or lies in a zip
file is asked of ``importlib.metadata``. A version that exists only inside a library (HDF5's,
libjpeg's, imagecodecs' codecs) is asked of modules that extraction imports anyway (h5py, Pillow)
or that import in milliseconds (imagecodecs).
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import sys
import zlib

# the distributions whose version the envelope records, under their own names: the same strings as
# the modules' ``__version__`` (tests/test_envelope.py compares them)
_DISTRIBUTIONS = ("tifffile", "zarr", "imagecodecs", "openslide-python")
_CODECS = ("jpeg8", "jpeg2k", "webp")  # zlib is left out: which copy loads depends on import order


def annotated_environment() -> dict[str, str]:
    """:func:`current_environment` plus shapely and GEOS, which decide labels from annotations
    (repairs, unions, areas): the envelope of a dataset labelled by GeoJSON files."""
    import shapely

    return {
        **current_environment(),
        "shapely": shapely.__version__,
        "geos": shapely.geos_version_string,
    }


def current_environment() -> dict[str, str]:
    """The versions that can change a shard's bytes or a patch's pixels (tile decoders included)."""
    import h5py
    import hdf5plugin
    import numpy
    import PIL
    from PIL import features

    return {
        **decoder_versions(),
        "python": platform.python_version(),
        "platform": sys.platform,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "libjpeg": str(features.version("jpg")),
        "zlib": zlib.ZLIB_RUNTIME_VERSION,
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
        "hdf5plugin": hdf5plugin.version,
    }


def decoder_versions() -> dict[str, str]:
    """Versions of the tile decoders (where pixels can differ between machines), in the order the
    manifest has always listed them."""
    found = distribution_versions((*_DISTRIBUTIONS, "openslide-bin"))
    versions = {name: _required(found, name) for name in _DISTRIBUTIONS}
    versions["openslide"] = _openslide_library(found.get("openslide-bin"))
    import imagecodecs  # its codecs load lazily: a few milliseconds for these three

    for codec in _CODECS:
        version = getattr(imagecodecs, f"{codec}_version", None)
        if callable(version):
            versions[f"imagecodecs.{codec}"] = str(version())
    return versions


def _normalized(name: str) -> str:
    """A distribution name as the packaging specs compare them (``openslide_python`` is
    ``openslide-python``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def distribution_versions(names: tuple[str, ...]) -> dict[str, str]:
    """The installed version of each of ``names`` (a missing one is left out), as
    ``importlib.metadata`` finds it: in the first ``sys.path`` entry that holds its metadata.

    A ``NAME-VERSION.dist-info`` folder there gives the version in its name; where the first hit
    is an ``.egg-info`` or the entry is a zip file, ``importlib.metadata`` itself is asked (it is
    imported only then).
    """
    wanted = {_normalized(name): name for name in names}
    found: dict[str, str] = {}
    ask: list[str] = []  # first found where only importlib.metadata reads the version
    for entry in sys.path:
        if len(found) + len(ask) == len(wanted):
            break
        try:
            listing = os.scandir(entry or ".")
        except OSError:  # a zip file (importlib.metadata reads inside it), or no such folder
            if os.path.isfile(entry):
                ask += [name for name in names if name not in found and name not in ask]
            continue
        with listing:
            for item in listing:
                _take(item.name, wanted, found, ask)
    if ask:
        from importlib import metadata

        for name in ask:
            found.pop(name, None)
            with contextlib.suppress(metadata.PackageNotFoundError):
                found[name] = metadata.version(name)
    return found


def _take(entry: str, wanted: dict[str, str], found: dict[str, str], ask: list[str]) -> None:
    """Record what the folder entry ``entry`` says of a wanted distribution not met before: its
    version (a dist-info folder), or that importlib.metadata must read it (an egg-info)."""
    stem, dot, suffix = entry.rpartition(".")
    if not dot or suffix.lower() not in ("dist-info", "egg-info"):
        return
    name, dash, version = stem.partition("-")
    target = wanted.get(_normalized(name))
    if target is None or target in found or target in ask:
        return
    if suffix.lower() == "dist-info" and dash:
        found[target] = version
    else:
        ask.append(target)


def _required(found: dict[str, str], name: str) -> str:
    if name not in found:
        from importlib import metadata

        raise metadata.PackageNotFoundError(name)  # what importlib.metadata.version raised
    return found[name]


def _openslide_library(openslide_bin: str | None) -> str:
    """The OpenSlide library's version. openslide-python loads the openslide-bin build when it is
    installed, and openslide-bin is numbered as the OpenSlide it ships plus a build number
    (``4.0.1.2`` ships OpenSlide 4.0.1); any other library is asked directly, which loads it."""
    if openslide_bin is not None:
        return ".".join(openslide_bin.split(".")[:3])
    import openslide

    return str(openslide.__library_version__)
