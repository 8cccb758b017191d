"""The ``openslide`` backend: vendor whole-slide formats tifffile cannot read."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from patchpack.dataset.readers.base import Level, _Base, _positive, convert
from patchpack.errors import SourceError


class OpenSlideReader(_Base):
    """Vendor whole-slide formats through OpenSlide (openslide-bin ships the library)."""

    backend = "openslide"

    def __init__(self, path: Path, channels: int, limit: int) -> None:
        import openslide

        self.path = Path(path)
        self.channels = channels
        self.limit = limit
        try:
            self._slide = openslide.OpenSlide(str(self.path))
        except (openslide.OpenSlideError, OSError) as exc:
            raise SourceError(
                f"{self.path}: OpenSlide cannot open it ({exc}); check the file"
            ) from exc
        self.levels = tuple(
            Level(height, width, float(downsample))
            for (width, height), downsample in zip(
                self._slide.level_dimensions, self._slide.level_downsamples, strict=True
            )
        )
        for index, size in enumerate(self.levels):
            if size.height <= 0 or size.width <= 0:
                self._slide.close()
                raise SourceError(
                    f"{self.path}: level {index} is empty ({size.width} x {size.height} pixels); "
                    f"re-export the slide"
                )
        self.mpp = _positive(self._slide.properties.get(openslide.PROPERTY_NAME_MPP_X))

    def read(self, level: int, y: int, x: int, height: int, width: int) -> np.ndarray:
        import openslide

        self._check_window(level, y, x, height, width, self.limit)
        downsample = self.levels[level].downsample
        origin = (round(x * downsample), round(y * downsample))  # OpenSlide wants level-0 corners
        try:
            region = self._slide.read_region(origin, level, (width, height))
        except openslide.OpenSlideError as exc:
            raise SourceError(
                f"{self.path}: level {level}: cannot decode the window at y={y}, x={x} ({exc})"
            ) from exc
        return convert(np.asarray(region), self.channels, f"{self.path}: level {level}")

    def close(self) -> None:
        self._slide.close()
