"""Folding colour samples to one grey channel (shared by every reader)."""

from __future__ import annotations

import numpy as np

#: ITU-R BT.601 luma weights: exact for grey content stored as three equal channels.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


#: Rows converted at a time: a float32 copy of a whole 6000x6000 RGB image would take 432 MB.
CHUNK_ROWS = 256


def rgb_to_grey(rgb: np.ndarray) -> np.ndarray:
    """``(..., >=3)`` RGB(A) samples -> ``(...)`` float32 luma (alpha ignored).

    Converted in blocks of :data:`CHUNK_ROWS` along the first axis (same values as converting at once),
    so the float32 copy never holds more than one block.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim < 2:
        return rgb[:3].astype(np.float32) @ LUMA
    out = np.empty(rgb.shape[:-1], dtype=np.float32)
    for start in range(0, rgb.shape[0], CHUNK_ROWS):
        block = slice(start, start + CHUNK_ROWS)
        out[block] = rgb[block, ..., :3].astype(np.float32) @ LUMA
    return out


def channels_agree(rgb: np.ndarray, atol: int = 16) -> bool:
    """Whether R, G and B differ by at most ``atol`` everywhere (grey content stored as colour)."""
    rgb = np.asarray(rgb)
    for start in range(0, rgb.shape[0], CHUNK_ROWS):
        block = rgb[start : start + CHUNK_ROWS, ..., :3].astype(np.float32)
        if (np.abs(block[..., 0] - block[..., 1]) > atol + 1e-5 * np.abs(block[..., 1])).any() or (
            np.abs(block[..., 1] - block[..., 2]) > atol + 1e-5 * np.abs(block[..., 2])
        ).any():
            return False
    return True
