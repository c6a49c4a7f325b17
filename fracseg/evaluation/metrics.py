"""Evaluation metrics: pixel overlap, HD95, instance hits, mask AP50 and image-level ROC.

Pure numpy (plus MONAI's surface-distance code for HD95) so they can be tested on hand-made arrays.
Conventions are stated where a choice was made; ``docs/evaluation.md`` repeats them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance


def pixel_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice, IoU, precision and recall of one binary prediction against one binary truth.

    Conventions: both empty gives 1.0 for every metric; an empty prediction has precision 1.0 (it claims
    nothing wrong) and recall 0.0 when the truth is not empty.
    """
    p = np.asarray(pred, dtype=bool)
    t = np.asarray(truth, dtype=bool)
    tp = float(np.count_nonzero(p & t))
    np_, nt = float(np.count_nonzero(p)), float(np.count_nonzero(t))
    if np_ == 0 and nt == 0:
        return {"dice": 1.0, "iou": 1.0, "precision": 1.0, "recall": 1.0}
    union = np_ + nt - tp
    return {
        "dice": 2 * tp / (np_ + nt),
        "iou": tp / union,
        "precision": tp / np_ if np_ else 1.0,
        "recall": tp / nt if nt else 1.0,
    }


def hd95(pred: np.ndarray, truth: np.ndarray) -> float:
    """95th-percentile symmetric Hausdorff distance in pixels; NaN when either mask is empty."""
    p = np.asarray(pred, dtype=bool)
    t = np.asarray(truth, dtype=bool)
    if not p.any() or not t.any():
        return float("nan")
    with warnings.catch_warnings():  # MONAI 1.6 warns about its own use of a deprecated argument
        warnings.simplefilter("ignore")
        value = compute_hausdorff_distance(
            torch.from_numpy(p)[None, None],
            torch.from_numpy(t)[None, None],
            include_background=True,
            percentile=95,
        )
    return float(value.item())


@dataclass
class InstanceResult:
    """Instance-level outcome for one image."""

    hits: list[bool]  # per ground-truth instance: does any predicted region overlap it?
    false_positive_regions: int  # predicted regions overlapping no ground-truth instance
    detections: list[tuple[float, bool]]  # (confidence, true positive at IoU >= iou_threshold)


def match_instances(
    truth_instances: Sequence[np.ndarray],
    pred_labels: np.ndarray,
    confidences: Sequence[float],
    iou_threshold: float = 0.5,
) -> InstanceResult:
    """Match predicted regions to ground-truth instances.

    Args:
        truth_instances: one boolean mask per ground-truth polygon.
        pred_labels: predicted regions numbered 1..n (0 background).
        confidences: confidence of region ``i + 1``.
        iou_threshold: mask IoU needed for a true positive (0.5 for AP50).

    Hits use any overlap (a radiologist's "was this fracture marked?"). For AP, regions are taken in
    order of confidence and each is matched to the unmatched instance of highest IoU, as COCO and
    Ultralytics do for mask AP.
    """
    n_pred = len(confidences)
    truths = [np.asarray(t, dtype=bool) for t in truth_instances]
    iou = np.zeros((n_pred, len(truths)))
    overlaps = np.zeros((n_pred, len(truths)), dtype=bool)
    if n_pred and truths:
        flat = pred_labels.ravel()
        pred_sizes = np.bincount(flat, minlength=n_pred + 1)[1:]
        for j, truth in enumerate(truths):
            inter = np.bincount(flat[truth.ravel()], minlength=n_pred + 1)[1:]
            union = pred_sizes + truth.sum() - inter
            iou[:, j] = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
            overlaps[:, j] = inter > 0
    hits = [bool(overlaps[:, j].any()) for j in range(len(truths))]
    false_positives = int(sum(1 for i in range(n_pred) if not overlaps[i].any()))
    matched: set[int] = set()
    detections = []
    for i in sorted(range(n_pred), key=lambda k: -confidences[k]):
        candidates = [
            (iou[i, j], j) for j in range(len(truths)) if j not in matched and iou[i, j] >= iou_threshold
        ]
        if candidates:
            matched.add(max(candidates)[1])
        detections.append((float(confidences[i]), bool(candidates)))
    return InstanceResult(hits=hits, false_positive_regions=false_positives, detections=detections)


def average_precision(detections: Sequence[tuple[float, bool]] | np.ndarray, n_truth: int) -> float:
    """Area under the interpolated precision-recall curve, 101-point (COCO / Ultralytics ``interp``).

    ``detections`` pools ``(confidence, is_true_positive)`` over all images, as pairs or as an ``(N, 2)``
    array (what the bootstrap concatenates); ``n_truth`` counts all ground-truth instances. NaN when there
    is no ground truth.
    """
    if n_truth == 0:
        return float("nan")
    pairs = np.asarray(detections, dtype=np.float64).reshape(-1, 2)
    if len(pairs) == 0:
        return 0.0
    confidences, hits = pairs[:, 0], pairs[:, 1]
    order = np.argsort(-confidences, kind="stable")
    tp = hits[order]
    tp_cum = np.cumsum(tp)
    recall = tp_cum / n_truth
    precision = tp_cum / np.arange(1, len(tp) + 1)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[1.0], precision, [0.0]])
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    x = np.linspace(0, 1, 101)
    integrate = getattr(np, "trapezoid", None) or np.trapz  # numpy 2 renamed trapz
    return float(integrate(np.interp(x, mrec, mpre), x))


