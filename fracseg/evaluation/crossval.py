"""Cross-fitted figures of k-fold cross-validation over train+valid (``fracseg evaluate --cv``).

Each fold's model (``<cv_dir>/fold<k>``, trained by ``bundle/configs/train_cv.json`` on the other folds)
predicts its held-out fold once, with and without the left-right mirror. Every choice is then made on
folds other than the one it is measured on:

- for each fold ``k`` and each view (``plain``: one network pass; ``mirror``: two), the decision rule
  (pixel threshold, minimum region, score summary, image threshold at the target sensitivity) is chosen
  by :func:`fracseg.evaluation.evaluate.calibrate` on the out-of-fold predictions of the other folds;
- the view is chosen for fold ``k`` on those same other folds (best mean Dice plus AUROC there);
- fold ``k``'s images are decided by its own rule and view. The pooled rows are the cross-fitted
  figures, with 95 % bootstrap intervals (:func:`fracseg.evaluation.evaluate.aggregate`).

The release rule (for weights trained on all folds) is chosen the same way on all out-of-fold
predictions; its own figures are never reported, only the cross-fitted ones of the protocol.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fracseg.data.fracatlas import CV_FOLDS, ensure_prepared, read_coco_polygons
from fracseg.engines.resume import checkpoints_newest_first
from fracseg.errors import DatasetError, FracsegError
from fracseg.evaluation.evaluate import (
    ROW_COLUMNS,
    Case,
    _jsonable,
    aggregate,
    calibrate,
    measure_decision,
    polygon_instances,
)
from fracseg.inference.decision import DecisionRule, decide
from fracseg.inference.predictor import Predictor
from fracseg.io import atomic_path, read_xray, write_csv_atomic, write_json_atomic

logger = logging.getLogger(__name__)

VIEWS = ("plain", "mirror")
#: network passes per image of each view
PASSES = {"plain": 1, "mirror": 2}


@dataclass
class FoldCase:
    """One held-out image: its truth and its fold model's probability maps (float16) per view."""

    entry: dict[str, Any]
    fold: int
    truth: np.ndarray
    instances: list[np.ndarray]
    maps: dict[str, np.ndarray]
    error: str = ""

    def case(self, view: str) -> Case:
        """A :class:`Case` of one view, as :func:`calibrate` expects."""
        row: dict[str, Any] = {c: "" for c in ROW_COLUMNS}
        row.update(
            image_id=self.entry["image_id"],
            split=f"cv_fold{self.fold}",
            fractured=int(self.entry["fractured"]),
            body_part=self.entry.get("body_part", "unknown"),
            error=self.error,
        )
        probability = self.maps[view].astype(np.float32) if not self.error else None
        return Case(row=row, probability=probability, truth=self.truth, instances=self.instances)


def fold_weights(cv_dir: str | Path, fold: int) -> Path:
    """The fold model of fold ``fold``: its exported last epoch ``fold<k>/model.pt`` (written by
    ``scripts/train_cv.py`` once the fold's last stage has finished; nothing is chosen on the held-out fold),
    or, without one, the newest checkpoint in ``fold<k>/checkpoints`` (a fold trained by hand)."""
    found = _fold_weights_if_any(cv_dir, fold)
    if found is None:
        folder = Path(cv_dir) / f"fold{fold}" / "checkpoints"
        raise DatasetError(f"{folder}: no checkpoint; train the fold first (scripts/train_cv.py)")
    return found


def _fold_weights_if_any(cv_dir: str | Path, fold: int) -> Path | None:
    exported = Path(cv_dir) / f"fold{fold}" / "model.pt"
    if exported.is_file():
        return exported
    newest = checkpoints_newest_first(Path(cv_dir) / f"fold{fold}" / "checkpoints")
    return newest[0] if newest else None


def rule_of(chosen: dict[str, Any]) -> DecisionRule:
    """The :class:`DecisionRule` of a :func:`calibrate` result."""
    return DecisionRule(
        threshold=chosen["threshold"],
        score_threshold=chosen["score_threshold"],
        score_top_pixels=chosen["score_top_pixels"],
        min_region_pixels=chosen["min_region_pixels"],
    )


def view_merit(chosen: dict[str, Any]) -> float:
    """How a view is chosen on the folds it is calibrated on: best mean Dice plus best AUROC there."""
    dice = max(chosen["mean_dice_by_threshold"].values())
    auroc = max(np.nan_to_num(v, nan=0.0) for v in chosen["auroc_by_top_pixels"].values())
    return float(dice + auroc)


