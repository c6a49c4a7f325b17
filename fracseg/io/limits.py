"""Shared reader limits."""

from __future__ import annotations

from fracseg.errors import ImageReadError

#: Largest image (in pixels) a reader decodes. The largest FracAtlas image is 2880x2304 (6.6 MP) and flat
#: panel DX detectors reach about 4300x3500 (15 MP); 50 MP leaves room while refusing decompression bombs.
DEFAULT_MAX_PIXELS = 50_000_000


def pixel_limit_reason(pixels: int, max_pixels: int, size: tuple[int, int] | None = None) -> str:
    """The one wording of "too many pixels" (``size`` is ``(width, height)`` when known)."""
    where = f"{size[0]}x{size[1]} = " if size is not None else ""
    return f"image is {where}{pixels:,} pixels, above the limit of {max_pixels:,} (decompression-bomb guard)"


def check_pixel_limit(path: str, height: int, width: int, max_pixels: int) -> None:
    """Raise :class:`ImageReadError` before decoding an image larger than ``max_pixels``."""
    if height <= 0 or width <= 0:
        raise ImageReadError(path, f"invalid image size {width}x{height}")
    if height * width > max_pixels:
        raise ImageReadError(path, pixel_limit_reason(height * width, max_pixels, (width, height)))
