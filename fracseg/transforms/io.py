"""MONAI dictionary transforms around the fracseg readers.

``LoadXrayd`` is the only way pipelines (bundle configs, MONAI Label app, CLI) load images, so every
path sees the same EXIF, DICOM and grey-folding rules. Images become channel-first ``MetaTensor``s of
shape ``(1, H, W)``; the reader's :class:`~fracseg.io.meta.XrayMeta` fields are in ``.meta``.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from fracseg.io import DEFAULT_MAX_PIXELS, read_xray


def load_xray_tensor(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> MetaTensor:
    """Read ``path`` with :func:`fracseg.io.read_xray` into a ``(1, H, W)`` float32 ``MetaTensor``."""
    image = read_xray(path, max_pixels=max_pixels)
    meta: dict[str, Any] = image.meta.to_collatable_dict()
    meta["filename_or_obj"] = os.fspath(path)
    meta["spatial_shape"] = np.asarray(image.array.shape)
    meta["original_channel_dim"] = "no_channel"
    return MetaTensor(torch.from_numpy(image.array[None]), meta=meta)


class LoadXray(Transform):
    """Array transform: path -> ``(1, H, W)`` float32 ``MetaTensor`` (see :func:`load_xray_tensor`)."""

    def __init__(self, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.max_pixels = max_pixels

    def __call__(self, path: str | os.PathLike[str]) -> MetaTensor:
        return load_xray_tensor(path, self.max_pixels)


class LoadXrayd(MapTransform):
    """Dictionary version of :class:`LoadXray`.

    Args:
        keys: keys holding file paths (typically ``"image"``).
        max_pixels: decompression-bomb guard passed to the reader.
        allow_missing_keys: skip absent keys instead of raising.
    """

    def __init__(
        self, keys: KeysCollection, max_pixels: int = DEFAULT_MAX_PIXELS, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadXray(max_pixels)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d


class LoadMaskd(MapTransform):
    """Load binary masks (PNG written by ``fracseg prepare``: 0 background, >0 fracture) as ``(1, H, W)``
    float32 ``{0, 1}`` ``MetaTensor``s through the same reader as the images."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadXray()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            mask = self.loader(d[key])
            d[key] = MetaTensor((mask > 0).to(torch.float32), meta=mask.meta)
        return d