def _load_cached(path: Path, weights_sha256: str, ids: list[str]) -> dict[str, Any] | None:
    """A fold's saved maps when they were made by the same weights for the same images, else ``None``."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as saved:
            meta = json.loads(str(saved["meta"]))
            if meta.get("weights_sha256") != weights_sha256 or meta.get("ids") != ids:
                return None
            return {"errors": meta["errors"], **{k: saved[k] for k in saved.files if k != "meta"}}
    except (OSError, ValueError, KeyError) as exc:
        logger.warning("%s: not reused (%s)", path, exc)
        return None


def _save_cached(path: Path, weights_sha256: str, ids: list[str], cases: list[FoldCase]) -> None:
    arrays = {f"{c.entry['image_id']}__{v}": c.maps[v] for c in cases if not c.error for v in VIEWS}
    errors = {c.entry["image_id"]: c.error for c in cases if c.error}
    meta = json.dumps({"weights_sha256": weights_sha256, "ids": ids, "errors": errors})
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, meta=np.array(meta), **arrays)


@torch.inference_mode()
def predict_fold(
    predictor: Predictor,
    entries: list[dict[str, Any]],
    fold: int,
    polygons: dict,
    progress: Callable | None,
    cache: Path | None = None,
) -> list[FoldCase]:
    """Both views' probability maps of each held-out image (two network passes: image and mirror).

    ``cache``: an ``.npz`` where the maps are kept, keyed by the weights' SHA-256 and the image ids, so that
    adding a fold later (or a killed evaluation) does not predict the finished folds again."""
    ids = [e["image_id"] for e in entries]
    saved = _load_cached(cache, predictor.weights_sha256, ids) if cache is not None else None
    if saved is not None:
        logger.info("fold %d: out-of-fold maps reused from %s (same weights, same images)", fold, cache)
    cases = []
    for entry in entries:
        truth = read_xray(entry["label"]).array > 0
        if saved is not None:
            image_id = entry["image_id"]
            if image_id in saved["errors"]:
                cases.append(FoldCase(entry, fold, truth, [], {}, error=saved["errors"][image_id]))
            else:
                maps = {v: saved[f"{image_id}__{v}"] for v in VIEWS}
                instances = polygon_instances(polygons, image_id, truth.shape)
                cases.append(FoldCase(entry, fold, truth, instances, maps))
            continue
        try:
            prepared = predictor.prepare(entry["image"])
        except FracsegError as exc:
            cases.append(FoldCase(entry, fold, truth, [], {}, error=str(exc)))
            continue
        x = prepared["image"].as_tensor()[None]
        shape = [tuple(prepared["original"].shape[-2:])]
        plain = predictor.infer(x, shape)[0]
        flipped = predictor.infer(x.flip(-1), shape)[0].flip(-1)
        maps = {
            "plain": predictor.finish(prepared, plain).probability,
            "mirror": predictor.finish(prepared, (plain + flipped) / 2).probability,
        }
        if truth.shape != maps["plain"].shape:
            cases.append(FoldCase(entry, fold, truth, [], {}, error="mask and prediction differ in size"))
            continue
        instances = polygon_instances(polygons, entry["image_id"], truth.shape)
        cases.append(
            FoldCase(entry, fold, truth, instances, {k: v.astype(np.float16) for k, v in maps.items()})
        )
        if progress:
            progress()
    if cache is not None and saved is None:
        _save_cached(cache, predictor.weights_sha256, ids, cases)
    return cases


def decide_fold(cases: list[FoldCase], view: str, rule: DecisionRule) -> list[Case]:
    """Rows of ``cases`` decided by ``rule`` on ``view``'s maps."""
    out = []
    for fc in cases:
        case = fc.case(view)
        if not fc.error:
            measure_decision(case.row, decide(case.probability, rule), fc.truth, fc.instances)
        case.probability = None
        out.append(case)
    return out


def crossfit_folds(
    cases: list[FoldCase],
    folds: list[int],
    target_sensitivity: float = 0.85,
    views: tuple[str, ...] = VIEWS,
) -> dict[str, Any]:
    """Cross-fitted figures: for each fold, rule and view (one of ``views``, whose maps every case holds)
    chosen on the other folds, measured on it."""
    chosen: dict[int, dict[str, Any]] = {}
    rows_by_view: dict[str, list[Case]] = {v: [] for v in views}
    rows_chosen: list[Case] = []
    for fold in folds:
        others = [c for c in cases if c.fold != fold and not c.error]
        held = [c for c in cases if c.fold == fold]
        per_view = {}
        for view in views:
            per_view[view] = calibrate([c.case(view) for c in others], target_sensitivity)
            rows_by_view[view].extend(decide_fold(held, view, rule_of(per_view[view])))
        view = max(views, key=lambda v: (view_merit(per_view[v]), -PASSES[v]))
        rows_chosen.extend(
            [c for c in rows_by_view[view][-len(held) :]]  # the rows just decided with the chosen view
        )
        chosen[fold] = {"view": view, **{v: _rule_summary(per_view[v]) for v in views}}
        logger.info("fold %d: view %s, rule %s", fold, view, rule_of(per_view[view]).to_dict())
    result = {
        "protocol": "rule and view chosen on the other folds' out-of-fold predictions",
        "choices": chosen,
        "cross_fitted": aggregate(rows_chosen, DecisionRule()),
        "cross_fitted_by_view": {v: aggregate(rows_by_view[v], DecisionRule()) for v in views},
    }
    for block in [result["cross_fitted"], *result["cross_fitted_by_view"].values()]:
        block.pop("rule", None)
        block["image"]["specificity_at_target_sensitivity"] = block["image"]["specificity"]
    result["rows"] = rows_chosen
    return result


