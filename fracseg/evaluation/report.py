"""Evaluation report: ROC curve, Dice histogram, best/median/worst overlays, Markdown and HTML."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from fracseg.evaluation.metrics import roc_curve
from fracseg.io import atomic_path

if TYPE_CHECKING:
    from fracseg.evaluation.evaluate import Case

GRID_PER_GROUP = 4


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def format_interval(intervals: dict[str, Any], key: str) -> str:
    """``low–high`` of a bootstrap interval from ``metrics['ci95']`` (``n/a`` when absent)."""
    low, high = intervals.get(key) or (None, None)
    return "n/a" if low is None or high is None else f"{_fmt(low)}–{_fmt(high)}"


def _save_figure(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def _plots(out: Path, metrics: dict[str, Any], cases: list[Case]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [c.row for c in cases if not c.row["error"]]
    written = []
    labels = [int(r["fractured"]) for r in rows]
    if 0 < sum(labels) < len(labels):
        fpr, tpr, _ = roc_curve([float(r["fracture_score"]) for r in rows], labels)
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.plot(fpr, tpr, lw=2, label=f"AUROC {_fmt(metrics['image']['auroc'])}")
        ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
        sens, spec = metrics["image"]["sensitivity"], metrics["image"]["specificity"]
        if math.isfinite(sens) and math.isfinite(spec):
            ax.scatter([1 - spec], [sens], c="red", zorder=3, label="shipped threshold")
        ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"Image level, {metrics['split']}")
        ax.legend(loc="lower right")
        _save_figure(fig, out / "roc.png")
        plt.close(fig)
        written.append("roc.png")
    dice = [float(r["dice"]) for r in rows if r["fractured"]]
    if dice:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.hist(dice, bins=np.linspace(0, 1, 21), color="tab:blue", edgecolor="white")
        ax.set(xlabel="Dice per fractured image", ylabel="images", title=f"Dice, {metrics['split']}")
        _save_figure(fig, out / "dice_hist.png")
        plt.close(fig)
        written.append("dice_hist.png")
    return written


def _grid(out: Path, cases: list[Case]) -> str | None:
    """Best, median and worst fractured images by Dice, side by side (green truth, red prediction)."""
    ranked = sorted(
        (c for c in cases if c.thumbnail is not None and not c.row["error"]),
        key=lambda c: -float(c.row["dice"]),
    )
    if not ranked:
        return None
    n = min(GRID_PER_GROUP, len(ranked))
    mid = max(0, len(ranked) // 2 - n // 2)
    groups = [ranked[:n], ranked[mid : mid + n], ranked[-n:]]
    size = max(max(c.thumbnail.shape[:2]) for c in ranked)
    canvas = np.zeros((3 * size, n * size, 3), dtype=np.uint8)
    for g, group in enumerate(groups):
        for i, case in enumerate(group):
            h, w = case.thumbnail.shape[:2]
            canvas[g * size : g * size + h, i * size : i * size + w] = case.thumbnail
    with atomic_path(out / "overlays_grid.png") as tmp:
        Image.fromarray(canvas).save(tmp, format="PNG")
    return "overlays_grid.png"


def markdown(metrics: dict[str, Any], figures: list[str], grid: str | None) -> str:
    """The report text (Markdown)."""
    px, inst, img, rule = metrics["pixel"], metrics["instance"], metrics["image"], metrics["rule"]
    intervals = metrics.get("ci95", {})

    def ci(key: str) -> str:
        return format_interval(intervals, key)

    lines = [
        f"# fracseg evaluation: split `{metrics['split']}`",
        "",
        f"{metrics['fractured_images']} fractured and {metrics['non_fractured_images']} "
        "non-fractured images; "
        f"{len(metrics['errors'])} unreadable. Model sha256 `{str(metrics['model']['weights_sha256'])[:12]}`"
        f"{'' if metrics['model']['trained_model'] else ' (UNTRAINED)'}; rule: pixel threshold "
        f"{rule['threshold']}, score = mean of top {rule['score_top_pixels']} px, image threshold "
        f"{_fmt(rule['score_threshold'])}, min region {rule['min_region_pixels']} px.",
        "",
        "## Pixel level (fractured images)",
        "",
        "| metric | mean | sd | median | n | undefined |",
        "|---|---|---|---|---|---|",
    ]
    for key in ("dice", "iou", "precision", "recall", "hd95"):
        s = px[key]
        lines.append(
            f"| {key}{' (px)' if key == 'hd95' else ''} | {_fmt(s['mean'])} | {_fmt(s['sd'])} | "
            f"{_fmt(s['median'])} | {s['n']} | {s['undefined']} |"
        )
    lines += [
        "",
        f"Dice mean 95 % CI {ci('dice_mean')}. HD95 is undefined where the prediction is empty.",
        "",
        "### By body part",
        "",
    ]
    lines += [
        "| body part | images | Dice mean | Dice median | IoU mean | HD95 median (px) |",
        "|---|---|---|---|---|---|",
    ]
    for part, s in px["by_body_part"].items():
        lines.append(
            f"| {part} | {s['images']} | {_fmt(s['dice']['mean'])} | {_fmt(s['dice']['median'])} | "
            f"{_fmt(s['iou']['mean'])} | {_fmt(s['hd95']['median'])} |"
        )
    lines += [
        "",
        "## Instance level",
        "",
        f"- ground-truth polygons hit (any overlap): {inst['hit_instances']} / {inst['gt_instances']} "
        f"({_fmt(inst['hit_rate'])})",
        f"- false-positive regions per image: fractured {_fmt(inst['fp_regions_per_fractured_image'], 2)}, "
        f"non-fractured {_fmt(inst['fp_regions_per_non_fractured_image'], 2)}",
        f"- mask AP50 (fractured images, as the FracAtlas YOLOv8-seg baseline): {_fmt(inst['mask_ap50'])} "
        f"(95 % CI {ci('mask_ap50')}); with non-fractured images' regions as extra false positives: "
        f"{_fmt(inst['mask_ap50_with_negatives'])}",
        "",
        "## Image level (is there a fracture?)",
        "",
        f"- AUROC: {_fmt(img['auroc'])} (95 % CI {ci('auroc')})",
        f"- at the shipped rule: sensitivity {_fmt(img['sensitivity'])} ({ci('sensitivity')}), "
        f"specificity {_fmt(img['specificity'])} ({ci('specificity')})",
        f"- non-fractured images with any positive pixel: {_fmt(img['non_fractured_with_positive_pixels'])}",
        "",
    ]
    if "calibration" in metrics:
        cal = metrics["calibration"]
        lines += [
            "## Calibration (chosen on this split)",
            "",
            f"- pixel threshold {cal['threshold']} (mean Dice by threshold: "
            + ", ".join(f"{t}: {_fmt(v)}" for t, v in cal["mean_dice_by_threshold"].items())
            + ")",
            f"- minimum region {cal.get('min_region_pixels', 0)} px (mean Dice by minimum region: "
            + ", ".join(f"{m}: {_fmt(v)}" for m, v in cal.get("mean_dice_by_min_region_pixels", {}).items())
            + ")",
            f"- score = mean of top {cal['score_top_pixels']} px (AUROC by k: "
            + ", ".join(f"{k}: {_fmt(v)}" for k, v in cal["auroc_by_top_pixels"].items())
            + ")",
            f"- image threshold {_fmt(cal['score_threshold'], 4)} (highest with sensitivity >= "
            f"{cal['target_sensitivity']})",
        ]
        if "crossfit" in cal:
            folds = cal["crossfit"]["folds"]
            fit = cal["crossfit"]["cross_fitted"]
            ci = fit.get("ci95", {})
            lines.append(
                f"- cross-fitted: each of folds {folds} decided by the rule chosen on the others: Dice mean "
                f"{_fmt(fit['pixel']['dice']['mean'])} ({format_interval(ci, 'dice_mean')}), AUROC "
                f"{_fmt(fit['image']['auroc'])} ({format_interval(ci, 'auroc')}), sensitivity "
                f"{_fmt(fit['image']['sensitivity'])} ({format_interval(ci, 'sensitivity')}), specificity "
                f"{_fmt(fit['image']['specificity'])} ({format_interval(ci, 'specificity')}), "
                "false-positive regions per non-fractured image "
                f"{_fmt(fit['instance']['fp_regions_per_non_fractured_image'])} (the figures above, on the "
                "images the rule was chosen on, are optimistic)"
            )
        lines.append("")
    lines += [f"![{name}]({name})" for name in figures]
    if grid:
        lines += [
            "",
            "Rows: best, median and worst Dice (green: ground truth, red: prediction).",
            "",
            f"![grid]({grid})",
        ]
    lines += ["", "Data: " + metrics["citation"], ""]
    return "\n".join(lines)


def write_report(out: Path, metrics: dict[str, Any], cases: list[Case]) -> None:
    """Write plots, ``report.md`` and ``report.html`` into ``out``."""
    figures = _plots(out, metrics, cases)
    grid = _grid(out, cases)
    text = markdown(metrics, figures, grid)
    with atomic_path(out / "report.md") as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    with atomic_path(out / "report.html") as tmp:
        Path(tmp).write_text(html_page(text), encoding="utf-8")


#: A small stylesheet: readable tables and figures without any external resource.
_CSS = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
       color: #1a1a1a; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.8rem 0; }
th, td { border: 1px solid #c8c8c8; padding: 0.25rem 0.6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f0f0f0; }
code { background: #f3f3f3; padding: 0 0.2rem; }
img { max-width: 100%; }
"""


def html_page(text: str) -> str:
    """The Markdown report rendered as a self-contained HTML page (headings, tables, lists, figures)."""
    import markdown as md  # Python-Markdown; its "tables" extension renders the pipe tables

    body = md.markdown(text, extensions=["tables"], output_format="html")
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>fracseg evaluation</title><style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n"
    )
