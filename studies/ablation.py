"""Ablation: GAN (adversarial term on) against supervised-only (``adversarial_weight 0``), same budget.

Each (arm, seed) is one ``python -m monai.bundle run training`` of the bundle with the given overlay
config, followed by ``fracseg.evaluation.evaluate`` of its best checkpoint on the valid split with one
fixed rule (:data:`EVAL_RULE`). Runs are resumable: a finished training (``train_seconds.json``) or
evaluation (``eval_rule/metrics.json``) is not redone, an interrupted training resumes from its last
checkpoint. The budget is equal epochs, or with ``--budget S`` an equal wall-clock budget per run
(``time_budget_s``; the table lists the epochs each run trained). ``--cpus 0,1`` runs the arms of one
seed at the same time, each pinned to its own CPU with one thread, so both arms see the same machine
load. ``--calibrate`` also lets each run choose its own rule on one half of valid and measures it on
the other (cross-fitted Dice, sensitivity, specificity), which is fairer than one fixed rule when the
arms' probabilities sit at different levels. The learning-curve row of each run's best checkpoint
(best-threshold Dice, pixel AP, AUROC at the 512² letterbox) and the critic's patch accuracy over its
last 3 epochs (``recipe_study.critic_accuracy``) are reported too. All runs share one dataset preparation
(``<out>/prepared``). Prints a table of mean ± sd over seeds and writes ``summary.json``::

    python studies/ablation.py --out runs/ablation --seeds 0 1 2 --epochs 8 \\
        --config bundle/configs/train_cpu.json --set warmup_epochs=2 ramp_epochs=2
    python studies/ablation.py --out runs/ablation_cpu --seeds 0 1 2 --budget 1500 --cpus 0,1 --calibrate \\
        --set warmup_epochs=4 ramp_epochs=2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "studies"))

from recipe_study import critic_accuracy  # noqa: E402

from fracseg.evaluation import evaluate  # noqa: E402
from fracseg.inference import Predictor  # noqa: E402
from fracseg.inference.decision import DecisionRule  # noqa: E402
from fracseg.networks import build_generator  # noqa: E402

ARMS = {"gan": None, "supervised": 0.0}  # None: the config's adversarial_weight
#: A fixed rule for every run: the shipped rule was calibrated for the release model and would gate
#: short runs' lower probabilities away. No image-level gate, so Dice and AP50 measure the masks alone;
#: AUROC uses the score, which no threshold affects.
EVAL_RULE = DecisionRule(threshold=0.5, score_threshold=0.0, score_top_pixels=1024)
EPOCH_TIME = re.compile(r"Trainer - INFO - Epoch\[(\d+)\] Complete\. Time taken: (\d+):(\d+):([\d.]+)")


def fastest_epoch_seconds(log: Path, after_epoch: int = 0) -> float:
    """Fastest training epoch after ``after_epoch`` (the warm-up, which has no critic step) in the
    trainer's log: the least disturbed by other jobs on shared cores (a paused or contended epoch says
    nothing about the method's cost)."""
    found = EPOCH_TIME.findall(log.read_text())
    times = [int(h) * 3600 + int(m) * 60 + float(s) for e, h, m, s in found if int(e) > after_epoch]
    return float(min(times)) if times else float("nan")


BUDGET_STOP = re.compile(r"time budget: stop after epoch (\d+) of")


def epochs_completed(log: Path) -> int:
    """Epochs trained, from the trainer's log. A time budget can stop a run early; ignite then does not
    log that last epoch as complete, but the budget's message names it."""
    text = log.read_text()
    done = [int(e) for e, *_ in EPOCH_TIME.findall(text)] + [int(e) for e in BUDGET_STOP.findall(text)]
    return max(done, default=0)


