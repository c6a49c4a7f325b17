"""Dataset conversion (FracAtlas), datalists and caching."""

from fracseg.data.datalist import load_datalist
from fracseg.data.fracatlas import PrepareReport, ensure_prepared, negative_fold, prepare_fracatlas
from fracseg.data.rasterize import check_polygon, rasterize_polygons

__all__ = [
    "PrepareReport",
    "check_polygon",
    "ensure_prepared",
    "load_datalist",
    "negative_fold",
    "prepare_fracatlas",
    "rasterize_polygons",
]
