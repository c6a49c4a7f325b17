"""Networks: the segmentation generator (and, later, the conditional discriminator)."""

from fracseg.networks.generator import GENERATOR_IN_CHANNELS, build_generator, with_empty_guidance

__all__ = ["GENERATOR_IN_CHANNELS", "build_generator", "with_empty_guidance"]