def roc_curve(scores: Sequence[float], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points ``(fpr, tpr, thresholds)``, thresholds descending; a case is positive if score >= t."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    thresholds = np.concatenate([[np.inf], np.unique(s)[::-1]])
    pos, neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    tpr = np.array([np.count_nonzero(y & (s >= t)) / pos for t in thresholds])
    fpr = np.array([np.count_nonzero(~y & (s >= t)) / neg for t in thresholds])
    return fpr, tpr, thresholds


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties count one half); NaN without both classes."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def sensitivity_specificity(predicted: Sequence[bool], labels: Sequence[int]) -> tuple[float, float]:
    """``(sensitivity, specificity)`` of yes/no answers; NaN for a class with no cases."""
    p = np.asarray(predicted, dtype=bool)
    y = np.asarray(labels, dtype=bool)
    sens = float((p & y).sum() / y.sum()) if y.any() else float("nan")
    spec = float((~p & ~y).sum() / (~y).sum()) if (~y).any() else float("nan")
    return sens, spec


def threshold_at_sensitivity(
    scores: Sequence[float], labels: Sequence[int], target_sensitivity: float
) -> float:
    """Highest threshold whose decisions ``score >= t`` keep sensitivity >= ``target_sensitivity``.

    ``-inf`` marks images that are negative whatever the threshold (``fracseg evaluate --calibrate``: no
    region survives). Where the target cannot be reached, the highest threshold that reaches the largest
    sensitivity the scores can give: sensitivity stays first, as in the target, instead of trading it for
    specificity (Youden's J)."""
    pos = np.asarray([s for s, y in zip(scores, labels, strict=True) if y], dtype=np.float64)
    candidates = sorted({s for s in scores if np.isfinite(s)}, reverse=True)
    if not candidates or not pos.size:
        return 0.0
    reachable = float(np.mean(pos >= candidates[-1]))
    goal = min(target_sensitivity, reachable)
    return float(next(t for t in candidates if float(np.mean(pos >= t)) >= goal))


def specificity_at_sensitivity(
    scores: Sequence[float], labels: Sequence[int], target: float = 0.85
) -> tuple[float, float]:
    """``(specificity, threshold)`` of ``score >= threshold`` at :func:`threshold_at_sensitivity`: the best
    specificity the score alone can give at that sensitivity (no region or other condition of the decision
    rule). NaN for a class with no cases."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    if not y.any() or y.all():
        return float("nan"), float("nan")
    threshold = threshold_at_sensitivity(s.tolist(), y.astype(int).tolist(), target)
    return float(np.mean(s[~y] < threshold)), threshold


def youden_threshold(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Score threshold maximising sensitivity + specificity (Youden's J); ties go to the higher one."""
    fpr, tpr, thresholds = roc_curve(scores, labels)
    j = tpr - fpr
    finite = np.isfinite(thresholds)
    best = int(np.argmax(np.where(finite, j, -np.inf)))
    return float(thresholds[best])


def summarize(values: Sequence[float]) -> dict[str, float | int]:
    """Mean, sd, median and count of the finite values (NaN-safe), plus how many were undefined."""
    arr = np.asarray(list(values), dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return {
            "mean": float("nan"),
            "sd": float("nan"),
            "median": float("nan"),
            "n": 0,
            "undefined": int(arr.size),
        }
    return {
        "mean": float(finite.mean()),
        "sd": float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
        "median": float(np.median(finite)),
        "n": int(finite.size),
        "undefined": int(arr.size - finite.size),
    }


def bootstrap_ci(
    statistic: Callable[[np.ndarray, np.ndarray], float],
    n_positive: int,
    n_negative: int,
    reps: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(positive_idx, negative_idx)``.

    Images are resampled with replacement within each class (fractured / non-fractured), so every
    replicate keeps the split's class sizes. Deterministic for a given ``seed``; replicates where the
    statistic is undefined (NaN) are ignored. ``(nan, nan)`` when none is defined.
    """
    rng = np.random.default_rng(seed)
    values = np.empty(reps, dtype=np.float64)
    for i in range(reps):
        pos = rng.integers(0, n_positive, n_positive) if n_positive else np.empty(0, dtype=np.int64)
        neg = rng.integers(0, n_negative, n_negative) if n_negative else np.empty(0, dtype=np.int64)
        values[i] = statistic(pos, neg)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def paired_auroc_difference_ci(
    a: Sequence[float], b: Sequence[float], labels: Sequence[int], reps: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Bootstrap 95 % interval of ``AUROC(a) - AUROC(b)`` for two scores of the same images, each
    replicate resampling the images once (within each class, :func:`bootstrap_ci`) for both scores."""
    sa, sb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)

    def stat(p: np.ndarray, n: np.ndarray) -> float:
        idx = np.concatenate([pos[p], neg[n]])
        return roc_auc(sa[idx], y[idx]) - roc_auc(sb[idx], y[idx])

    return bootstrap_ci(stat, len(pos), len(neg), reps=reps, seed=seed)
