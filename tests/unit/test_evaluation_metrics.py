"""Evaluation metrics and the decision rule on hand-made arrays with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fracseg.errors import DatasetError
from fracseg.evaluation.metrics import (
    average_precision,
    bootstrap_ci,
    hd95,
    match_instances,
    pixel_metrics,
    roc_auc,
    sensitivity_specificity,
    specificity_at_sensitivity,
    summarize,
    youden_threshold,
)
from fracseg.inference.decision import DecisionRule, decide, find_regions, fracture_score


def _box(shape, r0, r1, c0, c1):
    m = np.zeros(shape, dtype=bool)
    m[r0:r1, c0:c1] = True
    return m


def test_pixel_metrics_known_values() -> None:
    truth = _box((10, 10), 0, 4, 0, 4)  # 16 px
    pred = _box((10, 10), 2, 6, 0, 4)  # 16 px, 8 shared
    m = pixel_metrics(pred, truth)
    assert m["dice"] == pytest.approx(0.5)
    assert m["iou"] == pytest.approx(8 / 24)
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(0.5)
    empty = pixel_metrics(np.zeros((10, 10), bool), truth)
    assert empty["dice"] == 0.0 and empty["recall"] == 0.0 and empty["precision"] == 1.0
    assert pixel_metrics(np.zeros((3, 3)), np.zeros((3, 3)))["dice"] == 1.0


def test_hd95_is_a_distance_in_pixels_and_undefined_for_empty() -> None:
    a = _box((30, 30), 5, 8, 5, 8)
    b = _box((30, 30), 5, 8, 15, 18)  # shifted 10 columns
    assert hd95(a, a) == 0.0
    assert hd95(a, b) == pytest.approx(10.0)
    assert math.isnan(hd95(np.zeros((30, 30), bool), b))


def test_match_instances_hits_false_positives_and_iou_matching() -> None:
    shape = (20, 20)
    truths = [_box(shape, 0, 4, 0, 4), _box(shape, 10, 14, 10, 14)]
    labels = np.zeros(shape, dtype=np.int32)
    labels[0:4, 0:4] = 1  # exact copy of instance 0: IoU 1
    labels[13:14, 13:14] = 2  # touches instance 1: a hit, but IoU 1/16
    labels[18:20, 0:2] = 3  # nowhere near any fracture
    result = match_instances(truths, labels, [0.9, 0.8, 0.95])
    assert result.hits == [True, True]
    assert result.false_positive_regions == 1
    assert sorted(result.detections, key=lambda d: -d[0]) == [(0.95, False), (0.9, True), (0.8, False)]


def test_average_precision_matches_hand_computation() -> None:
    # Perfect detection gives 0.995, not 1: Ultralytics' 101-point integration (trapezoid with the
    # appended recall-1 / precision-0 sentinel) has the same ceiling, so our AP50 compares with YOLO's.
    assert average_precision([(0.9, True), (0.8, True)], 2) == pytest.approx(0.995)
    assert average_precision([], 3) == 0.0
    assert math.isnan(average_precision([(0.5, False)], 0))
    # One TP then one FP, two truths: precision 1 up to recall 0.5; Ultralytics then interpolates
    # linearly to the (1, 0) sentinel, adding 0.125: 0.5 + 0.125 minus the grid's 0.0025 -> 0.6225.
    ap = average_precision([(0.9, True), (0.5, False)], 2)
    assert ap == pytest.approx(0.6225)
    # A false positive ranked first halves the precision at recall 1.
    assert average_precision([(0.9, False), (0.5, True)], 1) == pytest.approx(0.5, abs=0.01)


def test_roc_auc_agrees_with_scikit_learn_including_ties() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=200)
    scores = np.round(rng.random(200) + 0.3 * labels, 1)  # rounding creates ties
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    assert math.isnan(roc_auc([0.1, 0.2], [1, 1]))


def test_youden_threshold_and_sensitivity_specificity() -> None:
    scores = [0.1, 0.2, 0.3, 0.7, 0.8, 0.9]
    labels = [0, 0, 0, 1, 1, 1]
    t = youden_threshold(scores, labels)
    assert 0.3 < t <= 0.7
    assert sensitivity_specificity([s >= t for s in scores], labels) == (1.0, 1.0)


def test_specificity_at_sensitivity_keeps_the_highest_threshold_reaching_the_target() -> None:
    # 10 positives: at sensitivity >= 0.8 the threshold is the 8th highest positive score (0.3); two
    # negatives (0.35, 0.9) score at or above it, three (0.0, 0.1, 0.2) below
    positives = [0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.3, 0.2, 0.1]
    negatives = [0.0, 0.1, 0.2, 0.35, 0.9]
    scores, labels = positives + negatives, [1] * 10 + [0] * 5
    spec, threshold = specificity_at_sensitivity(scores, labels, 0.8)
    assert threshold == 0.3 and spec == pytest.approx(3 / 5)
    assert sensitivity_specificity([s >= threshold for s in scores], labels) == (0.8, spec)
    assert specificity_at_sensitivity(scores, labels, 1.0) == (pytest.approx(1 / 5), 0.1)
    assert math.isnan(specificity_at_sensitivity([0.1, 0.2], [1, 1])[0])


def test_summarize_ignores_undefined_values() -> None:
    s = summarize([1.0, 3.0, float("nan")])
    assert s["mean"] == 2.0 and s["median"] == 2.0 and s["n"] == 2 and s["undefined"] == 1


def test_decision_rule_scores_regions_and_gates_the_mask() -> None:
    prob = np.zeros((12, 12), dtype=np.float32)
    prob[1:4, 1:4] = 0.9  # 9 px region
    prob[8, 8] = 0.95  # a single hot pixel
    assert fracture_score(prob, 1) == pytest.approx(0.95)
    assert fracture_score(prob, 10) == pytest.approx((0.95 + 9 * 0.9) / 10)
    labels, regions = find_regions(prob >= 0.5, prob)
    assert [r.pixels for r in regions] == [1, 9] and regions[0].label == 1 and (labels > 0).sum() == 10

    kept = decide(prob, DecisionRule(threshold=0.5, score_threshold=0.5, min_region_pixels=2))
    assert kept.fracture_present and kept.mask.sum() == 9 and len(kept.regions) == 1

    gated = decide(prob, DecisionRule(threshold=0.5, score_threshold=0.99))
    assert not gated.fracture_present and not gated.mask.any() and gated.regions == []
    assert gated.fracture_score == pytest.approx(0.95)


def test_region_confidences_equal_scipy_means_exactly() -> None:
    """find_regions bins only the labelled pixels; its means must be ndimage.mean's, bit for bit."""
    from scipy import ndimage

    from fracseg.inference.decision import CONNECTIVITY

    rng = np.random.default_rng(0)
    for _ in range(50):
        h, w = (int(v) for v in rng.integers(5, 200, 2))
        prob = ndimage.gaussian_filter(rng.random((h, w), dtype=np.float32), 2.0).astype(np.float32)
        mask = prob > np.quantile(prob, 0.9)
        raw, count = ndimage.label(mask, structure=CONNECTIVITY)
        expected = np.atleast_1d(ndimage.mean(prob, raw, np.arange(1, count + 1)))
        labels, regions = find_regions(mask, prob)
        assert len(regions) == count
        for region in regions:
            (first,) = raw[labels == region.label][:1]
            assert region.confidence == float(expected[first - 1])
            assert region.pixels == int((raw == first).sum())


