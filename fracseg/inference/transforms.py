"""Inference-side dictionary transforms used by ``bundle/configs/inference.json``.

They wrap the same decision rule (:mod:`fracseg.inference.decision`) and writers
(:mod:`fracseg.inference.outputs`) as ``fracseg infer``, so the bundle and the CLI give the same masks,
overlays and ``predictions.csv`` columns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from fracseg.inference.batch import file_stem, output_stems, write_predictions
from fracseg.inference.decision import DecisionRule, decide
from fracseg.inference.outputs import write_mask_png, write_overlay_png

logger = logging.getLogger(__name__)

#: Where :class:`FractureDecisiond` leaves the image-level answer in the data dictionary.
DECISION_KEY = "fracture"


def _channels(value: Any) -> np.ndarray:
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    return np.asarray(array, dtype=np.float32)


def _plane(value: Any) -> np.ndarray:
    return _channels(value)[0]


class FractureDecisiond(MapTransform):
    """Probability map ``(1, H, W)`` -> binary mask ``(1, H, W)`` by the bundle's decision rule.

    Also stores ``{"fracture_score", "fracture_present", "regions"}`` under ``data["fracture"]``.

    Args:
        keys: the probability map key.
        rule: the decision rule (``inference.json``: ``"rule": "@decision_rule"``).
        rule_settings: without ``rule``, the rule's fields as keywords
            (:class:`~fracseg.inference.decision.DecisionRule`; configs before bundle 0.10.2 give these).
    """

    def __init__(self, keys: KeysCollection, rule: DecisionRule | None = None, **rule_settings: Any) -> None:
        super().__init__(keys)
        if rule is not None and rule_settings:
            raise ValueError("FractureDecisiond: give either rule or its settings, not both")
        self.rule = rule if rule is not None else DecisionRule(**rule_settings)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            channels = _channels(d[key])
            decision = decide(channels[0], self.rule)
            mask = torch.from_numpy(decision.mask.astype(np.float32))[None]
            d[key] = MetaTensor(mask, meta=d[key].meta) if isinstance(d[key], MetaTensor) else mask
            d[DECISION_KEY] = {
                "fracture_score": decision.fracture_score,
                "fracture_present": decision.fracture_present,
                "regions": len(decision.regions),
            }
        return d


class SaveResultsd(MapTransform):
    """Write ``<stem>_mask.png`` and ``<stem>_overlay.png`` and keep ``predictions.csv`` up to date.

    Args:
        keys: the binary mask key (``(1, H, W)`` at the input's displayed size).
        output_dir: destination folder.
        image_key: the normalised X-ray at the displayed size (for the overlay): ``original``, kept by the
            bundle's pre-processing before the letterbox (the image ``fracseg infer`` draws on).
        overlay: also write the overlay PNG.
        inputs: the files/folders the datalist was made from (the config's ``input``): results are then
            named exactly as ``fracseg infer`` names them (sub-folders kept, colliding names made
            distinct); without it, ``<file stem>`` in ``output_dir``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | Path,
        image_key: str = "image",
        overlay: bool = True,
        inputs: str | Path | list[str] | None = None,
    ) -> None:
        super().__init__(keys)
        self.output_dir = Path(output_dir)
        self.stems = output_stems(inputs, output_dir) if inputs is not None else {}
        self.image_key = image_key
        self.overlay = overlay
        self.rows: list[dict[str, Any]] = []
        self._last = time.perf_counter()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        source = Path(str(d[self.image_key].meta["filename_or_obj"]))
        stem = self.stems.get(str(source), Path(file_stem(source)))
        base = self.output_dir / stem
        for key in self.key_iterator(d):
            mask = _plane(d[key]) > 0
            write_mask_png(base.parent / f"{base.name}_mask.png", mask)
            if self.overlay:
                write_overlay_png(
                    base.parent / f"{base.name}_overlay.png", _plane(d[self.image_key]), mask, normalized=True
                )
            answer = d.get(DECISION_KEY, {})
            now = time.perf_counter()
            self.rows.append(
                {
                    "image": str(source),
                    "fracture_score": round(float(answer.get("fracture_score", float(mask.any()))), 6),
                    "fracture_present": int(answer.get("fracture_present", mask.any())),
                    "mask_pixels": int(mask.sum()),
                    "regions": answer.get("regions", ""),
                    "seconds": round(now - self._last, 4),
                    "error": "",
                    "mask": (stem.parent / f"{stem.name}_mask.png").as_posix(),
                }
            )
            self._last = now
            self._write_table()
            logger.info("wrote %s_mask.png", base)
        return d

    def _write_table(self) -> None:
        # Rewritten after every image (a transform has no end-of-run hook), so a killed run keeps the
        # table of what is done; cheap next to the PNGs for the batch sizes a bundle run sees.
        write_predictions(self.output_dir, self.rows, {})
