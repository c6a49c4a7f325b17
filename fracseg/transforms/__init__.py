"""Array and dictionary transforms, and the shared pre-processing pipelines."""

from fracseg.transforms.batch_augment import AugmentingPrepareBatch, BatchAugment
from fracseg.transforms.dictionary import NormalizeXrayd
from fracseg.transforms.intensity import LOWER_PERCENTILE, UPPER_PERCENTILE, normalize_intensity
from fracseg.transforms.io import LoadMaskd, LoadXray, LoadXrayd, load_xray_tensor
from fracseg.transforms.pipelines import (
    DEFAULT_SPATIAL_SIZE,
    letterbox_transforms,
    loading_transforms,
    preprocessing,
    preprocessing_transforms,
)

__all__ = [
    "DEFAULT_SPATIAL_SIZE",
    "LOWER_PERCENTILE",
    "UPPER_PERCENTILE",
    "AugmentingPrepareBatch",
    "BatchAugment",
    "LoadMaskd",
    "LoadXray",
    "LoadXrayd",
    "NormalizeXrayd",
    "letterbox_transforms",
    "load_xray_tensor",
    "loading_transforms",
    "normalize_intensity",
    "preprocessing",
    "preprocessing_transforms",
]
