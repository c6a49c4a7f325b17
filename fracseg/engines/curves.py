"""Learning curves: validation signals that move before the probabilities cross 0.5, against wall time.

Dice at a fixed 0.5 threshold stays at 0 for a long stretch of a CPU run (the generator's probabilities
rise slowly) and then jumps, so two recipes cannot be told apart early by it. :class:`LearningCurve`
collects, at every validation run, the per-image probability maps and reports:

- ``val_dice_05``: mean Dice at threshold 0.5 (fractured images);
- ``val_best_dice``: mean Dice at the best single threshold of a fixed grid, and that threshold;
- ``val_pixel_ap``: pixel-level average precision over all validation pixels (a histogram estimate);
- ``val_auroc``: image-level AUROC of the fracture score (mean of the top ``score_top_pixels``
  probabilities, :func:`fracseg.inference.decision.fracture_score`) of fractured vs non-fractured images,
  when the validation set has both (``val_keys`` with ``negatives_valid``).

Each row of ``path`` (JSON lines) also carries the trainer's epoch and iteration, the wall time since the
run started, and the training time (wall time less the time spent validating), continued across a resume:
both clocks are part of the epoch checkpoint (put the curve in the ``CheckpointSaver``'s ``save_dict``), so a
run stopped between validations keeps the time it trained; without that state they continue from the last
row of ``path``.
The values are also put into the evaluator's ``state.metrics`` so the stats and TensorBoard handlers log
them.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Metric

from fracseg.evaluation.metrics import roc_auc
from fracseg.inference.decision import fracture_score
from fracseg.io.atomic import write_text_atomic

logger = logging.getLogger(__name__)

#: Thresholds of the best-threshold Dice. The low end is fine: a model trained with the non-fractured
#: images in its batches is under-confident (its best threshold sat at the old grid floor, 0.05).
THRESHOLDS = (0.01, 0.02, 0.03, *(round(t, 2) for t in np.arange(0.05, 0.96, 0.05)))
#: Histogram bins of the pixel-AP estimate.
AP_BINS = 1000


def pixel_average_precision(pos_hist: np.ndarray, neg_hist: np.ndarray) -> float:
    """Average precision from histograms of the probabilities of positive and negative pixels (equal bins
    over [0, 1]): precision summed over recall steps, thresholds descending; NaN with no positive pixel."""
    tp = np.cumsum(pos_hist[::-1]).astype(np.float64)
    fp = np.cumsum(neg_hist[::-1]).astype(np.float64)
    total = tp[-1] if tp.size else 0.0
    if total <= 0:
        return float("nan")
    precision = tp / np.maximum(tp + fp, 1.0)
    recall_step = np.diff(np.concatenate([[0.0], tp])) / total
    return float(np.sum(precision * recall_step))


class CurveStats:
    """Accumulates per-image probability maps and ground truth into the signals of the module docstring."""

    def __init__(self, score_top_pixels: int = 50) -> None:
        self.score_top_pixels = int(score_top_pixels)
        self.reset()

    def reset(self) -> None:
        self._dice_sums = np.zeros(len(THRESHOLDS))
        self._n_fractured = 0
        self._scores: list[float] = []
        self._labels: list[int] = []
        self._pos_hist = np.zeros(AP_BINS, dtype=np.int64)
        self._neg_hist = np.zeros(AP_BINS, dtype=np.int64)

    def add(self, probability: torch.Tensor | np.ndarray, label: torch.Tensor | np.ndarray) -> None:
        """Add one image's probability map and ground-truth mask (any matching shapes)."""
        prob = np.asarray(torch.as_tensor(probability).detach().float().cpu(), dtype=np.float32).ravel()
        truth = np.asarray(torch.as_tensor(label).detach().cpu()).ravel() > 0
        fractured = bool(truth.any())
        self._scores.append(fracture_score(prob, self.score_top_pixels))
        self._labels.append(int(fractured))
        bins = np.clip((prob * AP_BINS).astype(np.int64), 0, AP_BINS - 1)
        self._pos_hist += np.bincount(bins[truth], minlength=AP_BINS)
        self._neg_hist += np.bincount(bins[~truth], minlength=AP_BINS)
        if fractured:
            n_truth = truth.sum()
            for i, t in enumerate(THRESHOLDS):
                pred = prob >= t
                inter = np.count_nonzero(pred & truth)
                self._dice_sums[i] += 2.0 * inter / (np.count_nonzero(pred) + n_truth)
            self._n_fractured += 1

    def compute(self) -> dict[str, float]:
        """The signals of the images added since the last reset."""
        n = max(self._n_fractured, 1)
        dice = self._dice_sums / n
        best = int(np.argmax(dice))
        labels = np.asarray(self._labels)
        has_both = 0 < labels.sum() < len(labels)
        return {
            "val_dice_05": float(dice[THRESHOLDS.index(0.5)]),
            "val_best_dice": float(dice[best]),
            "val_best_threshold": float(THRESHOLDS[best]),
            "val_pixel_ap": pixel_average_precision(self._pos_hist, self._neg_hist),
            "val_auroc": roc_auc(self._scores, self._labels) if has_both else float("nan"),
            "val_images": len(self._labels),
        }


