"""Folding colour samples to one grey channel (shared by every reader)."""

from __future__ import annotations

import numpy as np

#: ITU-R BT.601 luma weights: exact for grey content stored as three equal channels.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def rgb_to_grey(rgb: np.ndarray) -> np.ndarray:
    """``(..., >=3)`` RGB(A) samples -> ``(...)`` float32 luma (alpha ignored)."""
    return rgb[..., :3].astype(np.float32) @ LUMA
