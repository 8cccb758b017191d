"""The environment envelope: the versions that can change a shard's bytes or a patch's pixels, which
the manifest records and a Dask worker must match."""

from __future__ import annotations

import platform
import sys
import zlib


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

    from patchpack.dataset.readers import backend_versions

    return {
        **backend_versions(),
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
