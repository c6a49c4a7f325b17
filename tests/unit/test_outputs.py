"""Result writers: mask PNG values and the overlay's colours."""

from __future__ import annotations

import numpy as np
from PIL import Image

from fracseg.inference.outputs import OUTLINE_RGB, overlay_rgb, write_mask_png
from fracseg.transforms import normalize_intensity


def test_overlay_of_a_normalised_image_matches_the_raw_one() -> None:
    raw = np.random.default_rng(0).uniform(0, 4000, (50, 60)).astype(np.float32)
    mask = np.zeros((50, 60), bool)
    mask[10:20, 10:25] = True
    a = overlay_rgb(raw, mask)
    b = overlay_rgb(normalize_intensity(raw), mask, normalized=True)
    np.testing.assert_array_equal(a, b)
    assert (a[10, 10] == OUTLINE_RGB).all()  # boundary pixel outlined
    inner = a[15, 17].astype(int)
    assert inner[0] > inner[1] and inner[0] > inner[2]  # filled red
    assert a[40, 50, 0] == a[40, 50, 1] == a[40, 50, 2]  # outside stays grey


def test_mask_png_is_0_or_255(tmp_path) -> None:
    mask = np.zeros((7, 9), bool)
    mask[2:4, 3:6] = True
    write_mask_png(tmp_path / "m.png", mask)
    out = np.asarray(Image.open(tmp_path / "m.png"))
    assert out.dtype == np.uint8 and out.shape == (7, 9)
    assert set(np.unique(out)) == {0, 255} and (out == 255).sum() == 6


def test_overlay_of_a_big_image_needs_no_full_size_float_rgb() -> None:
    import tracemalloc

    side = 2000
    image = np.random.default_rng(0).random((side, side), dtype=np.float32)
    mask = np.zeros((side, side), bool)
    mask[300:900, 200:1500] = True
    tracemalloc.start()
    try:
        out = overlay_rgb(image, mask, normalized=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == (side, side, 3) and out.dtype == np.uint8
    # The uint8 result (12 MB) plus the erosion of the mask and one block of rows; it used to be a
    # float32 RGB copy of the whole image, twice (96 MB).
    assert peak < 3 * out.nbytes, f"peak {peak / 2**20:.0f} MB for a {out.nbytes / 2**20:.0f} MB overlay"
    grey = image * 255.0
    np.testing.assert_array_equal(out[0, 0], np.repeat(grey[0, 0], 3).astype(np.uint8))


def _reference_overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.35) -> np.ndarray:
    """The overlay computed the plain way: a float32 RGB copy of the whole image, blended, then the
    outline from an erosion of the whole mask."""
    from scipy import ndimage

    from fracseg.inference.outputs import FILL_RGB

    rgb = np.repeat((np.clip(image, 0.0, 1.0) * 255.0)[..., None], 3, axis=2)
    rgb[mask] = (1 - alpha) * rgb[mask] + alpha * FILL_RGB
    out = rgb.clip(0, 255).astype(np.uint8)
    width = max(1, round(max(mask.shape) / 400))
    out[mask & ~ndimage.binary_erosion(mask, iterations=width)] = OUTLINE_RGB
    return out


def test_overlay_and_outline_equal_the_whole_image_computation() -> None:
    """The overlay blends only the masked pixels and erodes only the mask's bounding box; both must give
    exactly what blending a float RGB copy and eroding the whole image give, at the borders too."""
    from scipy import ndimage

    from fracseg.inference.outputs import mask_outline

    rng = np.random.default_rng(3)
    for case in range(24):
        h, w = (int(v) for v in rng.integers(1, 600, 2))
        image = rng.uniform(-0.1, 1.1, (h, w)).astype(np.float32)
        mask = rng.random((h, w)) < (0.0, 0.002, 0.3, 1.0)[case % 4]
        if case % 3 == 0:  # blobs, some touching the image border
            mask = ndimage.binary_dilation(mask, iterations=4)
        np.testing.assert_array_equal(
            overlay_rgb(image, mask, normalized=True), _reference_overlay(image, mask)
        )
        for per_pixels in (400, 60, 5):
            width = max(1, round(max(h, w) / per_pixels))
            expected = mask & ~ndimage.binary_erosion(mask, iterations=width)
            np.testing.assert_array_equal(mask_outline(mask, per_pixels), expected)
