"""bf16 inference with the shipped model gives fp32's answers: per-image mask Dice >= 0.99, the same
fracture_present decisions (issue 26's promise), scores within 0.1.

The shipped bundle runs fp32 (0.11.0); ``--precision bf16`` (or ``auto`` on bf16 hardware) runs both
network passes in bf16, and an image whose score lies near the image threshold again in fp32, so that the
decisions stay fp32's.

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
#: The shipped score is the highest pixel probability, which bf16 moves by up to 0.098 on the 481 valid
#: images (bundle 0.11.0 study log); issue 13's 0.01 held for the 256-pixel mean of earlier bundles. The
#: decisions, which the fp32 re-check protects, and the masks are what the promise keeps.
SCORE_TOLERANCE = 0.1


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
    assert summary["probability_difference_max"] > 0  # bf16 really ran
    assert any(r["mask_pixels"][0] > 0 for r in rows)  # and not only on empty masks
