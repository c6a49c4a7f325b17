"""Score a model on one split of a FracAtlas-layout root: per-image rows, metrics.json, a report.

Fractured images of the split come from the official split CSV (``train``/``valid``/``test``);
non-fractured images from the matching held-out negative fold (``negatives_<split>``, see
:mod:`fracseg.data.fracatlas`). Everything is measured at the input's displayed size, after the same
pre-processing and decision rule as ``fracseg infer``.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fracseg.data.fracatlas import SPLITS, ensure_prepared, read_coco_polygons
from fracseg.data.rasterize import rasterize_polygons
from fracseg.errors import DatasetError, FracsegError
from fracseg.evaluation.metrics import (
    average_precision,
    bootstrap_ci,
    hd95,
    match_instances,
    pixel_metrics,
    roc_auc,
    sensitivity_specificity,
    summarize,
    threshold_at_sensitivity,
)
from fracseg.inference.decision import Decision, DecisionRule, decide, fracture_score
from fracseg.inference.predictor import Predictor
from fracseg.io import read_xray, write_csv_atomic, write_json_atomic

logger = logging.getLogger(__name__)

ROW_COLUMNS = (
    "image_id",
    "split",
    "fractured",
    "body_part",
    "fracture_score",
    "fracture_present",
    "dice",
    "iou",
    "precision",
    "recall",
    "hd95",
    "gt_instances",
    "hit_instances",
    "pred_regions",
    "fp_regions",
    "mask_pixels",
    "gt_pixels",
    "seconds",
    "error",
)
#: Bootstrap replicates of the 95 % confidence intervals in ``metrics.json`` (``ci95``).
BOOTSTRAP_REPS = 1000
#: Pixel thresholds and score summaries tried by ``--calibrate`` (on valid only). The grid reaches down to
#: 0.02 because a model trained with the non-fractured images in its batches is under-confident: its best
#: pixel threshold can lie far below 0.5.
CALIBRATION_THRESHOLDS = (0.02, 0.03, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
CALIBRATION_TOP_PIXELS = (1, 16, 64, 256, 1024)
CALIBRATION_MIN_REGIONS = (0, 32, 64, 128, 256, 512, 1024)
#: a larger minimum region size is preferred while it costs at most this much mean Dice: fewer
#: false-positive specks at no real cost to the masks.
MIN_REGION_DICE_TOLERANCE = 0.005
THUMBNAIL = 192


@dataclass
class Case:
    """What is kept per image after scoring (probability maps only when calibrating)."""

    row: dict[str, Any]
    thumbnail: np.ndarray | None = None
    probability: np.ndarray | None = None
    truth: np.ndarray | None = None
    instances: list[np.ndarray] = field(default_factory=list)


def split_entries(datalist: dict[str, Any], split: str) -> list[dict[str, Any]]:
    """Fractured images of ``split`` followed by its held-out negatives."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    key = SPLITS[split]
    if key not in datalist:
        raise DatasetError(f"split {split!r} is not in this dataset ({key} missing from the datalist)")
    return list(datalist[key]) + list(datalist.get(f"negatives_{split}", []))


