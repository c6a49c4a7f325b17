"""``fracture_interactive``: the generator with the annotator's clicks as its guidance channels.

Same pipeline as ``fracture`` (the bundle's), plus :class:`lib.clicks.ClickGuidanced` after the
pre-processing; the guidance joins the X-ray channel only for the forward pass, so the bundle's
``Invertd`` sees the pre-processed image it expects. With at least one foreground click the annotator
has said a fracture is there, so for that request the decision rule becomes ``DecisionRule.guided``:
no image-level gate (``score_threshold``), no minimum region size, and the bundle's ``guided_threshold``
as the pixel threshold.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monailabel.interfaces.tasks.infer_v2 import InferType

from fracseg.inference.transforms import FractureDecisiond
from lib.clicks import GUIDANCE_KEY, ClickGuidanced
from lib.infers.fracture import Fracture

logger = logging.getLogger(__name__)


class FractureInteractive(Fracture):
    """Click-guided fracture segmentation (MONAI Label type ``deepgrow``: 3D Slicer's point tools).

    Request params: ``foreground`` and ``background``, lists of ``[x, y]`` or ``[x, y, 0]`` points
    (``x`` = column, ``y`` = row of the displayed image); other keys Slicer adds (``label``, ``slice``)
    are accepted and ignored. Result: as :class:`lib.infers.fracture.Fracture`, plus ``clicks``.
    """

    def __init__(self, path: str, conf: dict[str, str]) -> None:
        super().__init__(path, conf, type=InferType.DEEPGROW)
        self.description = "Fracture segmentation guided by foreground/background clicks"

    def pre_transforms(self, data: Any = None) -> Sequence[Callable]:
        return [*super().pre_transforms(data), ClickGuidanced(image_key=self.input_key)]

    def post_transforms(self, data: Any = None) -> Sequence[Callable]:
        post = list(super().post_transforms(data))
        if data and data.get("clicks", {}).get("foreground"):
            for index, transform in enumerate(post):
                if isinstance(transform, FractureDecisiond):
                    rule = transform.rule.guided(foreground_clicks=True)
                    post[index] = FractureDecisiond(keys=transform.keys, rule=rule)
        return post

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cuda") -> dict:
        image = data[self.input_key]
        joined = torch.cat([image.as_tensor(), data[GUIDANCE_KEY].to(image.dtype)])
        data[self.input_key] = MetaTensor(
            joined, meta=image.meta, applied_operations=image.applied_operations
        )
        try:
            data = super().run_inferer(data, convert_to_batch=convert_to_batch, device=device)
        finally:
            data[self.input_key] = image
        return data

    def writer(
        self, data: dict[str, Any], extension: str | None = None, dtype: Any = None
    ) -> tuple[str, dict]:
        result, answer = super().writer(data, extension, dtype)
        answer["clicks"] = data.get("clicks", {})
        return result, answer