def test_decision_rule_reads_the_bundle_keys() -> None:
    rule = DecisionRule.from_config({"threshold": 0.4, "score_threshold": 0.7, "score_top_pixels": 64})
    assert rule == DecisionRule(threshold=0.4, score_threshold=0.7, score_top_pixels=64, min_region_pixels=0)


def test_bootstrap_interval_covers_the_mean_shrinks_with_n_and_is_deterministic() -> None:
    rng = np.random.default_rng(1)
    small, large = rng.normal(0.3, 0.1, 30), rng.normal(0.3, 0.1, 3000)

    def mean_of(values):
        return lambda pos, neg: float(values[pos].mean())

    low_s, high_s = bootstrap_ci(mean_of(small), len(small), 0, reps=500)
    low_l, high_l = bootstrap_ci(mean_of(large), len(large), 0, reps=500)
    assert low_s < small.mean() < high_s and low_l < large.mean() < high_l
    assert high_l - low_l < (high_s - low_s) / 5  # about 1/sqrt(100) as wide
    # the standard error of a mean: the 95 % interval is about +-1.96 sd/sqrt(n)
    assert high_s - low_s == pytest.approx(2 * 1.96 * small.std() / math.sqrt(len(small)), rel=0.25)
    assert bootstrap_ci(mean_of(small), len(small), 0, reps=500) == (low_s, high_s)