class BestThresholdDice(Metric):
    """Ignite metric: mean Dice of the fractured images at the best single threshold of :data:`THRESHOLDS`.

    The bundle's key validation metric: it keeps ``model.pt`` tracking progress while the probabilities
    are still below 0.5 (the pixel threshold is chosen afterwards by ``fracseg evaluate --calibrate``).
    ``output_transform`` must give ``(probabilities, labels)`` batches or lists of per-image tensors.
    """

    def reset(self) -> None:
        self.stats = CurveStats()

    def update(self, output: tuple[Any, Any]) -> None:
        probs, labels = output
        for prob, label in zip(probs, labels, strict=True):
            self.stats.add(prob, label)

    def compute(self) -> float:
        return self.stats.compute()["val_best_dice"]


class LearningCurve:
    """Log threshold-free validation signals per validation run (see the module docstring).

    Args:
        path: JSON-lines file the rows are appended to (rewritten atomically each time).
        score_top_pixels: top probabilities averaged into the image score.
        pred_key: key of the probability map in the evaluator's (decollated) output.
        label_key: key of the ground-truth mask.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        score_top_pixels: int = 50,
        pred_key: str = "prob",
        label_key: str = "label",
    ) -> None:
        self.path = Path(path)
        self.score_top_pixels = int(score_top_pixels)
        self.pred_key = pred_key
        self.label_key = label_key
        self.rows: list[dict[str, Any]] = []
        self._wall_offset = 0.0
        self._train_offset = 0.0
        self._started: float | None = None
        self._validating_since: float | None = None
        self._validation_seconds = 0.0
        self._clocks_restored = False
        self.stats = CurveStats(score_top_pixels)

    def attach(self, trainer: Engine, evaluator: Engine) -> None:
        """Time ``trainer``'s run and collect ``evaluator``'s outputs."""
        trainer.add_event_handler(Events.STARTED, self._on_trainer_started)
        evaluator.add_event_handler(Events.EPOCH_STARTED, self._on_validation_started)
        evaluator.add_event_handler(Events.ITERATION_COMPLETED, self._on_iteration)
        evaluator.add_event_handler(Events.EPOCH_COMPLETED, self._on_validation_completed)
        self._trainer = trainer

    def _on_trainer_started(self, engine: Engine) -> None:
        self._started = time.monotonic()
        if self.path.exists():  # a resumed run continues the curve and its clocks
            lines = [ln for ln in self.path.read_text(encoding="utf-8").splitlines() if ln.strip()]
            self.rows = [json.loads(ln) for ln in lines]
            self.rows = [r for r in self.rows if r["iteration"] <= engine.state.iteration]
            if self.rows and not self._clocks_restored:
                self._wall_offset = float(self.rows[-1]["wall_seconds"])
                self._train_offset = float(self.rows[-1]["train_seconds"])

    def clocks(self) -> tuple[float, float]:
        """Wall and training seconds of the run so far, earlier sittings included."""
        elapsed = time.monotonic() - self._started if self._started is not None else 0.0
        return self._wall_offset + elapsed, self._train_offset + elapsed - self._validation_seconds

    def state_dict(self) -> dict[str, float]:
        """The clocks, for the epoch checkpoint (plain floats: loads with ``weights_only=True``)."""
        wall, train = self.clocks()
        return {"wall_seconds": wall, "train_seconds": train}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Continue the clocks of a checkpoint (called by the resume handler at ``STARTED``)."""
        self._wall_offset = float(state["wall_seconds"])
        self._train_offset = float(state["train_seconds"])
        self._clocks_restored = True

    def _on_validation_started(self, engine: Engine) -> None:
        self.stats.reset()
        self._validating_since = time.monotonic()

    def _on_iteration(self, engine: Engine) -> None:
        output = engine.state.output
        items = output if isinstance(output, list) else [output]
        for item in items:
            self.add(item[self.pred_key], item[self.label_key])

    def add(self, probability: torch.Tensor | np.ndarray, label: torch.Tensor | np.ndarray) -> None:
        """Add one image (see :meth:`CurveStats.add`)."""
        self.stats.add(probability, label)

    def compute(self) -> dict[str, float]:
        """The signals of the current validation run (see :meth:`CurveStats.compute`)."""
        return self.stats.compute()

    def _on_validation_completed(self, engine: Engine) -> None:
        now = time.monotonic()
        if self._validating_since is not None:
            self._validation_seconds += now - self._validating_since
        values = self.compute()
        engine.state.metrics.update({k: v for k, v in values.items() if k != "val_images"})
        wall, train = self.clocks()
        row = {
            "epoch": int(self._trainer.state.epoch),
            "iteration": int(self._trainer.state.iteration),
            "wall_seconds": round(wall, 1),
            "train_seconds": round(train, 1),
            **{k: (round(v, 5) if isinstance(v, float) else v) for k, v in values.items()},
        }
        self.rows.append(row)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))
        logger.info(
            "curve: epoch %d, %.0f s training: Dice@0.5 %.3f, best Dice %.3f (t %.2f), pixel AP %.3f, "
            "AUROC %.3f",
            row["epoch"],
            row["train_seconds"],
            row["val_dice_05"],
            row["val_best_dice"],
            row["val_best_threshold"],
            row["val_pixel_ap"],
            row["val_auroc"],
        )