def _thumbnail(image: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Small RGB overlay: ground truth green outline-ish fill, prediction red; for the report grid."""
    rgb = np.repeat((np.clip(image, 0, 1) * 255)[..., None], 3, axis=2)
    rgb[truth] = 0.5 * rgb[truth] + 0.5 * np.array([40, 220, 40])
    rgb[pred] = 0.5 * rgb[pred] + 0.5 * np.array([255, 40, 40])
    thumb = Image.fromarray(rgb.clip(0, 255).astype(np.uint8))
    thumb.thumbnail((THUMBNAIL, THUMBNAIL))
    return np.asarray(thumb)


def polygon_instances(
    polygons: dict[str, list[tuple[int, list[float]]]], image_id: str, shape: tuple[int, ...]
) -> list[np.ndarray]:
    """The image's fracture instances: one boolean mask per COCO polygon."""
    height, width = shape
    return [rasterize_polygons([flat], height, width) > 0 for _, flat in polygons.get(image_id, [])]


def measure_decision(
    row: dict[str, Any], decision: Decision, truth: np.ndarray, instances: list[np.ndarray]
) -> None:
    """Fill ``row`` with the measures of one decision against its truth (pixels and instances)."""
    result = match_instances(instances, decision.labels, [r.confidence for r in decision.regions])
    row.update(
        fracture_score=round(decision.fracture_score, 6),
        fracture_present=int(decision.fracture_present),
        gt_instances=len(instances),
        hit_instances=sum(result.hits),
        pred_regions=len(decision.regions),
        fp_regions=result.false_positive_regions,
        mask_pixels=int(decision.mask.sum()),
        gt_pixels=int(truth.sum()),
    )
    if row["fractured"]:
        row.update({k: round(v, 6) for k, v in pixel_metrics(decision.mask, truth).items()})
        row["hd95"] = round(hd95(decision.mask, truth), 3)
    row["_detections"] = result.detections


def score_case(
    entry: dict[str, Any],
    split: str,
    predictor: Predictor,
    polygons: dict[str, list[tuple[int, list[float]]]],
    keep_maps: bool,
) -> Case:
    """Predict one datalist entry and measure it. Unreadable input becomes a row with ``error``."""
    start = time.perf_counter()
    row: dict[str, Any] = {c: "" for c in ROW_COLUMNS}
    row.update(
        image_id=entry["image_id"],
        split=split,
        fractured=int(entry["fractured"]),
        body_part=entry.get("body_part", "unknown"),
    )
    try:
        pred = predictor.predict(entry["image"])
    except FracsegError as exc:
        row["error"] = str(exc)
        return Case(row=row)
    truth = read_xray(entry["label"]).array > 0  # the same reader as training's LoadMaskd
    if truth.shape != pred.mask.shape:
        row["error"] = f"mask {truth.shape} and prediction {pred.mask.shape} differ in size"
        return Case(row=row)
    instances = polygon_instances(polygons, entry["image_id"], truth.shape)
    measure_decision(row, pred.decision, truth, instances)
    row["seconds"] = round(time.perf_counter() - start, 4)
    return Case(
        row=row,
        thumbnail=_thumbnail(pred.image, truth, pred.mask) if row["fractured"] else None,
        probability=pred.probability if keep_maps else None,
        truth=truth if keep_maps else None,
        instances=instances if keep_maps else [],
    )


def _num(value: Any) -> float:
    return float(value) if value not in ("", None) else float("nan")


def aggregate(cases: list[Case], rule: DecisionRule) -> dict[str, Any]:
    """Pixel, instance and image-level metrics over scored cases (rows with ``error`` are counted apart)."""
    ok = [c.row for c in cases if not c.row["error"]]
    fractured = [r for r in ok if r["fractured"]]
    negatives = [r for r in ok if not r["fractured"]]
    pixel = {
        k: summarize([_num(r[k]) for r in fractured]) for k in ("dice", "iou", "precision", "recall", "hd95")
    }
    by_part: dict[str, dict[str, Any]] = {}
    parts = defaultdict(list)
    for r in fractured:
        parts[r["body_part"]].append(r)
    for part, rows in sorted(parts.items()):
        by_part[part] = {
            "images": len(rows),
            **{k: summarize([_num(r[k]) for r in rows]) for k in ("dice", "iou", "hd95")},
        }
    n_truth = sum(int(r["gt_instances"]) for r in fractured)
    detections_fractured = [d for r in fractured for d in r["_detections"]]
    detections_all = detections_fractured + [d for r in negatives for d in r["_detections"]]
    scores = [float(r["fracture_score"]) for r in ok]
    labels = [int(r["fractured"]) for r in ok]
    sens, spec = sensitivity_specificity([bool(r["fracture_present"]) for r in ok], labels)
    return {
        "ci95": confidence_intervals(fractured, negatives),
        "images": len(cases),
        "fractured_images": len(fractured),
        "non_fractured_images": len(negatives),
        "errors": [{"image_id": c.row["image_id"], "error": c.row["error"]} for c in cases if c.row["error"]],
        "rule": rule.to_dict(),
        "pixel": {**pixel, "by_body_part": by_part},
        "instance": {
            "gt_instances": n_truth,
            "hit_instances": sum(int(r["hit_instances"]) for r in fractured),
            "hit_rate": sum(int(r["hit_instances"]) for r in fractured) / n_truth
            if n_truth
            else float("nan"),
            "fp_regions_per_fractured_image": float(np.mean([r["fp_regions"] for r in fractured]))
            if fractured
            else float("nan"),
            "fp_regions_per_non_fractured_image": float(np.mean([r["fp_regions"] for r in negatives]))
            if negatives
            else float("nan"),
            "mask_ap50": average_precision(detections_fractured, n_truth),
            "mask_ap50_with_negatives": average_precision(detections_all, n_truth),
        },
        "image": {
            "auroc": roc_auc(scores, labels),
            "sensitivity": sens,
            "specificity": spec,
            "non_fractured_with_positive_pixels": float(np.mean([r["mask_pixels"] > 0 for r in negatives]))
            if negatives
            else float("nan"),
        },
    }


def confidence_intervals(
    fractured: list[dict[str, Any]], negatives: list[dict[str, Any]], reps: int = BOOTSTRAP_REPS
) -> dict[str, tuple[float, float]]:
    """95 % percentile-bootstrap intervals (images resampled within class, fixed seed) of the headline
    metrics: how far a split of this size pins them down."""
    dice = np.array([_num(r["dice"]) for r in fractured], dtype=float)
    pos_score = np.array([float(r["fracture_score"]) for r in fractured])
    neg_score = np.array([float(r["fracture_score"]) for r in negatives])
    pos_flag = np.array([bool(r["fracture_present"]) for r in fractured])
    neg_flag = np.array([bool(r["fracture_present"]) for r in negatives])
    detections = [np.asarray(r["_detections"], dtype=np.float64).reshape(-1, 2) for r in fractured]
    truths = np.array([int(r["gt_instances"]) for r in fractured])
    n_pos, n_neg = len(fractured), len(negatives)

    def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
        return roc_auc([*pos_score[pos], *neg_score[neg]], [1] * len(pos) + [0] * len(neg))

    def ap50(pos: np.ndarray, neg: np.ndarray) -> float:
        pooled = np.concatenate([detections[i] for i in pos]) if len(pos) else np.empty((0, 2))
        return average_precision(pooled, int(truths[pos].sum()))

    statistics = {
        "dice_mean": lambda pos, neg: float(np.nanmean(dice[pos])) if len(pos) else float("nan"),
        "auroc": auroc,
        "sensitivity": lambda pos, neg: float(pos_flag[pos].mean()) if len(pos) else float("nan"),
        "specificity": lambda pos, neg: float((~neg_flag[neg]).mean()) if len(neg) else float("nan"),
        "mask_ap50": ap50,
    }
    return {name: bootstrap_ci(fn, n_pos, n_neg, reps=reps) for name, fn in statistics.items()}


def calibrate(cases: list[Case], target_sensitivity: float = 0.85) -> dict[str, Any]:
    """Choose the decision rule on this split (use on valid only).

    Pixel threshold: best mean Dice on fractured images (score gate off). Minimum region size: the
    largest of :data:`CALIBRATION_MIN_REGIONS` whose mean Dice at that threshold is within
    :data:`MIN_REGION_DICE_TOLERANCE` of the best. Score summary and image threshold: best AUROC over
    :data:`CALIBRATION_TOP_PIXELS`, then the highest threshold at which the full decision (score gate and
    a surviving region) keeps sensitivity >= ``target_sensitivity`` (where no threshold does: the highest
    that reaches the largest sensitivity the model can give).
    """
    usable = [c for c in cases if c.probability is not None]
    fractured = [c for c in usable if c.row["fractured"]]
    dice_at = {}
    for t in CALIBRATION_THRESHOLDS:
        dice_at[t] = float(np.mean([pixel_metrics(c.probability >= t, c.truth)["dice"] for c in fractured]))
    threshold = max(dice_at, key=lambda t: (dice_at[t], -t))
    dice_by_region: dict[int, float] = {}
    for m in CALIBRATION_MIN_REGIONS:
        ungated = DecisionRule(threshold=threshold, score_threshold=0.0, min_region_pixels=m)
        kept = [decide(c.probability, ungated).mask for c in fractured]
        dice_by_region[m] = float(
            np.mean([pixel_metrics(k, c.truth)["dice"] for k, c in zip(kept, fractured, strict=True)])
        )
    floor = max(dice_by_region.values()) - MIN_REGION_DICE_TOLERANCE
    min_region = max(m for m, d in dice_by_region.items() if d >= floor)
    labels = [int(c.row["fractured"]) for c in usable]
    auroc_at = {}
    scores_at = {}
    for k in CALIBRATION_TOP_PIXELS:
        scores_at[k] = [fracture_score(c.probability, k) for c in usable]
        auroc_at[k] = roc_auc(scores_at[k], labels)
    top = max(auroc_at, key=lambda k: (np.nan_to_num(auroc_at[k], nan=-1.0), -k))
    # decide() reports a fracture only when the score passes the gate AND a region survives the pixel
    # threshold and the size filter; an image without such a region is negative at any image threshold,
    # so the threshold is chosen on that decision, not on the score alone (which overstates sensitivity
    # once the gate falls below the pixel threshold).
    ungated = DecisionRule(threshold=threshold, score_threshold=0.0, min_region_pixels=min_region)
    has_region = [bool(decide(c.probability, ungated).regions) for c in usable]

    def gate(scores: list[float], regions: list[bool]) -> float:
        decisive = [s if r else -np.inf for s, r in zip(scores, regions, strict=True)]
        return float(threshold_at_sensitivity(decisive, labels, target_sensitivity))

    return {
        "threshold": threshold,
        "min_region_pixels": int(min_region),
        "mean_dice_by_min_region_pixels": dice_by_region,
        "score_top_pixels": int(top),
        "score_threshold": gate(scores_at[top], has_region),
        "mean_dice_by_threshold": dice_at,
        "auroc_by_top_pixels": auroc_at,
        "target_sensitivity": target_sensitivity,
    }


def crossfit(
    cases: list[Case], folds: Sequence[int], view: str = "mirror", target_sensitivity: float = 0.85
) -> dict[str, Any]:
    """How well the rule :func:`calibrate` chooses does on images it was not chosen on: each image is
    decided by the rule chosen on the other folds (``folds[i]`` is ``cases[i]``'s fold; FracAtlas entries
    carry the hashed ``cv_fold``), and the pooled decisions are measured with 95 % bootstrap intervals, as
    ``fracseg evaluate --cv`` does for fold models (:func:`fracseg.evaluation.crossval.crossfit_folds`).
    ``view``: the name of the maps' test-time view (``mirror`` or ``plain``)."""
    from fracseg.evaluation.crossval import FoldCase, crossfit_folds

    fold_cases = []
    for case, fold in zip(cases, folds, strict=True):
        entry = {k: case.row.get(k, "") for k in ("image_id", "fractured", "body_part")}
        error = case.row.get("error") or ("" if case.probability is not None else "no probability map")
        maps = {view: case.probability} if not error else {}
        fold_cases.append(FoldCase(entry, int(fold), case.truth, case.instances, maps, error=error))
    used = sorted({int(f) for f in folds if int(f) >= 0})
    if len(used) < 2:
        raise DatasetError(f"cross-fitting needs images of at least two folds, got {used}")
    result = crossfit_folds(fold_cases, used, target_sensitivity, views=(view,))
    result.pop("rows")
    result.pop("cross_fitted_by_view")
    return {"folds": used, **result}


def evaluate(
    root: str | Path,
    split: str,
    out: str | Path,
    predictor: Predictor,
    prepared: str | Path | None = None,
    calibrate_rule: bool = False,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Evaluate ``predictor`` on ``split`` of the FracAtlas root; write rows, metrics and report to ``out``.

    Args:
        root: FracAtlas release layout (the full release with ``test.csv`` works unchanged).
        split: ``train``, ``valid`` or ``test``.
        out: output folder (``per_image.csv``, ``metrics.json``, ``report.md``/``report.html``, plots).
        predictor: the model and decision rule.
        prepared: where masks/datalist are prepared (default ``out/prepared``; reused when current).
        calibrate_rule: also choose the decision rule on this split and record it (valid only!).
        limit: score only the first ``limit`` fractured and ``limit`` non-fractured images (smoke runs).
        progress: ``callback(done, total)``.

    Returns:
        The metrics dictionary written to ``metrics.json``.
    """
    from fracseg.evaluation.report import write_report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    datalist_path = ensure_prepared(root, prepared or out / "prepared")
    datalist = json.loads(Path(datalist_path).read_text(encoding="utf-8"))
    entries = split_entries(datalist, split)
    if limit is not None:
        pos = [e for e in entries if e["fractured"]][:limit]
        neg = [e for e in entries if not e["fractured"]][:limit]
        entries = pos + neg
    polygons, _ = read_coco_polygons(root)
    cases = []
    started = time.perf_counter()
    for i, entry in enumerate(entries, start=1):
        cases.append(score_case(entry, split, predictor, polygons, keep_maps=calibrate_rule))
        if progress:
            progress(i, len(entries))
    metrics = aggregate(cases, predictor.rule)
    metrics.update(
        split=split,
        root=str(Path(root).resolve()),
        model=predictor.settings(),
        seconds=round(time.perf_counter() - started, 1),
        citation="FracAtlas (Abedeen et al., Sci Data 10:521, 2023), CC BY 4.0",
    )
    if calibrate_rule:
        metrics["calibration"] = calibrate(cases)
        view = "mirror" if predictor.mirror else "plain"
        folds = [int(e.get("cv_fold", -1)) for e in entries]
        metrics["calibration"]["crossfit"] = crossfit(cases, folds, view)
    write_csv_atomic(out / "per_image.csv", ROW_COLUMNS, (c.row for c in cases))
    write_json_atomic(out / "metrics.json", _jsonable(metrics))
    write_report(out, metrics, cases)
    return metrics


def _jsonable(value: Any) -> Any:
    """NaN/inf -> None and numpy scalars -> Python, so ``metrics.json`` is strict JSON."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
