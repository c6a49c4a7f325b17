"""Fitting the image-level head (:mod:`fracseg.networks.image_head`) on the training split.

The generator is frozen: its pooled deepest features and mask scores are extracted for the training
split's fractured and non-fractured images with the shipped pre-processing, precision and mirroring
(the two views' features averaged), then an L2-regularised logistic regression is fitted to them. Its L2
weight is chosen by stratified cross-validation (AUROC) on the training images only; the validation
split is not touched, so ``fracseg evaluate --split valid`` measures the head on images it never saw,
and ``--calibrate`` then chooses the image threshold on its scores as for any score.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fracseg.data import ensure_prepared, load_datalist
from fracseg.errors import FracsegError
from fracseg.evaluation.metrics import roc_auc
from fracseg.inference.predictor import DEFAULT_BUNDLE, DEFAULT_WEIGHTS, Predictor
from fracseg.networks.image_head import FeatureTap, ImageHead, save_image_head
from fracseg.precision import cpu_description

logger = logging.getLogger(__name__)

#: L2 weights tried by the cross-validation (on the mean log-loss, standardised features).
L2_GRID = (1e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0)
#: The training split's fractured images and its non-fractured fold (``fracseg prepare``'s datalist).
TRAIN_KEYS = ("training", "negatives_train")


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float) -> ImageHead:
    """Minimise mean log-loss + ``l2 * |w|^2`` over standardised ``x`` (float64, L-BFGS, deterministic)."""
    xt = torch.as_tensor(x, dtype=torch.float64)
    yt = torch.as_tensor(y, dtype=torch.float64)
    mean, std = xt.mean(0), xt.std(0, unbiased=False).clamp_min(1e-6)
    z = (xt - mean) / std
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=500,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, yt) + l2 * (w * w).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return ImageHead(mean, std, w.detach(), float(b.detach()))


def stratified_folds(y: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """Fold index per item: each class shuffled (fixed seed) and dealt round-robin."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(y), dtype=np.int64)
    for label in (0, 1):
        members = rng.permutation(np.flatnonzero(y == label))
        fold[members] = np.arange(len(members)) % folds
    return fold


def choose_l2(
    x: np.ndarray, y: np.ndarray, grid: Sequence[float] = L2_GRID, folds: int = 5, seed: int = 0
) -> tuple[float, dict[float, float]]:
    """The L2 weight with the best cross-validated AUROC (out-of-fold scores pooled); ties: stronger L2."""
    fold = stratified_folds(y, folds, seed)
    results = {}
    for l2 in grid:
        scores = np.zeros(len(y))
        for f in range(folds):
            train, held = fold != f, fold == f
            head = fit_logistic(x[train], y[train], l2)
            with torch.no_grad():
                scores[held] = head(torch.as_tensor(x[held])).numpy()
        results[float(l2)] = roc_auc(scores, y)
    best = max(results, key=lambda l2: (results[l2], l2))
    return best, results


def extract_features(
    predictor: Predictor, items: Sequence[dict[str, Any]], progress: Callable[[int, int], None] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Head features (views averaged when the predictor mirrors) and labels of ``items``; unreadable files
    are logged with the reason and left out. Returns ``(features, labels, image_ids)``."""
    tap = FeatureTap(predictor.network)
    margin, predictor.inferer.fp32_margin = predictor.inferer.fp32_margin, 0.0  # one pass per view
    features, labels, ids = [], [], []
    try:
        for n, item in enumerate(items, start=1):
            try:
                prepared = predictor.prepare(item["image"])
            except FracsegError as exc:
                logger.warning("%s: left out of the image head's fit: %s", item["image"], exc)
                continue
            tap.collected.clear()
            predictor.infer(prepared["image"].as_tensor()[None])
            features.append(torch.cat(tap.collected).mean(0).numpy())
            labels.append(int(item["fractured"]))
            ids.append(str(item.get("image_id", Path(item["image"]).stem)))
            if progress:
                progress(n, len(items))
    finally:
        tap.remove()
        predictor.inferer.fp32_margin = margin
    return np.asarray(features, dtype=np.float64), np.asarray(labels, dtype=np.int64), ids


def fit_image_head(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    prepared: str | os.PathLike[str],
    weights: str | os.PathLike[str] = DEFAULT_WEIGHTS,
    bundle: str | os.PathLike[str] = DEFAULT_BUNDLE,
    keys: Sequence[str] = TRAIN_KEYS,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Extract, cross-validate, fit on all of ``keys``' images and write the head to ``out`` (atomic).

    ``limit``: at most this many fractured and this many non-fractured images (smoke runs).
    Returns what was recorded in the file's ``info``.
    """
    datalist = ensure_prepared(root, prepared)
    items = load_datalist(datalist, list(keys))
    if limit is not None:
        fractured = [i for i in items if i["fractured"]][:limit]
        items = fractured + [i for i in items if not i["fractured"]][:limit]
    predictor = Predictor(weights=weights, bundle=bundle, image_head=False)
    if not predictor.trained:
        raise FracsegError(f"{weights}: no generator weights to fit an image head on")
    x, y, _ = extract_features(predictor, items, progress)
    if len(set(y.tolist())) < 2:
        raise FracsegError("the image head needs fractured and non-fractured images")
    l2, cv = choose_l2(x, y)
    head = fit_logistic(x, y, l2)
    with torch.no_grad():
        train_auroc = roc_auc(head(torch.as_tensor(x)).numpy(), y)
    info = {
        "keys": list(keys),
        "images": len(y),
        "fractured": int(y.sum()),
        "l2": l2,
        "cv_auroc_by_l2": cv,
        "cv_auroc": cv[l2],
        "train_auroc": train_auroc,
        "precision": predictor.precision.name,
        "mirror": predictor.mirror,
        "hardware": cpu_description(),
        "citation": "FracAtlas (Abedeen et al., Sci Data 10:521, 2023), CC BY 4.0",
    }
    save_image_head(out, head, predictor.weights_sha256, info)
    logger.info("image head: L2 %g, cross-validated AUROC %.3f, written to %s", l2, cv[l2], out)
    return info
