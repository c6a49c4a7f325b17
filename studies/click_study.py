"""Annotation-loop quality: mean Dice on a FracAtlas split without clicks and after 1, 3 and 5 clicks.

DeepEdit protocol with a simulated annotator, one click at a time: after each prediction the annotator
looks at the mask as the app returns it (the shipped decision rule at the displayed size), finds the
largest error region (connected component of false negatives or of false positives, whichever is larger)
and clicks at its centre: a foreground click in a missed fracture, a background click in a false alarm.
All clicks so far are fed back as the generator's guidance channels, and the model predicts again; as in
the app's ``fracture_interactive``, the decision rule becomes :meth:`DecisionRule.guided` once there is
a foreground click (no image-level gate, no minimum region size, the ``guided_threshold`` pixel threshold;
``--guided-threshold`` tries another).

The click is placed and rendered by :func:`fracseg.engines.clicks.simulate_clicks`, the function training
uses, in the network's input frame (the 512x512 letterbox, where training simulates its clicks), with
the trainer's click sigma (``CLICK_SIGMA``). The displayed prediction is carried into that frame by the
same letterbox transform that carries ground-truth masks into it for training. Accumulated guidance is
the pixel-wise maximum of the clicks' heat maps, which is how one heat map renders several clicks.

Usage (FracAtlas valid split prepared by ``fracseg prepare``; prepares it into ``--prepared`` if absent)::

    taskset -c 1 python studies/click_study.py ../shared/data/fracatlas --prepared /tmp/prepared \
        --output outputs/click_study [--limit N] [--clicks 1 3 5]

Writes ``per_image.csv`` (Dice per image after each click count) and ``summary.json`` to ``--output``
and prints a table. FracAtlas (CC BY 4.0): Abedeen et al., Scientific Data 10, 521 (2023).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose
from scipy import ndimage

from fracseg.data.fracatlas import ensure_prepared
from fracseg.engines.clicks import BACKGROUND_CHANNEL, CLICK_SIGMA, FOREGROUND_CHANNEL, simulate_clicks
from fracseg.errors import FracsegError
from fracseg.evaluation.metrics import pixel_metrics
from fracseg.inference.decision import decide
from fracseg.inference.predictor import DEFAULT_BUNDLE, DEFAULT_WEIGHTS, Predictor
from fracseg.io import read_xray, write_csv_atomic, write_json_atomic
from fracseg.precision import cpu_description
from fracseg.transforms import letterbox_transforms

logger = logging.getLogger("click_study")


def largest_component(mask: np.ndarray) -> int:
    """Pixels in the largest connected component of ``mask`` (the connectivity ``simulate_clicks`` uses)."""
    labels, n = ndimage.label(mask)
    return int(np.bincount(labels.ravel())[1:].max()) if n else 0


def next_click(
    pred: torch.Tensor, truth: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, str] | None:
    """Guidance ``(2, S, S)`` of one click at the centre of the largest error region, and its kind.

    Args:
        pred: ``(1, 1, S, S)`` predicted mask in {0, 1} (letterbox frame).
        truth: ``(1, 1, S, S)`` ground truth in {0, 1} (letterbox frame).
        generator: breaks ties between equally central pixels (deterministic study).

    Returns:
        ``None`` when the prediction has no error; otherwise the heat map with only the chosen channel
        set and ``"foreground"`` or ``"background"``.
    """
    p, t = pred[0, 0].numpy() > 0.5, truth[0, 0].numpy() > 0.5
    missed, false_alarm = largest_component(t & ~p), largest_component(p & ~t)
    if missed == 0 and false_alarm == 0:
        return None
    guidance = simulate_clicks(pred, truth, num_clicks=1, sigma=CLICK_SIGMA, generator=generator)[0]
    keep = FOREGROUND_CHANNEL if missed >= false_alarm else BACKGROUND_CHANNEL
    guidance[1 - keep] = 0.0
    return guidance, "foreground" if keep == FOREGROUND_CHANNEL else "background"


class ClickStudy:
    """Runs the protocol on one image at a time with one loaded predictor."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.to_letterbox = Compose(letterbox_transforms((), ("label",), predictor.spatial_size))

    def letterbox_mask(self, mask: np.ndarray) -> torch.Tensor:
        """A displayed-size ``(H, W)`` mask in the letterbox frame, ``(1, 1, S, S)`` in {0, 1}."""
        tensor = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None]
        return torch.as_tensor(self.to_letterbox({"label": tensor})["label"]).float()[None]

    @torch.inference_mode()
    def predict(self, prepared: dict[str, Any], guidance: torch.Tensor) -> np.ndarray:
        """The displayed-size mask for the letterboxed image plus ``guidance``, as the app returns it.

        The shipped decision rule; once the annotator has placed a foreground click,
        :meth:`DecisionRule.guided` (no gate, no minimum region size, ``guided_threshold``), as in the
        app's ``fracture_interactive`` (a foreground click says that a fracture is there).
        """
        image = prepared["image"].as_tensor()[None].to(self.predictor.device)
        net_input = torch.cat([image, guidance[None].to(image.device, image.dtype)], dim=1)
        probability = self.predictor.infer(net_input)[0]  # guidance kept; the predictor's precision
        prediction = self.predictor.finish(prepared, probability)
        if guidance[FOREGROUND_CHANNEL].max() > 0:
            return decide(prediction.probability, self.predictor.rule.guided(foreground_clicks=True)).mask
        return prediction.mask

    def run(self, image: str, label: str, max_clicks: int, seed: int) -> dict[str, Any]:
        """Dice after 0..``max_clicks`` clicks and the kinds of the clicks placed."""
        prepared = self.predictor.prepare(image)
        truth = read_xray(label).array > 0  # the reader training's LoadMaskd uses
        truth_lb = self.letterbox_mask(truth)
        generator = torch.Generator().manual_seed(seed)
        guidance = torch.zeros((2, *truth_lb.shape[-2:]), dtype=torch.float32)
        dice, kinds = [], []
        mask = self.predict(prepared, guidance)
        if mask.shape != truth.shape:
            raise FracsegError(f"{label}: mask {truth.shape} and prediction {mask.shape} differ in size")
        dice.append(pixel_metrics(mask, truth)["dice"])
        for _ in range(max_clicks):
            click = next_click(self.letterbox_mask(mask), truth_lb, generator)
            if click is None:  # nothing left to correct: the annotator stops, Dice stays
                dice.append(dice[-1])
                kinds.append("none")
                continue
            heat, kind = click
            guidance = torch.maximum(guidance, heat)
            kinds.append(kind)
            mask = self.predict(prepared, guidance)
            dice.append(pixel_metrics(mask, truth)["dice"])
        return {"dice": dice, "kinds": kinds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="FracAtlas root (release layout)")
    parser.add_argument(
        "--prepared", type=Path, required=True, help="fracseg prepare output (made if absent)"
    )
    parser.add_argument("--output", type=Path, default=Path("outputs/click_study"))
    parser.add_argument("--split", default="validation", help="datalist key of fractured images")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--clicks", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--limit", type=int, default=0, help="first N images only (0 = all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--guided-threshold",
        type=float,
        default=None,
        help="pixel threshold once a foreground click is placed (default: the bundle's guided_threshold)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    datalist = json.loads(Path(ensure_prepared(args.root, args.prepared)).read_text(encoding="utf-8"))
    entries = datalist[args.split][: args.limit or None]
    predictor = Predictor(weights=args.weights, bundle=args.bundle)
    if args.guided_threshold is not None:
        predictor.rule = replace(predictor.rule, guided_threshold=args.guided_threshold)
    if not predictor.trained:
        logger.error("no weights at %s", args.weights)
        return 2
    study = ClickStudy(predictor)
    max_clicks = max(args.clicks)
    rows, failures = [], 0
    start = time.perf_counter()
    for i, entry in enumerate(entries):
        try:
            result = study.run(entry["image"], entry["label"], max_clicks, seed=args.seed + i)
        except FracsegError as exc:  # one bad file never stops the study
            logger.warning("skipped %s: %s", entry["image_id"], exc)
            failures += 1
            continue
        row = {"image_id": entry["image_id"], "clicks": " ".join(result["kinds"])}
        row.update({f"dice_{k}": round(d, 6) for k, d in enumerate(result["dice"])})
        rows.append(row)
    seconds = time.perf_counter() - start
    if not rows:
        logger.error("no image could be scored")
        return 1

    counts = [0, *sorted(set(args.clicks))]
    mean = {k: statistics.fmean(r[f"dice_{k}"] for r in rows) for k in counts}
    improved = {k: sum(r[f"dice_{k}"] > r["dice_0"] for r in rows) for k in counts}
    kinds = [c for r in rows for c in r["clicks"].split()]
    summary = {
        "split": args.split,
        "images": len(rows),
        "failed": failures,
        "weights": str(args.weights),
        "rule": predictor.rule.to_dict(),
        "click_sigma": CLICK_SIGMA,
        "mean_dice": {str(k): mean[k] for k in counts},
        "gain_over_no_clicks": {str(k): mean[k] - mean[0] for k in counts},
        "images_improved": {str(k): improved[k] for k in counts},
        "click_kinds": {kind: kinds.count(kind) for kind in ("foreground", "background", "none")},
        "seconds": seconds,
        "cpu": cpu_description(),
        "torch_threads": torch.get_num_threads(),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    columns = ["image_id", *[f"dice_{k}" for k in range(max_clicks + 1)], "clicks"]
    write_csv_atomic(args.output / "per_image.csv", columns, rows)
    write_json_atomic(args.output / "summary.json", summary)

    print(
        f"Click study, {args.split} split: {len(rows)} fractured images ({failures} unreadable), "
        f"{seconds:.0f} s"
    )
    print(f"CPU: {summary['cpu']}, torch threads: {summary['torch_threads']}")
    print("| clicks | mean Dice | gain vs no clicks | images improved |")
    print("|---:|---:|---:|---:|")
    for k in counts:
        print(f"| {k} | {mean[k]:.3f} | {mean[k] - mean[0]:+.3f} | {improved[k]}/{len(rows)} |")
    print(
        f"clicks placed: {summary['click_kinds']['foreground']} foreground, "
        f"{summary['click_kinds']['background']} background, {summary['click_kinds']['none']} not needed"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
