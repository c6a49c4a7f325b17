"""Agreement of two predictors on the same images: does bf16 inference give fp32's answers?

Each predictor reads and pre-processes the image itself (the letterbox is inverted by the transforms
that applied it), so both see the same input; the comparison is made on what
a user gets: the mask at the displayed size (Dice between the two masks, 1.0 when both are empty), the
``fracture_present`` decision and the ``fracture_score``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from fracseg.evaluation.metrics import pixel_metrics
from fracseg.inference.predictor import Predictor


def compare_predictors(
    paths: Iterable[str | os.PathLike[str]], reference: Predictor, candidate: Predictor
) -> list[dict[str, Any]]:
    """One row per image: mask Dice between the two predictors, both decisions and both scores."""
    rows = []
    for path in paths:
        ref = reference.predict(path)
        cand = candidate.predict(path)
        rows.append(
            {
                "image": os.fspath(path),
                "mask_dice": pixel_metrics(cand.mask, ref.mask)["dice"],
                "mask_pixels": (int(ref.mask.sum()), int(cand.mask.sum())),
                "present": (ref.fracture_present, cand.fracture_present),
                "score": (ref.fracture_score, cand.fracture_score),
                "max_probability_difference": float(np.abs(ref.probability - cand.probability).max()),
            }
        )
    return rows


def summarize_agreement(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Worst and mean figures of :func:`compare_predictors` rows."""
    dice = np.array([r["mask_dice"] for r in rows])
    score_diff = np.array([abs(r["score"][0] - r["score"][1]) for r in rows])
    return {
        "images": len(rows),
        "mask_dice_min": float(dice.min()),
        "mask_dice_mean": float(dice.mean()),
        "decisions_differ": int(sum(r["present"][0] != r["present"][1] for r in rows)),
        "score_difference_max": float(score_diff.max()),
        "probability_difference_max": float(max(r["max_probability_difference"] for r in rows)),
    }