def test_bootstrap_resamples_within_each_class_and_skips_undefined_replicates() -> None:
    sizes = []

    def record(pos, neg):
        sizes.append((len(pos), len(neg)))
        return float("nan") if len(sizes) % 2 else 1.0

    assert bootstrap_ci(record, 5, 7, reps=10) == (1.0, 1.0)
    assert set(sizes) == {(5, 7)}
    assert all(math.isnan(v) for v in bootstrap_ci(lambda p, n: float("nan"), 3, 3, reps=5))


def _case(fractured: bool, score: float, rng: np.random.Generator, index: int = 0):
    from fracseg.evaluation.evaluate import ROW_COLUMNS, Case

    truth = np.zeros((40, 40), dtype=bool)
    probability = rng.uniform(0.0, 0.2, (40, 40)).astype(np.float32)
    if fractured:
        truth[10:20, 10:20] = True
    probability[10:20, 10:20] = score  # a confident blob where fractures are, a weak one elsewhere
    row = {c: "" for c in ROW_COLUMNS} | {"image_id": f"IMG{index:04d}", "fractured": int(fractured)}
    return Case(row=row, probability=probability, truth=truth)


def test_crossfit_recovers_a_separable_split_and_is_honest_about_an_inseparable_one() -> None:
    from fracseg.evaluation.evaluate import crossfit

    rng = np.random.default_rng(0)
    separable = [_case(i < 10, 0.95 if i < 10 else 0.3, rng, i) for i in range(20)]
    fit = crossfit(separable, [i % 5 for i in range(20)])
    assert fit["folds"] == [0, 1, 2, 3, 4] and set(fit["choices"]) == {0, 1, 2, 3, 4}
    block = fit["cross_fitted"]
    assert block["image"]["sensitivity"] == 1.0 and block["image"]["specificity"] == 1.0
    assert block["pixel"]["dice"]["mean"] == pytest.approx(1.0) and block["images"] == 20
    assert "ci95" in block and block["ci95"]["auroc"][0] <= 1.0
    # identical score distributions: whatever rule the other folds pick, a fold cannot do better than chance
    inseparable = [_case(i % 2 == 0, float(rng.uniform(0.3, 0.95)), rng, i) for i in range(40)]
    block = crossfit(inseparable, [i % 5 for i in range(40)])["cross_fitted"]
    assert block["image"]["sensitivity"] + block["image"]["specificity"] < 1.4
    with pytest.raises(DatasetError, match="two folds"):
        crossfit(separable, [0] * 20)


def test_calibration_drops_specks_only_while_they_cost_no_dice() -> None:
    from fracseg.evaluation.evaluate import Case, calibrate

    rng = np.random.default_rng(0)
    cases = []
    for _ in range(6):
        truth = np.zeros((64, 64), dtype=bool)
        truth[10:30, 10:30] = True  # a 400-pixel fracture
        probability = np.full((64, 64), 0.05, dtype=np.float32)
        probability[10:30, 10:30] = 0.9
        for y, x in rng.integers(35, 60, size=(3, 2)):
            probability[y : y + 3, x : x + 3] = 0.9  # 9-pixel false-positive specks
        cases.append(Case(row={"fractured": 1}, probability=probability, truth=truth))
        cases.append(
            Case(row={"fractured": 0}, probability=np.full((64, 64), 0.05, np.float32), truth=truth & False)
        )
    chosen = calibrate(cases)
    by_size = chosen["mean_dice_by_min_region_pixels"]
    assert by_size[32] > by_size[0]  # the specks cost Dice; dropping them helps
    assert by_size[512] == 0.0  # the 400-pixel fracture is gone too
    assert chosen["min_region_pixels"] == 256  # the largest size that keeps the fracture


def test_guided_rule_drops_the_image_gate_and_region_size_after_a_foreground_click() -> None:
    from fracseg.inference.decision import DecisionRule, decide

    rule = DecisionRule(threshold=0.5, score_threshold=0.9, score_top_pixels=1, min_region_pixels=0)
    prob = np.zeros((8, 8), dtype=np.float32)
    prob[2:4, 2:4] = 0.7  # above the pixel threshold, below the image gate
    assert not decide(prob, rule).mask.any()
    assert rule.guided(foreground_clicks=False) == rule
    guided = rule.guided(foreground_clicks=True)
    assert guided.score_threshold == 0.0 and guided.threshold == rule.threshold
    assert decide(prob, guided).mask.sum() == 4
    sized = DecisionRule(threshold=0.5, score_threshold=0.5, score_top_pixels=1, min_region_pixels=16)
    prob[2:4, 2:4] = 0.95  # passes the gate, but a 4-px region is under the minimum size
    assert not decide(prob, sized).mask.any()
    assert decide(prob, sized.guided(foreground_clicks=True)).mask.sum() == 4


