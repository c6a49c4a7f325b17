"""Would a learned image-level score beat the shipped ``fracture_score`` (mean of the top-k probabilities)?

Predicts the valid split (fractured + held-out negatives) with the shipped model, computes simple
features of each probability map, prints each feature's AUROC and the cross-validated AUROC of a
logistic regression on them (5-fold, 5 shuffles), once with and once without the image's size and
aspect ratio. Those two describe the acquisition, not the anatomy: in FracAtlas most fractured images
are 373x454 or 454x373, so a score that uses them learns a shortcut that will not carry over to other
sites' radiographs. Needs scikit-learn (a test extra)::

    python studies/image_score_study.py [--root ../shared/data/fracatlas]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fracseg.data import ensure_prepared, load_datalist  # noqa: E402
from fracseg.evaluation.metrics import roc_auc  # noqa: E402
from fracseg.inference import Predictor  # noqa: E402

TOP_K = (1, 16, 64, 256, 1024, 4096, 16384)
FRACTIONS = (0.5, 0.6, 0.7, 0.8)
ACQUISITION = ("pixels", "aspect")


def features(probability: np.ndarray) -> dict[str, float]:
    flat = np.sort(probability.ravel())[::-1]
    out = {f"top{k}": float(flat[:k].mean()) for k in TOP_K}
    out.update({f"fraction>{t}": float((probability > t).mean()) for t in FRACTIONS})
    labels, n = ndimage.label(probability > 0.6)
    largest = int(np.bincount(labels.ravel())[1:].max()) if n else 0
    out.update(
        regions=float(n),
        largest_region=float(largest),
        largest_region_fraction=largest / probability.size,
        mean=float(probability.mean()),
        pixels=float(probability.size),
        aspect=probability.shape[0] / probability.shape[1],
    )
    return out


def cross_validated_auroc(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    signed_log = np.log1p(np.abs(x)) * np.sign(x)
    aucs = []
    for seed in range(5):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
        folds = StratifiedKFold(5, shuffle=True, random_state=seed)
        scores = cross_val_predict(model, signed_log, y, cv=folds, method="predict_proba")[:, 1]
        aucs.append(roc_auc(scores.tolist(), y.tolist()))
    return float(np.mean(aucs)), float(np.std(aucs))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "fracatlas"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        datalist = ensure_prepared(args.root, tmp)
        cases = [(it, 1) for it in load_datalist(datalist, ["validation"])]
        cases += [(it, 0) for it in load_datalist(datalist, ["negatives_valid"])]
    predictor = Predictor()
    rows = [features(predictor.predict(item["image"]).probability) for item, _ in cases]
    y = np.array([label for _, label in cases])
    names = list(rows[0])
    x = np.array([[r[n] for n in names] for r in rows])
    print(f"valid: {int(y.sum())} fractured + {int((1 - y).sum())} non-fractured images\n")
    print("| feature | AUROC |\n|---|---:|")
    for i, name in enumerate(names):
        print(f"| {name} | {roc_auc(x[:, i].tolist(), y.tolist()):.3f} |")
    anatomy = [i for i, n in enumerate(names) if n not in ACQUISITION]
    print("\n| logistic regression on | 5-fold CV AUROC (mean ± sd over 5 shuffles) |\n|---|---:|")
    for label, cols in (("all features", list(range(len(names)))), ("without size and aspect", anatomy)):
        mean, sd = cross_validated_auroc(x[:, cols], y)
        print(f"| {label} | {mean:.3f} ± {sd:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
