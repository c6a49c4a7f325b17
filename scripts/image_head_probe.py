"""Could an image-level head on the generator's own features lift the image-level AUROC?

A probe, not a shipped component: the generator's deepest features (the output of the UNet's innermost
skip connection, 1/16 of the 512x512 letterbox) are pooled over the image (mean and max per channel)
and, with the segmentation score (mean of the top-256 probabilities, as ``fracture_score``) and the
maximum probability, fed to an L2-regularised logistic regression. It is fitted on the training split's
fractured and non-fractured images, its L2 weight chosen by 5-fold cross-validation on those images
only, and scored on the valid split's fractured images and held-out negatives (as ``fracseg evaluate``
pairs them). The segmentation score alone is scored the same way for comparison.

Single view (no mirroring), the shipped precision, the shipped weights unless ``--weights``::

    OMP_NUM_THREADS=1 python scripts/image_head_probe.py ../shared/data/fracatlas --prepared runs/prepared \
        [--weights bundle/models/model.pt] [--cache runs/probe_features.npz]

Prints a table of valid AUROCs with 95 % bootstrap intervals. The head sees the whole image, so it can
learn acquisition or body-part priors of the development subset as well as fracture evidence; the
withheld test split is drawn from the same release, but this is why the docs call it a probe.
FracAtlas (CC BY 4.0): Abedeen et al., Scientific Data 10, 521 (2023).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch

from fracseg.data import ensure_prepared, load_datalist
from fracseg.evaluation.metrics import bootstrap_ci, roc_auc
from fracseg.inference import DEFAULT_BUNDLE, DEFAULT_WEIGHTS, Predictor
from fracseg.inference.decision import fracture_score
from fracseg.networks.generator import with_empty_guidance
from fracseg.precision import cpu_description

logger = logging.getLogger("image_head_probe")

SPLITS = {"train": ("training", "negatives_train"), "valid": ("validation", "negatives_valid")}
L2_GRID = (1e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0)
SCORE_TOP_PIXELS = 256


def deepest_module(network: torch.nn.Module, side: int) -> torch.nn.Module:
    """The module whose output has the smallest spatial size (the most channels among ties)."""
    found: list[tuple[int, int, int, torch.nn.Module]] = []
    hooks = [
        m.register_forward_hook(lambda m, i, o, n=n: found.append((o.shape[-1], -o.shape[1], n, m)))
        for n, m in enumerate(network.modules())
        if m is not network
    ]
    with torch.inference_mode():
        network(torch.zeros(1, 3, side, side))
    for h in hooks:
        h.remove()
    return min(found, key=lambda t: t[:3])[3]


def extract(predictor: Predictor, items: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Per image: pooled deepest features, the top-256 score and the maximum probability; and the label."""
    network = predictor.network
    captured: dict[str, torch.Tensor] = {}
    deepest_module(network, predictor.spatial_size).register_forward_hook(
        lambda m, i, o: captured.__setitem__("features", o)
    )
    rows, labels = [], []
    for n, item in enumerate(items):
        image = predictor.prepare(item["image"])["image"].as_tensor()[None]
        batch = predictor.precision.prepare_input(with_empty_guidance(image, 3))
        with torch.inference_mode():
            prob = torch.sigmoid(predictor.precision.forward(network, batch)).numpy()[0, 0]
        feats = captured["features"].float()
        pooled = torch.cat([feats.mean((2, 3)), feats.amax((2, 3))], dim=1).numpy()[0]
        rows.append(np.concatenate([pooled, [fracture_score(prob, SCORE_TOP_PIXELS), float(prob.max())]]))
        labels.append(int(item["fractured"]))
        if (n + 1) % 100 == 0:
            logger.info("%d of %d images", n + 1, len(items))
    return np.stack(rows).astype(np.float64), np.asarray(labels)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """L2-regularised logistic regression on standardised features: weights, bias, mean, scale."""
    mean, scale = x.mean(0), x.std(0) + 1e-6
    a = torch.tensor((x - mean) / scale)
    t = torch.tensor(y, dtype=torch.float64)
    w = torch.zeros(a.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(a @ w + b, t) + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), float(b.item()), mean, scale


def predict(model: tuple[np.ndarray, float, np.ndarray, np.ndarray], x: np.ndarray) -> np.ndarray:
    w, b, mean, scale = model
    return ((x - mean) / scale) @ w + b


def choose_l2(
    x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0
) -> tuple[float, dict[float, float]]:
    """The L2 weight with the best cross-validated AUROC on the training images."""
    fold = np.random.default_rng(seed).permutation(len(y)) % folds
    results = {}
    for l2 in L2_GRID:
        out = np.zeros(len(y))
        for k in range(folds):
            model = fit_logistic(x[fold != k], y[fold != k], l2)
            out[fold == k] = predict(model, x[fold == k])
        results[l2] = roc_auc(out, y)
    return max(results, key=results.get), results


def auroc_with_ci(scores: np.ndarray, labels: np.ndarray) -> str:
    pos, neg = scores[labels == 1], scores[labels == 0]

    def stat(p: np.ndarray, n: np.ndarray) -> float:
        return roc_auc(np.concatenate([pos[p], neg[n]]), [1] * len(p) + [0] * len(n))

    low, high = bootstrap_ci(stat, len(pos), len(neg))
    return f"{roc_auc(scores, labels):.3f} ({low:.3f}–{high:.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="FracAtlas root (release layout)")
    parser.add_argument("--prepared", type=Path, default=Path("runs/prepared"))
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--cache", type=Path, default=None, help="features .npz (read if present)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.cache is not None and args.cache.exists():
        data = dict(np.load(args.cache))
    else:
        datalist = ensure_prepared(args.root, args.prepared)
        predictor = Predictor(weights=args.weights, bundle=args.bundle, mirror=False)
        data = {}
        for split, keys in SPLITS.items():
            data[f"{split}_x"], data[f"{split}_y"] = extract(predictor, load_datalist(datalist, list(keys)))
        if args.cache is not None:
            args.cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(args.cache, **data)
    xt, yt, xv, yv = data["train_x"], data["train_y"], data["valid_x"], data["valid_y"]
    n_feat = xt.shape[1] - 2
    print(
        f"\nweights {args.weights}; {cpu_description()}; train {len(yt)} images ({int(yt.sum())} fractured), "
        f"valid {len(yv)} ({int(yv.sum())} fractured); {n_feat} pooled features\n"
    )
    print("| image score | L2 (5-fold CV on train) | valid AUROC (95 % CI) |")
    print("|---|---:|---|")
    print(f"| segmentation score alone (top-256 mean) | – | {auroc_with_ci(xv[:, n_feat], yv)} |")
    for name, cols in (
        ("logistic: top-256 score + max probability", [n_feat, n_feat + 1]),
        ("logistic: pooled features only", list(range(n_feat))),
        ("logistic: pooled features + both scores", list(range(n_feat + 2))),
    ):
        l2, _ = choose_l2(xt[:, cols], yt)
        model = fit_logistic(xt[:, cols], yt, l2)
        print(f"| {name} | {l2:g} | {auroc_with_ci(predict(model, xv[:, cols]), yv)} |")


if __name__ == "__main__":
    main()
