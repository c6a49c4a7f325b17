"""Reading generator weights: the one place that knows the file formats training and export write."""

from __future__ import annotations

from pathlib import Path

import torch


def load_generator_state(path: str | Path) -> dict[str, torch.Tensor]:
    """State dict of a generator weights file, floating tensors in fp32.

    Accepts what the project writes: a released ``model.pt`` (``{"model": state}``, fp32 or fp16, see
    ``scripts/export_model.py``), the key-metric checkpoint of a training run (same layout) and a bare
    state dict. fp16 releases are cast back so that inference and continued training run in fp32 (or
    under bf16 autocast) whatever the file stores. Loaded with ``weights_only=True``: no code runs.
    """
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a generator state dict (found {type(state).__name__})")
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
