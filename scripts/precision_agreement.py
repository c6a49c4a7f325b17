"""bf16 against fp32 inference on a FracAtlas split: mask Dice between the two, decisions, scores.

    python scripts/precision_agreement.py ../shared/data/fracatlas --split valid [--bundle bundle/]

Uses the fractured images of the split and the held-out negatives of the same fold (as
``fracseg evaluate`` does) and prints the worst and mean agreement as a table, plus the images below the
thresholds the docs promise (mask Dice >= 0.99, the same decision, scores within 0.01).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from fracseg.data import ensure_prepared, load_datalist
from fracseg.data.fracatlas import SPLITS
from fracseg.evaluation.agreement import compare_predictors, summarize_agreement
from fracseg.inference import DEFAULT_BUNDLE, Predictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="FracAtlas root (release layout)")
    parser.add_argument("--split", default="valid", choices=sorted(SPLITS))
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--limit", type=int, default=None, help="first N images")
    args = parser.parse_args()
    prepared = Path(tempfile.gettempdir()) / "fracseg-agreement-prepared"
    items = load_datalist(
        ensure_prepared(args.root, prepared), [SPLITS[args.split], f"negatives_{args.split}"]
    )[: args.limit]
    weights = args.bundle / "models" / "model.pt"
    fp32 = Predictor(weights=weights, bundle=args.bundle, precision="fp32")
    bf16 = Predictor(weights=weights, bundle=args.bundle, precision="bf16")
    rows = compare_predictors([it["image"] for it in items], fp32, bf16)
    summary = summarize_agreement(rows)
    print(f"\nbf16 vs fp32 inference, {args.split} split, {summary['images']} images ({weights})\n")
    print("| mask Dice min | mask Dice mean | decisions differ | max score diff. | max prob. diff. |")
    print("|---:|---:|---:|---:|---:|")
    print(
        f"| {summary['mask_dice_min']:.4f} | {summary['mask_dice_mean']:.4f} | {summary['decisions_differ']} "
        f"| {summary['score_difference_max']:.4f} | {summary['probability_difference_max']:.4f} |"
    )

    def kept(r: dict) -> bool:
        same = r["present"][0] == r["present"][1]
        return r["mask_dice"] >= 0.99 and same and abs(r["score"][0] - r["score"][1]) <= 0.01

    off = [r for r in rows if not kept(r)]
    for r in off:
        print(f"outside the promise: {Path(r['image']).name}: {r}")
    print(
        f"\nimages re-computed in fp32 by the bf16 predictor (score within {bf16.inferer.fp32_margin} of the "
        f"image threshold {bf16.rule.score_threshold} on the top-pixel score): "
        f"{bf16.inferer.rechecked} of {summary['images']}"
    )


if __name__ == "__main__":
    main()
