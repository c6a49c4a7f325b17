"""Inference: the predictor and result writers."""

from fracseg.inference.outputs import overlay_rgb, write_mask_png, write_overlay_png
from fracseg.inference.predictor import DEFAULT_BUNDLE, DEFAULT_WEIGHTS, Prediction, Predictor

__all__ = [
    "DEFAULT_BUNDLE",
    "DEFAULT_WEIGHTS",
    "Prediction",
    "Predictor",
    "overlay_rgb",
    "write_mask_png",
    "write_overlay_png",
]
