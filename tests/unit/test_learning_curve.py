"""Learning-curve signals on hand-made probability maps: best-threshold Dice, pixel AP, image AUROC."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events

from fracseg.engines import LearningCurve
from fracseg.engines.curves import pixel_average_precision
from fracseg.engines.resume import AtomicCheckpointSaver, ResumeFromLatest


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


def test_clocks_travel_in_the_checkpoint_of_a_run_stopped_between_validations(tmp_path) -> None:
    """A sitting stopped before its first validation keeps its training time: the clocks are in the
    checkpoint, not only in the last curves.jsonl row (which this sitting never wrote)."""
    rng = np.random.default_rng(4)
    cases = [_case(rng, fractured=i % 2 == 0, signal=0.7) for i in range(2)]
    maps = [(torch.from_numpy(prob)[None], torch.from_numpy(label)[None]) for prob, label in cases]
    evaluator = Engine(lambda engine, i: {"prob": maps[i][0], "label": maps[i][1]})
    path, ckpt = tmp_path / "curves.jsonl", tmp_path / "ckpt"

    def sitting(max_epochs: int, save_dict_has_curve: bool = True) -> tuple[Engine, LearningCurve]:
        trainer = Engine(lambda engine, batch: time.sleep(0.15))
        curve = LearningCurve(path)
        objects = {"trainer": trainer, **({"curve": curve} if save_dict_has_curve else {})}
        ResumeFromLatest(ckpt, {"trainer": trainer, "curve": curve}, optional_keys=["curve"]).attach(trainer)
        saver = AtomicCheckpointSaver(save_dir=str(ckpt), save_dict=objects, save_interval=1, n_saved=1)
        saver.attach(trainer)
        curve.attach(trainer, evaluator)
        trainer.add_event_handler(Events.EPOCH_COMPLETED(every=2), lambda e: evaluator.run(range(2)))
        trainer.run([0, 1], max_epochs=max_epochs)
        return trainer, curve

    sitting(1)  # 0.3 s of training, stopped before the epoch-2 validation: no row written
    assert not path.exists()
    assert torch.load(ckpt / "checkpoint_epoch=1.pt", weights_only=True)["curve"]["train_seconds"] >= 0.3
    sitting(2)
    (row,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert row["epoch"] == 2 and row["train_seconds"] >= 0.6  # both sittings' epochs
    # a checkpoint written before the curve was saved in it still resumes (the clocks then follow the rows)
    for old in ckpt.iterdir():
        old.unlink()
    trainer, curve = sitting(3, save_dict_has_curve=False)
    assert trainer.state.epoch == 3 and curve.clocks()[1] >= 0.3
    sitting(4)
    assert len(path.read_text().splitlines()) == 2


def test_resume_refuses_a_checkpoint_that_lacks_a_required_entry(tmp_path) -> None:
    trainer = Engine(lambda engine, batch: None)
    saved = {"trainer": trainer, "curve": LearningCurve(tmp_path / "curves.jsonl")}
    AtomicCheckpointSaver(save_dir=str(tmp_path), save_dict=saved, save_interval=1).attach(trainer)
    trainer.run([0], max_epochs=1)
    resumed = Engine(lambda engine, batch: None)
    wanted = {"trainer": resumed, "model": torch.nn.Linear(2, 2)}
    ResumeFromLatest(tmp_path, wanted, optional_keys=["curve"]).attach(resumed)
    with pytest.raises(ValueError, match="model"):
        resumed.run([0], max_epochs=2)
