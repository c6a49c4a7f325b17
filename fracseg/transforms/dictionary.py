"""Dictionary transforms for intensity handling."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from monai.config import KeysCollection
from monai.transforms import MapTransform

from fracseg.transforms.intensity import LOWER_PERCENTILE, UPPER_PERCENTILE, normalize_intensity


class NormalizeXrayd(MapTransform):
    """Apply :func:`~fracseg.transforms.intensity.normalize_intensity` to each key."""

    def __init__(
        self,
        keys: KeysCollection,
        lower: float = LOWER_PERCENTILE,
        upper: float = UPPER_PERCENTILE,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.lower = lower
        self.upper = upper

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = normalize_intensity(d[key], self.lower, self.upper)
        return d
