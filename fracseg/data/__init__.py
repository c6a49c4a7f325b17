"""Dataset conversion (FracAtlas), datalists and caching."""

from fracseg.data.datalist import cv_items, load_datalist, negative_share_weights
from fracseg.data.fracatlas import (
    CV_FOLDS,
    PrepareReport,
    cv_fold,
    cv_fold_keys,
    ensure_prepared,
    negative_fold,
    prepare_fracatlas,
)
from fracseg.data.rasterize import check_polygon, rasterize_polygons

__all__ = [
    "CV_FOLDS",
    "PrepareReport",
    "check_polygon",
    "cv_fold",
    "cv_fold_keys",
    "cv_items",
    "ensure_prepared",
    "load_datalist",
    "negative_fold",
    "negative_share_weights",
    "prepare_fracatlas",
    "rasterize_polygons",
]