def test_guided_rule_uses_its_own_pixel_threshold_when_set() -> None:
    from fracseg.inference.decision import DecisionRule, decide
    from fracseg.inference.transforms import FractureDecisiond

    config = {"threshold": 0.1, "score_threshold": 0.5, "min_region_pixels": 0, "guided_threshold": 0.5}
    rule = DecisionRule.from_config(config)
    assert rule.guided_threshold == 0.5
    assert DecisionRule.from_config({"threshold": 0.1}).guided_threshold is None
    prob = np.zeros((8, 8), dtype=np.float32)
    prob[2:6, 2:6] = 0.3  # a wide low-probability halo
    prob[3:5, 3:5] = 0.8  # around a confident core
    assert decide(prob, rule).mask.sum() == 16  # the automatic answer keeps the halo (threshold 0.1)
    guided = rule.guided(foreground_clicks=True)
    assert guided.threshold == 0.5 and guided.score_threshold == 0.0
    assert decide(prob, guided).mask.sum() == 4  # the clicked answer keeps the core
    assert rule.guided(foreground_clicks=False) == rule
    # The bundle's transform carries the setting, so the MONAI Label app can rebuild it from to_dict().
    transform = FractureDecisiond(keys="pred", **rule.to_dict())
    assert transform.rule == rule


def test_calibrated_image_threshold_counts_only_images_that_can_be_positive() -> None:
    """An image whose probabilities never reach the pixel threshold is negative at any image threshold
    (decide() finds no region); the image threshold must not count it towards the target sensitivity."""
    from fracseg.evaluation.evaluate import CALIBRATION_THRESHOLDS, Case, calibrate
    from fracseg.inference.decision import DecisionRule, decide

    def case(fractured: bool, value: float) -> Case:
        truth = np.zeros((64, 64), dtype=bool)
        truth[20:40, 20:40] = fractured
        probability = np.zeros((64, 64), dtype=np.float32)
        probability[20:40, 20:40] = value
        return Case(row={"fractured": int(fractured)}, probability=probability, truth=truth)

    faint = CALIBRATION_THRESHOLDS[0] / 2  # below every pixel threshold tried: no region
    cases = [case(True, 0.9) for _ in range(16)] + [case(True, faint) for _ in range(4)]
    cases += [case(False, float(v)) for v in np.linspace(0.2, 0.8, 20)]
    chosen = calibrate(cases, target_sensitivity=0.85)  # 17 of 20 needed, only 16 can be positive
    assert chosen["threshold"] == CALIBRATION_THRESHOLDS[0]
    rule = DecisionRule(
        threshold=chosen["threshold"],
        score_threshold=chosen["score_threshold"],
        score_top_pixels=chosen["score_top_pixels"],
        min_region_pixels=chosen["min_region_pixels"],
    )
    present = [decide(c.probability, rule).fracture_present for c in cases]
    sensitivity = float(np.mean(present[:20]))
    specificity = 1.0 - float(np.mean(present[20:]))
    # Scoring the faint images as positives would have put the gate at their score (sensitivity "0.85" on
    # paper, 0.80 in fact, every negative positive); the decision-aware choice keeps the 0.80 and rejects
    # every negative.
    assert sensitivity == 0.8 and specificity == 1.0


def test_paired_auroc_difference_interval() -> None:
    from fracseg.evaluation.metrics import paired_auroc_difference_ci

    rng = np.random.default_rng(0)
    labels = np.array([1] * 40 + [0] * 60)
    perfect = labels + rng.uniform(0, 0.5, 100)
    noise = rng.uniform(0, 1, 100)
    assert paired_auroc_difference_ci(noise, noise, labels) == (0.0, 0.0)
    low, high = paired_auroc_difference_ci(perfect, noise, labels)
    assert 0.2 < low < high <= 1.0
    flipped = paired_auroc_difference_ci(noise, perfect, labels)
    assert flipped == pytest.approx((-high, -low))
