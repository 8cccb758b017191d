"""Which backend decodes a file (chosen once, from its suffix and header), opening it, and the
versions of the decoders."""

from __future__ import annotations

from pathlib import Path

from patchpack.dataset.readers.base import Reader, _quiet, _reason
from patchpack.dataset.readers.slide import OpenSlideReader
from patchpack.dataset.readers.tiff import TiffReader
from patchpack.errors import SourceError

PILLOW_SUFFIXES = (".png", ".jpg", ".jpeg")
TIFF_SUFFIXES = (".tif", ".tiff", ".svs", ".btf", ".tf8", ".tf2")
OPENSLIDE_SUFFIXES = (".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide")
SUFFIXES = PILLOW_SUFFIXES + TIFF_SUFFIXES + OPENSLIDE_SUFFIXES
BACKENDS = ("pillow", "tifffile", "openslide")
DICOM_SUFFIXES = (".dcm", ".dicom")


def choose_backend(path: Path) -> str:
    """The backend for ``path``, from its suffix and, for TIFF, whether it is tiled or pyramidal."""
    suffix = path.suffix.lower()
    if suffix in PILLOW_SUFFIXES:
        return "pillow"
    if suffix in OPENSLIDE_SUFFIXES:
        return "openslide"
    if suffix in DICOM_SUFFIXES or (suffix not in TIFF_SUFFIXES and _is_dicom(path)):
        raise SourceError(
            f"{path}: DICOM whole-slide images are not supported yet; convert the series to a "
            f"pyramidal TIFF (e.g. `vips tiffsave {path.name} slide.tif --tile --pyramid "
            f"--compression jpeg --bigtiff`, with a libvips built on OpenSlide 4) and use that"
        )
    if suffix not in TIFF_SUFFIXES:
        raise SourceError(
            f"{path}: not an image (supported: {', '.join(SUFFIXES)}); remove it from the source folder"
        )
    import tifffile

    try:
        with _quiet(), tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            series = tif.series[0] if tif.series else None
            pyramid = series is not None and len(series.levels) > 1
            return "tifffile" if page.is_tiled or pyramid or tif.is_bigtiff else "pillow"
    except Exception as exc:  # tifffile parses untrusted bytes: it raises a dozen kinds of error
        raise SourceError(
            f"{path}: not a readable TIFF ({_reason(exc)}); re-export it or remove it"
        ) from exc


def _is_dicom(path: Path) -> bool:
    """Whether ``path`` starts with the DICOM preamble (128 bytes, then ``DICM``): DICOM files
    often have no suffix at all."""
    try:
        with path.open("rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def open_reader(
    path: Path, *, channels: int, max_megapixels: float, backend: str | None = None
) -> Reader:
    """Open ``path`` with a windowed backend (chosen by :func:`choose_backend` unless given).

    Small images (backend ``pillow``) are decoded whole by :func:`patchpack.dataset.sources.load_pixels`
    and wrapped in an :class:`ArrayReader` instead.
    """
    backend = backend or choose_backend(path)
    limit = int(max_megapixels * 1_000_000)
    if backend == "tifffile":
        return TiffReader(path, channels, limit)
    if backend == "openslide":
        return OpenSlideReader(path, channels, limit)
    raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def backend_versions() -> dict[str, str]:
    """Versions of the tile decoders: where pixels can differ between machines (read from the
    packages' metadata, see :func:`patchpack.dataset.envelope.decoder_versions`)."""
    from patchpack.dataset.envelope import decoder_versions

    return decoder_versions()
