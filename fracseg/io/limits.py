"""Shared reader limits."""

from __future__ import annotations

from fracseg.errors import ImageReadError

#: Largest image (in pixels) a reader decodes. The largest FracAtlas image is 2880x2304 (6.6 MP) and flat
#: panel DX detectors reach about 4300x3500 (15 MP); 50 MP leaves room while refusing decompression bombs.
DEFAULT_MAX_PIXELS = 50_000_000


def check_pixel_limit(path: str, height: int, width: int, max_pixels: int) -> None:
    """Raise :class:`ImageReadError` before decoding an image larger than ``max_pixels``."""
    if height <= 0 or width <= 0:
        raise ImageReadError(path, f"invalid image size {width}x{height}")
    if height * width > max_pixels:
        raise ImageReadError(
            path, f"image is {width}x{height} = {height * width:,} pixels, above the limit of {max_pixels:,}"
        )
