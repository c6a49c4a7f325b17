"""``fracture``: automatic segmentation with the bundle's own inference definition.

Thin over ``bundle/configs/inference.json``: MONAI Label's ``BundleInferTask`` takes the bundle's
``preprocessing`` (the fracseg reader, normalisation, letterbox), ``inferer`` (zero click guidance),
network and ``postprocessing`` (sigmoid, letterbox inverted to the displayed size, the shared decision
rule); only the bundle's file writer (``SaveResultsd``) is dropped, and the result is written here in
the image's label container (:func:`lib.uploads.write_mask`). The mask therefore equals the one
``fracseg infer`` writes for the same file.
"""

from __future__ import annotations

import logging
import tempfile
from typing import Any

import numpy as np
from monai.data import MetaTensor
from monai.transforms import SaveImaged
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.bundle import BundleInferTask

from fracseg.inference.transforms import DECISION_KEY, SaveResultsd
from lib.uploads import LABEL_SUFFIXES, label_suffix_for, suffix_of, write_mask

logger = logging.getLogger(__name__)


class Fracture(BundleInferTask):
    """Automatic fracture segmentation of one 2D X-ray.

    Result: a mask at the image's displayed size with fracture = 1 (``.png`` for PNG/JPEG images,
    ``.nii.gz`` on the image's grid for NIfTI-stored ones; the request's ``result_extension`` ``.png`` or
    ``.nii.gz`` overrides), and JSON ``fracture_score``, ``fracture_present``, ``regions``,
    ``mask_pixels``.

    Args:
        path: the bundle folder (the app's own copy).
        conf: the app's ``--conf`` settings.
        kwargs: passed to ``BundleInferTask`` (``type`` for the interactive variant).
    """

    def __init__(self, path: str, conf: dict[str, str], **kwargs: Any) -> None:
        kwargs.setdefault("type", InferType.SEGMENTATION)
        super().__init__(
            path,
            conf,
            post_filter=[SaveImaged, SaveResultsd],
            add_post_restore=False,  # the bundle's Invertd already returns the displayed size
            load_strict=True,
            **kwargs,
        )
        self._config.update({"result_extension": ["default", ".png", ".nii.gz"]})

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cuda") -> dict:
        """The network on the plain tensor: MONAI's ``MetaTensor`` bookkeeping on every operation of the
        forward pass costs about 7x the convolutions on CPU (0.75 s against 0.10 s for a 512x512 input).
        The prediction gets the image's metadata back for the bundle's ``Invertd``."""
        image = data[self.input_key]
        if not isinstance(image, MetaTensor):
            return super().run_inferer(data, convert_to_batch=convert_to_batch, device=device)
        data[self.input_key] = image.as_tensor()
        try:
            data = super().run_inferer(data, convert_to_batch=convert_to_batch, device=device)
        finally:
            data[self.input_key] = image
        pred = data[self.output_label_key]
        data[self.output_label_key] = MetaTensor(
            pred.as_tensor() if isinstance(pred, MetaTensor) else pred,
            meta=image.meta,
            applied_operations=image.applied_operations,
        )
        return data

    def writer(
        self, data: dict[str, Any], extension: str | None = None, dtype: Any = None
    ) -> tuple[str, dict]:
        pred = data[self.output_label_key]
        mask = np.asarray(pred.detach().cpu().numpy() if hasattr(pred, "detach") else pred)[0] > 0
        image_path = str(data["image_path"])
        wanted = data.get("result_extension")
        wanted = wanted[0] if isinstance(wanted, list) else wanted
        suffix = suffix_of(str(wanted or ""), LABEL_SUFFIXES) or label_suffix_for(image_path)
        with tempfile.NamedTemporaryFile(suffix=suffix, delete=False) as fh:
            result = fh.name
        write_mask(mask, image_path, result)
        answer = dict(data.get(DECISION_KEY, {}))
        answer["mask_pixels"] = int(mask.sum())
        answer["height"], answer["width"] = (int(v) for v in mask.shape)
        return result, answer
