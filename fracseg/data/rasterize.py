"""COCO polygon rasterisation.

COCO coordinates are continuous with pixel ``(row r, col c)`` covering ``[c, c+1) x [r, r+1)``; a pixel
belongs to a polygon when its centre ``(c + 0.5, r + 0.5)`` lies inside it (even-odd rule). This matches
``pycocotools`` for all but boundary-touching centres and is exact under rotation by multiples of 90°.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from skimage.draw import polygon as draw_polygon


@dataclass(frozen=True)
class PolygonCheck:
    """How far a polygon reaches outside the image (pixels, 0 when inside)."""

    vertices: int
    max_outside: float

    @property
    def outside(self) -> bool:
        """Whether any vertex lies outside the image rectangle (more than 0.5 px, to ignore rounding)."""
        return self.max_outside > 0.5


def polygon_points(flat: Sequence[float]) -> np.ndarray:
    """COCO flat ``[x0, y0, x1, y1, ...]`` -> ``(N, 2)`` array of ``(x, y)``."""
    points = np.asarray(flat, dtype=np.float64)
    if points.size < 6 or points.size % 2:
        raise ValueError(f"a polygon needs at least 3 (x, y) vertices, got {points.size} numbers")
    return points.reshape(-1, 2)


def check_polygon(flat: Sequence[float], height: int, width: int) -> PolygonCheck:
    """Report how far the polygon's vertices fall outside ``[0, width] x [0, height]``."""
    pts = polygon_points(flat)
    excess = np.concatenate([-pts[:, 0], pts[:, 0] - width, -pts[:, 1], pts[:, 1] - height])
    return PolygonCheck(vertices=len(pts), max_outside=float(max(0.0, excess.max())))


def rasterize_polygons(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Fill COCO polygons into a ``(height, width)`` uint8 mask with value 1 (union of all polygons).

    Vertices outside the image are allowed: the polygon is clipped to the image by the rasteriser.
    """
    mask = np.zeros((height, width), dtype=np.uint8)
    for flat in polygons:
        pts = polygon_points(flat)
        # Pixel centres sit at integer + 0.5 in COCO coordinates; skimage tests integer centres.
        rows, cols = draw_polygon(pts[:, 1] - 0.5, pts[:, 0] - 0.5, shape=(height, width))
        mask[rows, cols] = 1
    return mask