def _train_command(
    run_dir: Path,
    config: str,
    dataset: str,
    seed: int,
    epochs: int,
    weight: float | None,
    extra: list[str],
) -> list[str]:
    configs = str([str(REPO / "bundle" / "configs" / "train.json"), config])
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", configs]
    cmd += ["--dataset_dir", str(Path(dataset).resolve())]
    cmd += ["--prepared_dir", str(run_dir.parent.resolve() / "prepared")]  # one preparation for all runs
    cmd += ["--seed", str(seed), "--epochs", str(epochs), "--output_dir", str(run_dir)]
    cmd += ["--ckpt_dir", str(run_dir / "models")]
    if weight is not None:
        cmd += ["--adversarial_weight", str(weight)]
    for item in extra:
        key, value = item.split("=", 1)
        cmd += [f"--{key}", value]
    return cmd


def _launch(cmd: list[str], run_dir: Path, cpu: int | None) -> subprocess.Popen:
    """Start one training, logging to ``<run_dir>/train.log``; pinned to ``cpu`` with one thread if given."""
    env = dict(os.environ)
    preexec = None
    if cpu is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = "1"
        preexec = lambda: os.sched_setaffinity(0, {cpu})  # noqa: E731
    with (run_dir / "train.log").open("a") as log:  # the child keeps its own copy of the descriptor
        log.write(" ".join(cmd) + "\n")
        log.flush()
        return subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env, preexec_fn=preexec
        )


def _finish_training(run_dir: Path, proc: subprocess.Popen, start: float) -> None:
    code = proc.wait()
    if code != 0:
        raise SystemExit(f"training in {run_dir} failed with exit code {code}: see {run_dir / 'train.log'}")
    (run_dir / "train_seconds.json").write_text(json.dumps({"seconds": time.perf_counter() - start}))


def best_curve_row(run_dir: Path) -> dict:
    """The validation row of ``curves.jsonl`` that chose the run's best checkpoint (highest
    ``val_best_dice``, the bundle's key metric), so it describes the evaluated model; empty when the
    run wrote none."""
    path = run_dir / "curves.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return max(rows, key=lambda r: r.get("val_best_dice", -1.0)) if rows else {}


