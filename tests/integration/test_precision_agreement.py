"""bf16 inference with the shipped model gives fp32's answers: per-image mask Dice >= 0.99, the same
fracture_present decisions, scores within 0.01 (issue 13's promise).

Since bundle 0.10.1 (``fp32_own_view``) bf16 runs the image head's four extra views, and the image's own
view, which gives the mask, runs in fp32: on all 205 valid images every mask is identical and the largest
score difference is 0.0078 (``scripts/precision_agreement.py``; bundle/docs/studies/).
0.10.0, all in bf16, left 18 small masks below Dice 0.99 and one score 0.014 apart.

A few real images here (FracAtlas fractured and non-fractured JPEGs, the sample CR DICOM); the whole valid
split is measured by ``scripts/precision_agreement.py`` (figures in bundle/docs/studies/).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fracseg.evaluation.agreement import compare_predictors, summarize_agreement
from fracseg.inference import Predictor

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
#: the promise of issue 13
SCORE_TOLERANCE = 0.01


def test_bf16_inference_agrees_with_fp32_on_real_images(shared_data: Path) -> None:
    atlas = shared_data / "fracatlas" / "images"
    images = [
        *sorted((atlas / "Fractured").glob("*.jpg"))[:3],
        *sorted((atlas / "Non_fractured").glob("*.jpg"))[:2],
        REPO / "data" / "samples" / "IMG0003766_CR.dcm",
    ]
    fp32 = Predictor(precision="fp32")
    bf16 = Predictor(precision="bf16")
    assert (fp32.precision.name, bf16.precision.name) == ("fp32", "bf16") and fp32.trained
    assert bf16.settings()["fp32_own_view"] and bf16.settings()["head_views"]
    rows = compare_predictors(images, fp32, bf16)
    summary = summarize_agreement(rows)
    assert summary["mask_dice_min"] >= 0.99, rows
    assert summary["decisions_differ"] == 0, rows
    assert summary["score_difference_max"] <= SCORE_TOLERANCE, rows
    assert summary["score_difference_max"] > 0  # the head's extra views really ran in bf16
    assert any(r["mask_pixels"][0] > 0 for r in rows)  # and not only on empty masks
