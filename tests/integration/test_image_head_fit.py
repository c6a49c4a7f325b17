"""The shipped bundle scores with the mask's top pixels (no image head since 0.11.0); ``fracseg
fit-image-head`` still fits an optional head for the shipped weights, refused for any other weights."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fracseg.cli import main
from fracseg.inference import DEFAULT_WEIGHTS, Predictor
from fracseg.inference.decision import fracture_score
from fracseg.io import file_sha256
from fracseg.networks.image_head import load_image_head

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "data" / "samples"


def test_shipped_bundle_scores_with_the_top_pixels_of_the_mask() -> None:
    predictor = Predictor()
    assert predictor.trained and predictor.settings()["image_head_sha256"] is None
    rule = predictor.rule
    assert rule.image_head_threshold is None and not rule.head_decides
    for path in (SAMPLES / "IMG0004068.jpg", SAMPLES / "IMG0003766_CR.dcm"):
        prediction = predictor.predict(path)
        assert prediction.image_score is None
        score = fracture_score(prediction.probability, rule.score_top_pixels)
        assert prediction.fracture_score == pytest.approx(score)
        assert prediction.fracture_present == (
            score >= rule.score_threshold and bool(prediction.decision.regions)
        )


def test_fit_image_head_cli_on_training_images(tmp_path, shared_data, caplog) -> None:
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
    assert stored.info["keys"] == ["training", "negatives_train"]  # never valid
    assert stored.generator_sha256 == file_sha256(DEFAULT_WEIGHTS)
    assert stored.info["l2"] in stored.info["cv_auroc_by_l2"]
    # a predictor given the head and a threshold for it uses its probability as the score
    rule = replace(Predictor(weights=None).rule, image_head_threshold=0.5)
    headed = Predictor(image_head=out, rule=rule)
    assert headed.settings()["image_head_sha256"] == file_sha256(out)
    prediction = headed.predict(SAMPLES / "IMG0004068.jpg")
    assert prediction.image_score is not None and prediction.fracture_score == pytest.approx(
        prediction.image_score
    )
    # ... and refuses it for other weights, which keep the top-pixel score
    state = torch.load(DEFAULT_WEIGHTS, map_location="cpu", weights_only=True)
    state = state.get("model", state)
    nudged = {k: v + 1e-3 if v.is_floating_point() else v for k, v in state.items()}
    other = tmp_path / "other.pt"
    torch.save({"model": nudged}, other)
    with caplog.at_level(logging.WARNING):
        refused = Predictor(weights=other, image_head=out)
    assert refused.settings()["image_head_sha256"] is None
    assert "not used" in caplog.text
    assert refused.predict(SAMPLES / "IMG0004068.jpg").image_score is None