def _mean_sd(cell: tuple[float, float] | None, digits: int) -> str:
    """A table cell ``mean ± sd``; "–" where no run has the value."""
    return "–" if cell is None else f"{cell[0]:.{digits}f} ± {cell[1]:.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/ablation")
    parser.add_argument(
        "--dataset",
        default=str(REPO.parent / "shared" / "data" / "fracatlas"),
        help="FracAtlas-layout root, for training and the valid evaluation",
    )
    parser.add_argument("--config", default=str(REPO / "bundle" / "configs" / "train_cpu.json"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="default 8, or 400 (a cap) with --budget")
    parser.add_argument("--set", nargs="*", default=[], help="extra bundle overrides key=value")
    parser.add_argument("--device", default=None, help="evaluation device (default: cuda when present)")
    parser.add_argument(
        "--budget", type=float, default=0.0, help="time_budget_s per run (then --epochs is only a cap)"
    )
    parser.add_argument("--cpus", default=None, help="run a seed's arms at once, one per CPU: e.g. 0,1")
    parser.add_argument("--calibrate", action="store_true", help="cross-fitted rule per run as well")
    args = parser.parse_args()
    if args.epochs is None:
        args.epochs = 400 if args.budget > 0 else 8
    extra = list(args.set)
    if args.budget > 0:
        extra.append(f"time_budget_s={args.budget}")
    cpus = [int(c) for c in args.cpus.split(",")] if args.cpus else []
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)
    overlay = json.loads(Path(args.config).read_text())
    channels = overlay.get("generator_channels", [32, 64, 128, 256, 512])
    warmup = int(overlay.get("warmup_epochs", 0))
    for item in args.set:
        if item.startswith("generator_channels="):
            channels = json.loads(item.split("=", 1)[1])
        if item.startswith("warmup_epochs="):
            warmup = int(item.split("=", 1)[1])
    results: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for seed in args.seeds:
        runs = {arm: out / f"{arm}_seed{seed}" for arm in ARMS}
        pending: list[tuple[Path, subprocess.Popen, float]] = []
        for i, (arm, weight) in enumerate(ARMS.items()):
            run_dir = runs[arm]
            run_dir.mkdir(parents=True, exist_ok=True)
            if (run_dir / "train_seconds.json").exists():
                continue
            cmd = _train_command(run_dir, args.config, args.dataset, seed, args.epochs, weight, extra)
            start = time.perf_counter()
            pending.append((run_dir, _launch(cmd, run_dir, cpus[i % len(cpus)] if cpus else None), start))
            if len(cpus) < 2:  # one at a time
                _finish_training(*pending.pop())
        for item in pending:
            _finish_training(*item)
        for arm, weight in ARMS.items():
            run_dir = runs[arm]
            metrics_path = run_dir / "eval_rule" / "metrics.json"
            if not metrics_path.exists() or (
                args.calibrate and "calibration" not in json.loads(metrics_path.read_text())
            ):
                network = build_generator(channels=channels)
                predictor = Predictor(
                    weights=run_dir / "models" / "model.pt",
                    network=network,
                    rule=EVAL_RULE,
                    device=device,
                )
                evaluate(
                    args.dataset,
                    "valid",
                    metrics_path.parent,
                    predictor,
                    prepared=out / "prepared",
                    calibrate_rule=args.calibrate,
                )
            metrics = json.loads(metrics_path.read_text())
            curve = best_curve_row(run_dir)
            row = {
                "seed": seed,
                "dice": metrics["pixel"]["dice"]["mean"],
                "auroc": metrics["image"]["auroc"],
                "ap50": metrics["instance"]["mask_ap50"],
                "epoch_seconds": fastest_epoch_seconds(run_dir / "train.log", after_epoch=warmup),
                "epochs": epochs_completed(run_dir / "train.log"),
                "curve_best_dice": curve.get("val_best_dice"),
                "curve_pixel_ap": curve.get("val_pixel_ap"),
                "curve_auroc": curve.get("val_auroc"),
                "best_epoch": curve.get("epoch"),
                "critic_accuracy": critic_accuracy(run_dir / "train.log") if weight is None else None,
            }
            if "calibration" in metrics:
                fit = metrics["calibration"]["crossfit"]["cross_fitted"]
                row.update(
                    crossfit_dice=fit["pixel"]["dice"]["mean"],
                    crossfit_sensitivity=fit["image"]["sensitivity"],
                    crossfit_specificity=fit["image"]["specificity"],
                )
            results[arm].append(row)
            print(f"{arm} seed {seed}: {row}", flush=True)
    columns = [
        ("dice", "valid Dice (rule 0.5)"),
        ("auroc", "AUROC"),
        ("ap50", "mask AP50"),
        ("curve_best_dice", "best-threshold Dice (512², best ckpt)"),
        ("curve_pixel_ap", "pixel AP (512², best ckpt)"),
        ("crossfit_dice", "cross-fitted Dice"),
        ("crossfit_specificity", "cross-fitted specificity"),
        ("critic_accuracy", "critic accuracy, last 3 epochs"),
        ("epoch_seconds", "fastest epoch after warm-up (s)"),
    ]
    present = [
        (k, title)
        for k, title in columns
        if any(r.get(k) is not None for rows in results.values() for r in rows)
    ]
    table = [
        "| arm | seeds | " + " | ".join(title for _, title in present) + " | epochs |",
        "|---|---|" + "---|" * len(present) + "---|",
    ]
    summary = {}
    for arm, rows in results.items():
        cell = {}
        for key, _ in present:
            values = np.array([np.nan if r.get(key) is None else r[key] for r in rows], dtype=float)
            values = values[~np.isnan(values)]
            cell[key] = (
                (float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0)
                if len(values)
                else None  # e.g. the critic's accuracy in the supervised arm
            )
        summary[arm] = {"runs": rows, "mean_sd": cell}
        table.append(
            f"| {arm} | {len(rows)} | "
            + " | ".join(_mean_sd(cell[k], 1 if k == "epoch_seconds" else 3) for k, _ in present)
            + f" | {' '.join(str(r['epochs']) for r in rows)} |"
        )
    print("\n".join(table))
    (out / "summary.json").write_text(
        json.dumps({"args": vars(args), "arms": summary, "table": table}, indent=1)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
