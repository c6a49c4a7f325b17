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
