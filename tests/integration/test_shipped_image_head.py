"""The shipped image head on real X-rays, and ``fracseg fit-image-head`` on the shared FracAtlas subset."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from fracseg.cli import main
from fracseg.inference import DEFAULT_BUNDLE, DEFAULT_WEIGHTS, Predictor
from fracseg.inference.decision import fracture_score
from fracseg.io import file_sha256
from fracseg.networks.image_head import load_image_head

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "data" / "samples"
SHIPPED_HEAD = DEFAULT_BUNDLE / "models" / "image_head.pt"


def test_shipped_head_belongs_to_the_shipped_weights_and_gives_the_score() -> None:
    stored = load_image_head(SHIPPED_HEAD)
    assert stored.generator_sha256 == file_sha256(DEFAULT_WEIGHTS)
    assert stored.info["keys"] == ["training", "negatives_train"]  # fitted on train only, never on valid
    with_head = Predictor()
    without = Predictor(image_head=False)
    assert with_head.settings()["image_head_sha256"] == file_sha256(SHIPPED_HEAD)
    assert without.settings()["image_head_sha256"] is None
    for path in (SAMPLES / "IMG0004068.jpg", SAMPLES / "IMG0003766_CR.dcm"):
        headed, plain = with_head.predict(path), without.predict(path)
        assert headed.image_score is not None and 0.0 < headed.fracture_score < 1.0
        assert headed.fracture_score == pytest.approx(headed.image_score)
        # the head adds a channel; the mask channel is the same network output
        np.testing.assert_allclose(headed.probability, plain.probability, atol=1e-6)
        assert plain.image_score is None
        assert plain.fracture_score == pytest.approx(
            fracture_score(plain.probability, without.rule.score_top_pixels)
        )
        # the shipped rule lets the head decide: its yes needs no region
        assert with_head.rule.head_decides
        assert headed.fracture_present == (headed.fracture_score >= with_head.rule.image_head_threshold)
    # the sideways shoulder of the demo: the head says fracture, the mask has no region above the pixel
    # threshold: "suspected, not localised", where bundle 0.8.0's rule (a region needed) said no fracture
    shoulder = with_head.predict(SAMPLES / "IMG0002628.jpg")
    assert shoulder.fracture_present and not shoulder.mask.any()
    assert shoulder.fracture_score >= with_head.rule.image_head_threshold


def test_head_is_refused_for_other_weights(tmp_path, caplog) -> None:
    state = torch.load(DEFAULT_WEIGHTS, map_location="cpu", weights_only=True)
    state = state.get("model", state)
    nudged = {k: v + 1e-3 if v.is_floating_point() else v for k, v in state.items()}
    other = tmp_path / "other.pt"
    torch.save({"model": nudged}, other)
    with caplog.at_level(logging.WARNING):
        predictor = Predictor(weights=other)
    assert predictor.settings()["image_head_sha256"] is None
    assert "not used" in caplog.text
    prediction = predictor.predict(SAMPLES / "IMG0004068.jpg")
    assert prediction.image_score is None
    # the rule falls back to the top-pixel score and its own threshold, calibrated for that score
    rule = predictor.rule
    assert rule.image_threshold(None) == rule.score_threshold != rule.image_head_threshold
    score = fracture_score(prediction.probability, rule.score_top_pixels)
    assert prediction.fracture_score == pytest.approx(score)
    assert prediction.fracture_present == (
        score >= rule.score_threshold and bool(prediction.decision.regions)
    )


def test_fit_image_head_cli_on_training_images(tmp_path, shared_data) -> None:
    out = tmp_path / "head.pt"
    code = main(
        [
            "fit-image-head",
            str(shared_data / "fracatlas"),
            "-o",
            str(out),
            "--prepared",
            str(tmp_path / "prepared"),
            "--limit",
            "5",
            "--quiet",
        ]
    )
    assert code == 0
    stored = load_image_head(out)
    assert stored.info["images"] == 10 and stored.info["fractured"] == 5
    assert stored.generator_sha256 == file_sha256(DEFAULT_WEIGHTS)
    assert stored.head.num_features == load_image_head(SHIPPED_HEAD).head.num_features
    assert stored.info["l2"] in stored.info["cv_auroc_by_l2"]
    # the fitted head is used as the score by a predictor given it
    prediction = Predictor(image_head=out).predict(SAMPLES / "IMG0004068.jpg")
    assert prediction.image_score is not None
