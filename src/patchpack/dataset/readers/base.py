"""The reader interface every backend offers (see :mod:`patchpack.dataset.readers`), the one
conversion of decoded windows, and what the backends share."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

import numpy as np
from PIL import Image

from patchpack.errors import SourceError


@dataclass(frozen=True)
class Level:
    """One pyramid level: its size in pixels and how many level-0 pixels one of its pixels spans."""

    height: int
    width: int
    downsample: float


class Reader(Protocol):
    """What every backend offers; see the module docstring."""

    path: Path
    backend: str
    levels: tuple[Level, ...]
    mpp: float | None

    def read(self, level: int, y: int, x: int, height: int, width: int) -> np.ndarray: ...

    def close(self) -> None: ...

    def __enter__(self) -> Reader: ...

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


def smallest_level_at_least(levels: tuple[Level, ...], side: int, *, lowest: int = 0) -> int:
    """The smallest level whose longer side is at least ``side`` pixels (``lowest`` if none is)."""
    for index in range(len(levels) - 1, lowest, -1):
        if max(levels[index].height, levels[index].width) >= side:
            return index
    return lowest


def _reason(exc: Exception) -> str:
    """What went wrong, for a message: the error's own words, with its type where they are terse
    (``ZeroDivisionError: division by zero`` says more than ``division by zero``)."""
    if isinstance(exc, OSError | ValueError) or type(exc).__name__ == "TiffFileError":
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


_QUIET = threading.local()


class _WhileQuiet(logging.Filter):
    """Drops tifffile's log records while this thread is inside :func:`_quiet`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_QUIET, "depth", 0)


_QUIET_FILTER = _WhileQuiet()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Around tifffile's opening and decoding: its log records and warnings are not shown.

    tifffile logs (logger ``tifffile``, which has no handler, so Python's last-resort handler
    prints to stderr) and warns about odd tags and sizes. A file patchpack cannot read fails with
    its own one line instead, and one it can read is read as a viewer reads it, so tifffile's
    messages would only come before that line. Records are dropped only in the thread inside the
    call, so other code in the process that uses tifffile keeps its messages.
    """
    logger = logging.getLogger("tifffile")
    if _QUIET_FILTER not in logger.filters:
        logger.addFilter(_QUIET_FILTER)
    _QUIET.depth = getattr(_QUIET, "depth", 0) + 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        _QUIET.depth -= 1


def convert(array: np.ndarray, channels: int, where: str) -> np.ndarray:
    """A decoded window, shape (height, width[, samples]), to uint8 (height, width, channels).

    The same rule as for whole images: 16-bit values drop their low byte, alpha is dropped, one
    channel takes ITU-R 601-2 luma exactly as Pillow's ``convert("L")`` computes it, three channels
    take RGB (gray is replicated).
    """
    if array.dtype.kind == "f":
        raise SourceError(
            f"{where}: floating-point pixels have no fixed scale; convert to 8 or 16 bits"
        )
    if array.dtype != np.uint8:
        array = (np.clip(array.astype(np.int64), 0, 65535) >> 8).astype(np.uint8)
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    if array.shape[2] in (2, 4):  # gray + alpha, RGB + alpha: the stored colour is kept
        array = array[:, :, : array.shape[2] - 1]
    if array.shape[2] not in (1, 3):
        raise SourceError(
            f"{where}: {array.shape[2]} samples per pixel; patchpack reads gray or RGB"
        )
    if channels == array.shape[2]:
        return np.ascontiguousarray(array)
    if channels == 3:
        return np.ascontiguousarray(np.repeat(array, 3, axis=2))
    luma = np.asarray(Image.fromarray(np.ascontiguousarray(array)).convert("L"), dtype=np.uint8)
    return luma[:, :, np.newaxis]


class _Base:
    path: Path
    levels: tuple[Level, ...]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the file."""

    def _check_window(
        self, level: int, y: int, x: int, height: int, width: int, limit: int
    ) -> None:
        if not 0 <= level < len(self.levels):
            raise SourceError(
                f"{self.path}: level {level} does not exist (levels 0 to {len(self.levels) - 1}); "
                f"lower source.level"
            )
        size = self.levels[level]
        if y < 0 or x < 0 or y + height > size.height or x + width > size.width:
            raise SourceError(
                f"{self.path}: window y={y}, x={x}, {height}x{width} lies outside level {level} "
                f"({size.height}x{size.width})"
            )
        if height * width > limit:
            raise SourceError(
                f"{self.path}: reading {height}x{width} pixels at level {level} at once is above "
                f"source.max_megapixels={limit / 1e6:g}; raise it or use a smaller window or level"
            )


class ArrayReader(_Base):
    """A small image already decoded whole (Pillow's path, the one conversion rule): one level."""

    backend = "pillow"

    def __init__(self, path: Path, pixels: np.ndarray) -> None:
        self.path = Path(path)
        self._pixels = pixels
        self.levels = (Level(pixels.shape[0], pixels.shape[1], 1.0),)
        self.mpp: float | None = None

    def pixels(self) -> np.ndarray:
        """The whole image, (height, width, channels) uint8."""
        return self._pixels

    def read(self, level: int, y: int, x: int, height: int, width: int) -> np.ndarray:
        self._check_window(
            level, y, x, height, width, self._pixels.shape[0] * self._pixels.shape[1]
        )
        return self._pixels[y : y + height, x : x + width]


def _positive(value: object) -> float | None:
    """A resolution as a float, or ``None`` where it is malformed, zero, negative or not finite:
    such a value records no resolution (``source.mpp`` then says so in one line)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None