def _rule_summary(chosen: dict[str, Any]) -> dict[str, Any]:
    keys = ("threshold", "min_region_pixels", "score_top_pixels", "score_threshold")
    return {k: chosen[k] for k in keys} | {"merit": view_merit(chosen)}


def release_rule(cases: list[FoldCase], target_sensitivity: float = 0.85) -> dict[str, Any]:
    """The rule and view for weights trained on all folds, chosen on every out-of-fold prediction."""
    usable = [c for c in cases if not c.error]
    per_view = {v: calibrate([c.case(v) for c in usable], target_sensitivity) for v in VIEWS}
    view = max(VIEWS, key=lambda v: (view_merit(per_view[v]), -PASSES[v]))
    return {"mirror": view == "mirror", **rule_of(per_view[view]).to_dict(), "view": view}


def evaluate_cv(
    root: str | Path,
    cv_dir: str | Path,
    out: str | Path,
    folds: list[int] | None = None,
    prepared: str | Path | None = None,
    limit: int | None = None,
    device: str = "cpu",
    bundle: str | Path | None = None,
    progress: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Predict each fold's held-out images with its fold model and write the cross-fitted figures.

    Args:
        root: FracAtlas release layout (the full release works unchanged; its test split is never used).
        cv_dir: the folder ``scripts/train_cv.py`` trained into (``fold0`` .. ``fold4``).
        out: output folder: ``metrics.json`` (cross-fitted figures, choices, release rule),
            ``per_image.csv`` (every held-out image, decided by its fold's rule and view) and
            ``out_of_fold/fold<k>.npz`` (the maps, reused while the fold's weights are the same).
        folds: the folds to use (default: every fold with a checkpoint or ``model.pt``); fewer than all is
            reported as such.
        prepared: the preparation the folds were trained from (default ``<cv_dir>/prepared``).
        limit: first ``limit`` fractured and ``limit`` non-fractured images per fold (smoke runs).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    datalist_path = ensure_prepared(root, prepared or Path(cv_dir) / "prepared")
    datalist = json.loads(Path(datalist_path).read_text(encoding="utf-8"))
    if folds is None:
        folds = [k for k in range(CV_FOLDS) if _fold_weights_if_any(cv_dir, k) is not None]
    if len(folds) < 2:
        raise DatasetError(f"{cv_dir}: cross-fitting needs at least two trained folds, found {folds}")
    polygons, _ = read_coco_polygons(root)
    started = time.perf_counter()
    cases: list[FoldCase] = []
    models = {}
    for fold in folds:
        weights = fold_weights(cv_dir, fold)
        models[fold] = weights.name
        kwargs: dict[str, Any] = {"weights": weights, "device": device, "mirror": False}
        if bundle is not None:
            kwargs["bundle"] = bundle
        predictor = Predictor(**kwargs)
        entries = list(datalist[f"cv_fold{fold}"])
        if limit is not None:
            entries = [e for e in entries if e["fractured"]][:limit] + [
                e for e in entries if not e["fractured"]
            ][:limit]
        logger.info("fold %d: %d held-out images, weights %s", fold, len(entries), weights)
        cache = out / "out_of_fold" / f"fold{fold}.npz"
        cases.extend(predict_fold(predictor, entries, fold, polygons, progress, cache))
    predicted = time.perf_counter() - started
    result = crossfit_folds(cases, folds)
    rows = result.pop("rows")
    metrics = {
        "folds": folds,
        "complete": len(folds) == CV_FOLDS,
        "fold_checkpoints": models,
        "images": {f"cv_fold{k}": sum(c.fold == k for c in cases) for k in folds},
        **result,
        "release_rule": release_rule(cases),
        "predict_seconds": round(predicted, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "citation": "FracAtlas (Abedeen et al., Sci Data 10:521, 2023), CC BY 4.0",
    }
    write_csv_atomic(out / "per_image.csv", ROW_COLUMNS, (c.row for c in rows))
    write_json_atomic(out / "metrics.json", _jsonable(metrics))
    return metrics
