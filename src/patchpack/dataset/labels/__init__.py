"""Labels from label files: a raster per image (``labels.from: mask``) or a GeoJSON file per image
(``labels.from: annotations``, as QuPath exports them).

Label files sit in ``labels.dir`` at the relative path of their image, with the suffix replaced
(``slides/a.svs`` -> ``<labels.dir>/slides/a.png`` or ``.tif``, or ``a.geojson``). Each is hashed
and recorded in the manifest beside its image, so a partner can tell the labels changed.

Class numbers
-------------
``labels.classes`` names the classes in order: class number (raster value) ``i`` in 1..K is
``classes[i - 1]``, and 0 is unlabelled. A patch's stored label is ``i - 1``, its index in the
manifest's ``class_names``; a mask target stores the raw class numbers (0 = unlabelled).

Rooms
-----
:mod:`~patchpack.dataset.labels.rule`
    The per-patch rule (``centre``, ``majority``) and the :class:`Labeller` interface sampling uses.
:mod:`~patchpack.dataset.labels.raster`
    Label rasters: PNG or TIFF, palette or integer, and the sizes a raster may have.
:mod:`~patchpack.dataset.labels.geojson`
    QuPath GeoJSON: parsing, objectType filtering, geometry repair, the STRtree index, the edge rule.
:mod:`~patchpack.dataset.labels.files`
    Each image's label file: found, hashed and checked, and opened as a :class:`Labeller`.

The GeoJSON room loads shapely, so it is imported where annotations are opened, not here: planning
a dataset labelled by folder or raster never pays for it.
"""

from __future__ import annotations

from patchpack.dataset.labels.files import (
    ANNOTATION_SUFFIXES,
    MASK_SUFFIXES,
    attach_labels,
    open_labels,
)
from patchpack.dataset.labels.raster import RasterLabels, read_raster
from patchpack.dataset.labels.rule import COVERAGE_SIDE, Labeller, majority

__all__ = [
    "ANNOTATION_SUFFIXES",
    "COVERAGE_SIDE",
    "MASK_SUFFIXES",
    "Labeller",
    "RasterLabels",
    "attach_labels",
    "majority",
    "open_labels",
    "read_raster",
]
