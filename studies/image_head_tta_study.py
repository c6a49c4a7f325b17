"""Would more test-time views lift the image head's ranking (issue 13: specificity >= 0.60 at sensitivity
>= 0.85 on valid)?

The study that chose bundle 0.10.0's ``head_views`` (its "all five" set). The shipped generator with
its shipped image head and mirroring (:class:`fracseg.inference.Predictor`, the shipped precision, the
inferer's own :func:`fracseg.inference.inferer.affine_view`, head views off) scores every valid image
(fractured images and held-out negatives, as ``fracseg evaluate`` pairs them) under several geometric
views of the letterboxed input, within the training augmentation's ranges (rotation up to 15 degrees,
scale 0.9-1.1; training flips left-right only, which mirroring already covers). A view set's score is the
mean of its views' head probabilities. The table gives each set's valid AUROC, the specificity its score
alone reaches at sensitivity >= 0.85 (the rule lets the head decide alone since 0.9.0), the paired AUROC
difference to the image's own view (0.9.0's score) with its 95 % bootstrap interval, and the network
passes per image::

    python studies/image_head_tta_study.py ../shared/data/fracatlas --prepared runs/prepared \
        [--cache runs/tta_views.npz]

The view sets are compared on valid, which also chooses the rule's thresholds, so a gain here is an
optimistic estimate. FracAtlas (CC BY 4.0): Abedeen et al., Scientific Data 10, 521 (2023).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from fracseg.data import ensure_prepared, load_datalist
from fracseg.evaluation.metrics import paired_auroc_difference_ci, roc_auc, specificity_at_sensitivity
from fracseg.inference import DEFAULT_BUNDLE, DEFAULT_WEIGHTS, Predictor
from fracseg.inference.inferer import affine_view
from fracseg.precision import cpu_description

logger = logging.getLogger("image_head_tta_study")

#: name -> (rotation in degrees, scale); "identity" is the image's own view (all that 0.9.0 used).
VIEWS: dict[str, tuple[float, float]] = {
    "identity": (0.0, 1.0),
    "rot+8": (8.0, 1.0),
    "rot-8": (-8.0, 1.0),
    "scale0.9": (0.0, 0.9),
    "scale1.1": (0.0, 1.1),
}
VIEW_SETS = {
    "identity (0.9.0)": ("identity",),
    "identity + rot±8": ("identity", "rot+8", "rot-8"),
    "identity + scale 0.9/1.1": ("identity", "scale0.9", "scale1.1"),
    "all five (0.10.0)": tuple(VIEWS),
}
TARGET_SENSITIVITY = 0.85


def head_probabilities(predictor: Predictor, items: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """``(images, views)`` head probabilities and the labels."""
    probabilities, labels = [], []
    for n, item in enumerate(items, start=1):
        image = predictor.prepare(item["image"])["image"].as_tensor()[None].float()
        row = []
        for degrees, scale in VIEWS.values():
            out = predictor.infer(affine_view(image, degrees, scale))
            row.append(float(out[0, 1].mean()))
        probabilities.append(row)
        labels.append(int(item["fractured"]))
        if n % 50 == 0:
            logger.info("%d of %d images", n, len(items))
    return np.asarray(probabilities), np.asarray(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="FracAtlas root (release layout)")
    parser.add_argument("--prepared", type=Path, default=Path("runs/prepared"))
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--cache", type=Path, default=None, help="per-view scores .npz (read if present)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.cache is not None and args.cache.exists():
        data = np.load(args.cache)
        probabilities, labels = data["probabilities"], data["labels"]
    else:
        datalist = ensure_prepared(args.root, args.prepared)
        predictor = Predictor(weights=args.weights, bundle=args.bundle, head_views=False)
        if predictor.image_head_sha256 is None:
            raise SystemExit("the study needs the bundle's image head fitted for these weights")
        predictor.inferer.fp32_margin = 0.0  # every view in the shipped precision, no fp32 re-check
        items = load_datalist(datalist, ["validation", "negatives_valid"])
        probabilities, labels = head_probabilities(predictor, items)
        if args.cache is not None:
            np.savez(args.cache, probabilities=probabilities, labels=labels, views=list(VIEWS))
    names = list(VIEWS)
    own = probabilities[:, names.index("identity")]
    print(
        f"\nweights {args.weights}; {cpu_description()}; valid {len(labels)} images "
        f"({int(labels.sum())} fractured); mirroring on (2 passes per view)\n"
    )
    print(
        f"| views | passes per image | valid AUROC | specificity at sensitivity ≥ {TARGET_SENSITIVITY} "
        "| AUROC minus the identity view's (paired 95 % CI) |"
    )
    print("|---|---:|---:|---:|---|")
    for name, views in VIEW_SETS.items():
        score = probabilities[:, [names.index(v) for v in views]].mean(axis=1)
        spec, _ = specificity_at_sensitivity(score, labels, TARGET_SENSITIVITY)
        auroc = roc_auc(score, labels)
        low, high = paired_auroc_difference_ci(score, own, labels)
        diff = auroc - roc_auc(own, labels)
        row = f"| {name} | {2 * len(views)} | {auroc:.3f} | {spec:.3f}"
        print(f"{row} | {diff:+.3f} ({low:+.3f} to {high:+.3f}) |")
    for n, name in enumerate(names):
        score = probabilities[:, n]
        spec, _ = specificity_at_sensitivity(score, labels, TARGET_SENSITIVITY)
        print(f"| {name} alone | 2 | {roc_auc(score, labels):.3f} | {spec:.3f} | |")


if __name__ == "__main__":
    main()
