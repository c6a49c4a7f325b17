"""Learning-curve signals on hand-made probability maps: best-threshold Dice, pixel AP, image AUROC."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events

from fracseg.engines import LearningCurve
from fracseg.engines.curves import pixel_average_precision


def _case(rng: np.random.Generator, fractured: bool, signal: float) -> tuple[np.ndarray, np.ndarray]:
    label = np.zeros((32, 32), dtype=np.float32)
    if fractured:
        label[10:14, 8:20] = 1
    prob = rng.uniform(0.0, 0.3, size=label.shape).astype(np.float32)
    prob[label > 0] = signal  # below 0.5: Dice at 0.5 is 0, the best threshold still finds the mask
    return prob, label


def test_signals_move_before_probabilities_cross_one_half() -> None:
    rng = np.random.default_rng(0)
    curve = LearningCurve("unused.jsonl", score_top_pixels=4)
    for i in range(6):
        curve.add(*_case(rng, fractured=i < 3, signal=0.4))
    values = curve.compute()
    assert values["val_dice_05"] == 0.0
    assert values["val_best_dice"] == pytest.approx(1.0) and 0.3 <= values["val_best_threshold"] <= 0.4
    assert values["val_pixel_ap"] == pytest.approx(1.0, abs=1e-6)
    assert values["val_auroc"] == 1.0 and values["val_images"] == 6


def test_uninformative_maps_score_chance() -> None:
    rng = np.random.default_rng(1)
    curve = LearningCurve("unused.jsonl")
    positives = negatives = 0
    for i in range(40):
        label = np.zeros((32, 32), dtype=np.float32)
        if i % 2:
            label[rng.integers(0, 28) :][:4, :6] = 1
        curve.add(rng.uniform(size=(32, 32)).astype(np.float32), label)
        positives += int(label.sum())
        negatives += int((label == 0).sum())
    values = curve.compute()
    assert values["val_pixel_ap"] == pytest.approx(positives / (positives + negatives), abs=0.02)
    assert 0.25 < values["val_auroc"] < 0.75


def test_average_precision_from_histograms_matches_a_ranked_computation() -> None:
    rng = np.random.default_rng(2)
    truth = rng.uniform(size=5000) < 0.1
    prob = np.clip(rng.normal(0.3 + 0.3 * truth, 0.15), 0, 0.9999)
    bins = (prob * 1000).astype(int)
    pos = np.bincount(bins[truth], minlength=1000)
    neg = np.bincount(bins[~truth], minlength=1000)
    order = np.argsort(-prob, kind="mergesort")
    hits = truth[order]
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    ranked = float((precision_at * hits).sum() / hits.sum())
    assert pixel_average_precision(pos, neg) == pytest.approx(ranked, abs=0.01)


def test_rows_are_written_per_validation_with_training_time(tmp_path) -> None:
    rng = np.random.default_rng(3)
    cases = [_case(rng, fractured=i % 2 == 0, signal=0.7) for i in range(4)]

    def validate(engine: Engine, batch: int) -> dict:
        prob, label = cases[batch]
        return {"prob": torch.from_numpy(prob)[None], "label": torch.from_numpy(label)[None]}

    evaluator = Engine(validate)
    trainer = Engine(lambda engine, batch: evaluator.run(range(4)))
    path = tmp_path / "curves.jsonl"
    LearningCurve(path).attach(trainer, evaluator)
    trainer.run([0], max_epochs=2)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] or [r["iteration"] for r in rows] == [1, 2]
    assert all(r["val_dice_05"] == pytest.approx(1.0) and r["val_auroc"] == 1.0 for r in rows)
    assert all(0 <= r["train_seconds"] <= r["wall_seconds"] for r in rows)
    assert evaluator.state.metrics["val_best_dice"] == pytest.approx(1.0)
    # a resumed run continues the file (rows up to the resumed iteration are kept)
    resumed = Engine(lambda engine, batch: evaluator.run(range(4)))
    LearningCurve(path).attach(resumed, evaluator)
    resumed.add_event_handler(Events.STARTED, lambda e: None)
    resumed.state.iteration, resumed.state.epoch = 2, 2
    resumed.run([0], max_epochs=3)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 3 and rows[2]["wall_seconds"] >= rows[1]["wall_seconds"]
