"""The one intensity normalisation used by training, evaluation and every inference path."""

from __future__ import annotations

import numpy as np
import torch

#: Percentiles mapped to 0 and 1. Robust to burnt-in labels, collimator edges and 8- vs 16-bit sources.
LOWER_PERCENTILE = 0.5
UPPER_PERCENTILE = 99.5
#: Above this many pixels the percentiles are estimated on a regular sub-grid (deterministic, ~1M samples).
_PERCENTILE_SAMPLES = 1_000_000


def _percentile_sample(image: np.ndarray) -> np.ndarray:
    if image.size <= _PERCENTILE_SAMPLES:
        return image
    step = int(np.ceil(np.sqrt(image.size / _PERCENTILE_SAMPLES)))
    return image[..., ::step, ::step]


def normalize_intensity(
    image: np.ndarray | torch.Tensor,
    lower: float = LOWER_PERCENTILE,
    upper: float = UPPER_PERCENTILE,
) -> np.ndarray | torch.Tensor:
    """Map the ``lower``/``upper`` intensity percentiles of ``image`` to 0/1 and clip to ``[0, 1]``.

    Works on a whole image of any shape (all channels together) and returns the same type (numpy or
    torch, float32). A constant image maps to all zeros.
    """
    as_numpy = np.asarray(image.detach().cpu()) if isinstance(image, torch.Tensor) else np.asarray(image)
    sample = _percentile_sample(as_numpy.astype(np.float32, copy=False))
    lo, hi = np.percentile(sample, [lower, upper])
    scale = float(hi - lo)
    if scale <= 1e-12:
        out_np = np.zeros_like(as_numpy, dtype=np.float32)
    else:
        out_np = np.clip((as_numpy.astype(np.float32) - float(lo)) / scale, 0.0, 1.0)
    if isinstance(image, torch.Tensor):
        out = torch.as_tensor(out_np, device=image.device)
        if hasattr(image, "copy_meta_from"):  # keep MONAI MetaTensor metadata
            out = type(image)(out, meta=image.meta, applied_operations=image.applied_operations)
        return out
    return out_np
