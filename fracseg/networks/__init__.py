"""Networks: the segmentation generator and the conditional discriminator."""

from fracseg.networks.discriminator import (
    DISCRIMINATOR_IN_CHANNELS,
    build_discriminator,
    discriminator_logits,
    soften_real_mask,
)
from fracseg.networks.generator import GENERATOR_IN_CHANNELS, build_generator, with_empty_guidance
from fracseg.networks.weights import load_generator_state

__all__ = [
    "DISCRIMINATOR_IN_CHANNELS",
    "GENERATOR_IN_CHANNELS",
    "build_discriminator",
    "build_generator",
    "discriminator_logits",
    "load_generator_state",
    "soften_real_mask",
    "with_empty_guidance",
]
