"""The generator: a MONAI 2D UNet predicting fracture logits from an X-ray plus two guidance channels.

Input channels: 0 = normalised X-ray, 1 = foreground-click heat map, 2 = background-click heat map
(both all-zero for automatic segmentation). Output: one channel of fracture logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import UNet

#: X-ray + foreground guidance + background guidance.
GENERATOR_IN_CHANNELS = 3


def build_generator(
    in_channels: int = GENERATOR_IN_CHANNELS,
    out_channels: int = 1,
    channels: Sequence[int] = (16, 32, 64, 128, 256),
    strides: Sequence[int] = (2, 2, 2, 2),
    num_res_units: int = 2,
    dropout: float = 0.0,
) -> torch.nn.Module:
    """A MONAI ``UNet`` (2D) with the fracseg channel contract."""
    return UNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(channels),
        strides=tuple(strides),
        num_res_units=num_res_units,
        dropout=dropout,
    )


def with_empty_guidance(image: torch.Tensor, in_channels: int = GENERATOR_IN_CHANNELS) -> torch.Tensor:
    """Append all-zero guidance channels to a ``(B, 1, H, W)`` image batch (automatic mode)."""
    extra = in_channels - image.shape[1]
    if extra <= 0:
        return image
    zeros = image.new_zeros((image.shape[0], extra, *image.shape[2:]))
    return torch.cat([image, zeros], dim=1)
