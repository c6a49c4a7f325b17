"""Polygon rasterisation: pixel-centre convention, clipping, rotation consistency."""

from __future__ import annotations

import numpy as np
import pytest

from fracseg.data.rasterize import check_polygon, polygon_points, rasterize_polygons


def _rect(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def test_axis_aligned_rectangle_covers_exactly_the_pixels_whose_centres_are_inside() -> None:
    mask = rasterize_polygons([_rect(10, 5, 20, 15)], height=30, width=40)
    expected = np.zeros((30, 40), np.uint8)
    expected[5:15, 10:20] = 1
    np.testing.assert_array_equal(mask, expected)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}


def test_half_pixel_shift_changes_coverage_at_the_centre_boundary() -> None:
    # A rectangle from x=10.6 excludes column 10 (centre 10.5) and includes column 19 (centre 19.5 < 20.6).
    mask = rasterize_polygons([_rect(10.6, 5, 20.6, 15)], height=30, width=40)
    cols = np.flatnonzero(mask.any(axis=0))
    assert cols.min() == 11 and cols.max() == 20


def test_triangle_area_matches_polygon_area() -> None:
    tri = [50, 10, 190, 30, 90, 170]
    mask = rasterize_polygons([tri], 200, 200)
    pts = polygon_points(tri)
    x, y = pts[:, 0], pts[:, 1]
    area = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
    assert abs(mask.sum() - area) / area < 0.02


def test_union_of_overlapping_polygons_and_label_value_one() -> None:
    mask = rasterize_polygons([_rect(0, 0, 10, 10), _rect(5, 5, 15, 15)], 20, 20)
    assert mask.max() == 1
    assert mask.sum() == 100 + 100 - 25


def test_polygon_outside_the_image_is_clipped_and_reported() -> None:
    poly = _rect(-5, -5, 8, 8)
    mask = rasterize_polygons([poly], 20, 20)
    assert mask.sum() == 64  # columns/rows 0..7
    check = check_polygon(poly, 20, 20)
    assert check.outside and check.max_outside == pytest.approx(5.0)
    assert not check_polygon(_rect(1, 1, 19.9, 20), 20, 20).outside


def test_rotating_polygon_coordinates_rotates_the_mask() -> None:
    rng = np.random.default_rng(0)
    h, w = 37, 53
    poly = rng.uniform([0, 0], [w, h], size=(6, 2))
    mask = rasterize_polygons([poly.ravel().tolist()], h, w)
    # Rotate the frame by 90° counter-clockwise: (x, y) -> (y, w - x); new size (w, h).
    rotated = np.stack([poly[:, 1], w - poly[:, 0]], axis=1)
    mask_rot = rasterize_polygons([rotated.ravel().tolist()], w, h)
    np.testing.assert_array_equal(mask_rot, np.rot90(mask))


def test_degenerate_polygon_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        rasterize_polygons([[1, 2, 3, 4]], 10, 10)
