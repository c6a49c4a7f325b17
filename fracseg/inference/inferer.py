"""Inferer that feeds the generator its guidance channels."""

from __future__ import annotations

from typing import Any

import torch
from monai.inferers import Inferer

from fracseg.networks.generator import GENERATOR_IN_CHANNELS, with_empty_guidance


class GuidedInferer(Inferer):
    """Run ``network`` on an image batch, appending all-zero click guidance when the batch carries only
    the X-ray channel (automatic segmentation). A batch that already has guidance passes unchanged.

    Args:
        in_channels: the generator's input channels (X-ray + guidance).
    """

    def __init__(self, in_channels: int = GENERATOR_IN_CHANNELS) -> None:
        super().__init__()
        self.in_channels = in_channels

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        return network(with_empty_guidance(inputs, self.in_channels), *args, **kwargs)
