"""Inference-side dictionary transforms used by ``bundle/configs/inference.json``."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform

from fracseg.inference.batch import file_stem
from fracseg.inference.outputs import write_mask_png

logger = logging.getLogger(__name__)


class SaveMaskd(MapTransform):
    """Write each key as ``<output_dir>/<stem>_<postfix>.png`` (uint8, 0 background / 255 fracture).

    The stem comes from the image's ``filename_or_obj`` metadata. Writes are atomic.

    Args:
        keys: keys holding ``(1, H, W)`` binary masks at the input's displayed size.
        output_dir: destination folder.
        postfix: file-name suffix after the stem.
        meta_key: key whose ``.meta["filename_or_obj"]`` names the source image.
    """

    def __init__(
        self, keys: KeysCollection, output_dir: str | Path, postfix: str = "mask", meta_key: str = "image"
    ) -> None:
        super().__init__(keys)
        self.output_dir = Path(output_dir)
        self.postfix = postfix
        self.meta_key = meta_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        source = Path(str(d[self.meta_key].meta["filename_or_obj"]))
        stem = file_stem(source)
        for key in self.key_iterator(d):
            mask = np.asarray(d[key].detach().cpu() if hasattr(d[key], "detach") else d[key])[0]
            target = self.output_dir / f"{stem}_{self.postfix}.png"
            write_mask_png(target, mask > 0)
            logger.info("wrote %s", target)
        return d
