"""A tiny generator and letterboxed random images for the inferer tests."""

from __future__ import annotations

import numpy as np
import torch
from monai.transforms import Compose

from fracseg.networks import build_generator
from fracseg.transforms import letterbox_transforms

CHANNELS = (4, 8, 16)


def tiny_generator(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_generator(channels=CHANNELS, strides=(2, 2), num_res_units=1).eval()


def letterboxed(shape: tuple[int, int], side: int = 64, seed: int = 0) -> torch.Tensor:
    """A random image of the displayed ``shape`` through the project's letterbox (zero padding)."""
    rng = np.random.default_rng(seed)
    image = {"image": torch.as_tensor(rng.uniform(0.05, 1.0, (1, *shape)), dtype=torch.float32)}
    return Compose(letterbox_transforms(spatial_size=side))(image)["image"].as_tensor()[None]
