"""The image-level head: its features, its fit, how it rides on the generator and reaches the decision."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
import torch

from fracseg.engines.image_head_fit import choose_l2, fit_logistic, stratified_folds
from fracseg.inference.decision import DecisionRule, decide, image_score_of
from fracseg.inference.inferer import GuidedInferer, mirror_averaged
from fracseg.inference.transforms import DECISION_KEY, FractureDecisiond
from fracseg.networks.image_head import (
    FeatureTap,
    attach_image_head,
    attach_image_head_file,
    content_cells,
    has_image_head,
    load_image_head,
    save_image_head,
)
from fracseg.precision import Precision
from tests.helpers.image_head import DEEPEST, letterboxed, random_head, tiny_generator


def test_content_cells_follow_the_letterbox_geometry() -> None:
    """A portrait 454x373 image in a 512 letterbox covers the middle columns; at 32 cells per side each
    side pad is 44 px = 2.75 cells, so columns 3..28 are image (more than half covered), 0-2 and 29-31 not."""
    x = letterboxed((454, 373), side=512)
    cells = content_cells(x, 32)[0]
    assert cells[:, 3:29].all() and not cells[:, :3].any() and not cells[:, 29:].any()
    assert cells.all(dim=0).sum() == 26  # as studies/image_head_probe.py's content_mask found (26 x 32)
    square = content_cells(letterboxed((300, 300), side=64), 4)
    assert square.all()


def test_pooled_features_stay_finite_for_an_image_thinner_than_a_cell() -> None:
    """A 400x6 strip letterboxed to 64 px is one pixel wide: no cell is half image, so the pooling falls
    back to the whole grid instead of returning -inf maxima."""
    network = tiny_generator()
    x = torch.cat([letterboxed((400, 6), seed=6), torch.zeros(1, 2, 64, 64)], dim=1)
    assert not content_cells(x, 16).any()
    tap = FeatureTap(network)
    with torch.no_grad():
        network(x)
    tap.remove()
    assert torch.isfinite(tap.collected[0]).all()


def test_fit_logistic_matches_scikit_learn() -> None:
    """Same objective as sklearn's LogisticRegression (mean log-loss + l2 |w|^2 <=> C = 1 / (2 l2 n)) on
    standardised features: the same decision function to numerical precision."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6)) * [1, 2, 3, 4, 5, 6] + [0, 1, 2, 3, 4, 5]
    y = (x[:, 0] - 0.3 * x[:, 2] + rng.normal(size=120) > 0).astype(int)
    l2 = 0.05
    head = fit_logistic(x, y, l2)
    scaler = StandardScaler().fit(x)
    reference = LogisticRegression(C=1.0 / (2 * l2 * len(y)), tol=1e-10, max_iter=10_000).fit(
        scaler.transform(x), y
    )
    with torch.no_grad():
        ours = head(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(ours, reference.decision_function(scaler.transform(x)), atol=1e-4)


def test_folds_are_stratified_and_l2_comes_from_the_grid() -> None:
    y = np.array([1] * 10 + [0] * 25)
    fold = stratified_folds(y, 5, seed=0)
    for f in range(5):
        assert (y[fold == f] == 1).sum() == 2 and (y[fold == f] == 0).sum() == 5
    rng = np.random.default_rng(1)
    x = rng.normal(size=(35, 3)) + y[:, None] * [4.0, 0.0, 0.0]
    best, results = choose_l2(x, y, grid=(0.01, 1.0), folds=5)
    assert best in (0.01, 1.0) and set(results) == {0.01, 1.0}
    assert results[best] > 0.9  # the first feature separates the classes


def test_attached_head_adds_a_constant_channel_with_the_heads_logit() -> None:
    network = tiny_generator()
    x = torch.cat([letterboxed((60, 40), seed=2), letterboxed((40, 64), seed=3)])
    x = torch.cat([x, torch.zeros(2, 2, 64, 64)], dim=1)
    with torch.no_grad():
        plain = network(x)
    collector = FeatureTap(network)
    with torch.no_grad():
        network(x)
    collector.remove()
    features = collector.collected[0]
    assert features.shape == (2, 2 * DEEPEST + 2)
    head = random_head(features.shape[1])
    attach_image_head(network, head)
    assert has_image_head(network)
    with torch.no_grad():
        out = network(x)
    assert out.shape == (2, 2, 64, 64)
    torch.testing.assert_close(out[:, :1], plain)  # the mask channel is untouched
    expected = head(features)
    for b in range(2):
        assert torch.all(out[b, 1] == out[b, 1, 0, 0])
        assert float(out[b, 1, 0, 0]) == pytest.approx(float(expected[b]), abs=1e-5)
    with pytest.raises(ValueError):
        attach_image_head(network, head)


def test_head_channel_survives_precision_split_and_mirroring() -> None:
    """bf16 runs the UNet's input block and the rest separately (Precision.forward); the hooks sit on
    modules both paths call, so the head's channel is there, and mirroring averages it like the mask."""
    network = tiny_generator()
    x = torch.cat([letterboxed((64, 48), seed=4), torch.zeros(1, 2, 64, 64)], dim=1)
    collector = FeatureTap(network)
    with torch.no_grad():
        network(x)
    collector.remove()
    attach_image_head(network, random_head(collector.collected[0].shape[1]))
    bf16 = Precision("bf16", "cpu", requested="bf16")
    with torch.no_grad():
        fp32_out = network(x)
        bf16_out = bf16.forward(network, x)
        mirrored = mirror_averaged(lambda t: network(t), x)
    assert bf16_out.shape == fp32_out.shape == (1, 2, 64, 64)
    assert bf16_out.dtype == torch.float32
    assert abs(float(torch.sigmoid(bf16_out[0, 1, 0, 0]) - torch.sigmoid(fp32_out[0, 1, 0, 0]))) < 0.02
    assert torch.all(mirrored[0, 1] == mirrored[0, 1, 0, 0])


def test_head_file_round_trip_and_refusal_for_other_weights(tmp_path, caplog) -> None:
    head = random_head(2 * DEEPEST + 2)
    path = tmp_path / "image_head.pt"
    save_image_head(path, head, "a" * 64, {"images": 3})
    stored = load_image_head(path)
    assert stored.generator_sha256 == "a" * 64 and stored.info == {"images": 3}
    torch.testing.assert_close(stored.head.weight, head.weight)
    other = tiny_generator()
    with caplog.at_level(logging.WARNING):
        assert not attach_image_head_file(other, path, "b" * 64)
    assert "not used" in caplog.text and not has_image_head(other)
    assert attach_image_head_file(other, path, "a" * 64) and has_image_head(other)
    assert not attach_image_head_file(tiny_generator(), tmp_path / "missing.pt", "a" * 64)
    torch.save({"format": 99}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="format"):
        load_image_head(tmp_path / "bad.pt")


def test_inferer_attaches_the_head_and_rechecks_on_its_score(tmp_path) -> None:
    network = tiny_generator()
    x = letterboxed((64, 50), seed=5)
    collector = FeatureTap(network)
    with torch.no_grad():
        network(torch.cat([x, torch.zeros(1, 2, 64, 64)], dim=1))
    collector.remove()
    path = tmp_path / "image_head.pt"
    save_image_head(path, random_head(collector.collected[0].shape[1]), "untrained", {})
    inferer = GuidedInferer(image_head=path, mirror=True)
    with torch.no_grad():
        logits = inferer(x, network)
    assert logits.shape == (1, 2, 64, 64) and has_image_head(network)
    score = float(torch.sigmoid(logits[0, 1, 0, 0]))
    bf16 = GuidedInferer(
        precision="bf16", mirror=True, rule=DecisionRule(image_head_threshold=score), fp32_margin=0.01
    )
    with torch.no_grad():
        bf16(x, network)
    assert bf16.rechecked == 1  # the head's score sits on its threshold: redone in fp32
    far = GuidedInferer(
        precision="bf16", mirror=True, rule=DecisionRule(image_head_threshold=score + 0.3), fp32_margin=0.01
    )
    with torch.no_grad():
        far(x, network)
    assert far.rechecked == 0


def test_decision_uses_the_image_score_against_its_own_threshold() -> None:
    prob = np.zeros((20, 20), dtype=np.float32)
    prob[5:10, 5:10] = 0.9
    rule = DecisionRule(threshold=0.5, score_threshold=0.5, score_top_pixels=1, image_head_threshold=0.4)
    assert decide(prob, rule).fracture_present  # no head: the top pixel, 0.9, passes score_threshold
    assert not decide(prob, rule, image_score=0.3).fracture_present
    kept = decide(prob, rule, image_score=0.45)  # under score_threshold, over the head's threshold
    assert kept.fracture_present and kept.fracture_score == pytest.approx(0.45) and kept.mask.sum() == 25
    assert rule.image_threshold(0.45) == 0.4 and rule.image_threshold(None) == 0.5
    # a rule without a threshold for the head ignores its score (weights it was not calibrated for)
    plain = DecisionRule(threshold=0.5, score_threshold=0.5, score_top_pixels=1)
    assert decide(prob, plain, image_score=0.3).fracture_score == pytest.approx(0.9)
    # a foreground click turns both gates off
    assert rule.guided(True).image_head_threshold == 0.0 and plain.guided(True).image_head_threshold is None
    channels = np.stack([prob, np.full_like(prob, 0.3)])
    assert image_score_of(channels) == pytest.approx(0.3) and image_score_of(channels[:1]) is None
    out = FractureDecisiond(keys="pred", **rule.to_dict())({"pred": torch.from_numpy(channels)})
    assert out["pred"].shape == (1, 20, 20) and out["pred"].sum() == 0
    assert out[DECISION_KEY]["fracture_score"] == pytest.approx(0.3)


def test_heads_yes_stands_without_a_region_when_the_rule_lets_it_decide() -> None:
    prob = np.zeros((30, 30), dtype=np.float32)
    prob[5:10, 5:10] = 0.10  # under the pixel threshold: no region
    prob[20:22, 20:22] = 0.9  # over it, but under the minimum region size
    rule = DecisionRule(
        threshold=0.5,
        score_threshold=0.1,
        score_top_pixels=1,
        min_region_pixels=5,
        image_head_threshold=0.4,
        head_decides=True,
    )
    yes = decide(prob, rule, image_score=0.6)
    assert yes.fracture_present and not yes.mask.any() and yes.regions == []  # suspected, not localised
    assert yes.fracture_score == pytest.approx(0.6)
    assert not decide(prob, rule, image_score=0.3).fracture_present  # the head says no
    # a region that survives is drawn as before
    bright = prob.copy()
    bright[20:23, 20:23] = 0.9
    kept = decide(bright, rule, image_score=0.6)
    assert kept.fracture_present and kept.mask.sum() == 9
    # without the setting, or without the head (top pixel 0.9 passes 0.1), no region means no fracture
    assert not decide(prob, replace(rule, head_decides=False), image_score=0.6).fracture_present
    assert not decide(prob, rule).fracture_present
    # a click turns it off with the gates; the bundle keys and transform carry it
    assert rule.guided(True).head_decides is False
    assert DecisionRule.from_config(rule.to_dict()) == rule
    transform = FractureDecisiond(keys="pred", **rule.to_dict())
    assert transform.rule == rule
    out = transform({"pred": torch.from_numpy(np.stack([prob, np.full_like(prob, 0.6)]))})
    assert out["pred"].sum() == 0 and out[DECISION_KEY]["fracture_present"] is True
    assert out[DECISION_KEY]["regions"] == 0


def test_calibrated_head_threshold_counts_images_without_a_region_when_the_head_decides() -> None:
    from fracseg.evaluation.evaluate import CALIBRATION_THRESHOLDS, Case, calibrate

    def case(fractured: bool, value: float, head: float) -> Case:
        truth = np.zeros((64, 64), dtype=bool)
        truth[20:40, 20:40] = fractured
        probability = np.zeros((64, 64), dtype=np.float32)
        probability[20:40, 20:40] = value
        return Case(row={"fractured": int(fractured)}, probability=probability, truth=truth, image_score=head)

    faint = CALIBRATION_THRESHOLDS[0] / 2  # no region at any pixel threshold tried
    heads = np.linspace(0.5, 0.9, 20)
    cases = [case(True, 0.9 if i < 16 else faint, float(h)) for i, h in enumerate(heads)]
    cases += [case(False, 0.3, float(h)) for h in np.linspace(0.05, 0.6, 20)]
    needs_region = calibrate(cases, target_sensitivity=0.85)
    alone = calibrate(cases, target_sensitivity=0.85, head_decides=True)
    # needing a region, the faint images (the 4 highest head scores) can never be positive: the gate falls
    # to the lowest region-holding fractured score; deciding alone, 17 of 20 by the head's score
    assert needs_region["image_head_threshold"] == pytest.approx(heads[0])
    assert alone["image_head_threshold"] == pytest.approx(heads[3])
    assert alone["head_decides"] is True and alone["score_threshold"] == needs_region["score_threshold"]
