"""The environment envelope: the versions that can change a shard's bytes or a patch's pixels, which
the manifest records and a Dask worker must match.

Versions come from the installed packages' metadata, not from importing them: tifffile, zarr and
OpenSlide cost a third of a second to import, and a dataset of small images decodes none of them. A
version that exists only inside a library (HDF5's, libjpeg's, imagecodecs' codecs) is asked of
modules that extraction imports anyway (h5py, Pillow) or that import in milliseconds (imagecodecs).
"""

from __future__ import annotations

import platform
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
    from importlib import metadata  # 20-40 ms to import: not at ``import patchpack``

    versions = {name: metadata.version(name) for name in _DISTRIBUTIONS}
    versions["openslide"] = _openslide_library()
    import imagecodecs  # its codecs load lazily: a few milliseconds for these three

    for codec in _CODECS:
        version = getattr(imagecodecs, f"{codec}_version", None)
        if callable(version):
            versions[f"imagecodecs.{codec}"] = str(version())
    return versions


def _openslide_library() -> str:
    """The OpenSlide library's version. openslide-python loads the openslide-bin build when it is
    installed, and openslide-bin is numbered as the OpenSlide it ships plus a build number
    (``4.0.1.2`` ships OpenSlide 4.0.1); any other library is asked directly, which loads it."""
    from importlib import metadata

    try:
        return ".".join(metadata.version("openslide-bin").split(".")[:3])
    except metadata.PackageNotFoundError:
        import openslide

        return str(openslide.__library_version__)
