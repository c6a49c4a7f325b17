"""Ablation: GAN (adversarial term on) against supervised-only (``adversarial_weight 0``), same budget.

Each (arm, seed) is one ``python -m monai.bundle run training`` of the bundle with the given overlay
config, followed by ``fracseg.evaluation.evaluate`` of its best checkpoint on the valid split. Runs are
resumable: a finished run (its ``eval/metrics.json`` exists) is skipped, an interrupted one resumes from
its last checkpoint. Prints a table of mean ± sd over seeds and writes ``summary.json``::

    python scripts/ablation.py --out runs/ablation --seeds 0 1 2 --epochs 8 \\
        --config bundle/configs/train_cpu.json --set warmup_epochs=2 ramp_epochs=2
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fracseg.evaluation import evaluate  # noqa: E402
from fracseg.inference import Predictor  # noqa: E402
from fracseg.networks import build_generator  # noqa: E402

ARMS = {"gan": None, "supervised": 0.0}  # None: the config's adversarial_weight


def _train(
    run_dir: Path, config: str, seed: int, epochs: int, weight: float | None, extra: list[str]
) -> float:
    configs = str([str(REPO / "bundle" / "configs" / "train.json"), config])
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", configs]
    cmd += ["--seed", str(seed), "--epochs", str(epochs), "--output_dir", str(run_dir)]
    cmd += ["--ckpt_dir", str(run_dir / "models")]
    if weight is not None:
        cmd += ["--adversarial_weight", str(weight)]
    for item in extra:
        key, value = item.split("=", 1)
        cmd += [f"--{key}", value]
    start = time.perf_counter()
    with (run_dir / "train.log").open("a") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True, cwd=REPO)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/ablation")
    parser.add_argument("--dataset", default=str(REPO.parent / "shared" / "data" / "fracatlas"))
    parser.add_argument("--config", default=str(REPO / "bundle" / "configs" / "train_cpu.json"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--set", nargs="*", default=[], help="extra bundle overrides key=value")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)
    overlay = json.loads(Path(args.config).read_text())
    channels = overlay.get("generator_channels", [32, 64, 128, 256, 512])
    for item in args.set:
        if item.startswith("generator_channels="):
            channels = json.loads(item.split("=", 1)[1])
    results: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for seed in args.seeds:
        for arm, weight in ARMS.items():
            run_dir = out / f"{arm}_seed{seed}"
            run_dir.mkdir(parents=True, exist_ok=True)
            metrics_path = run_dir / "eval" / "metrics.json"
            timing_path = run_dir / "train_seconds.json"
            if not metrics_path.exists():
                seconds = _train(run_dir, args.config, seed, args.epochs, weight, args.set)
                timing_path.write_text(json.dumps({"seconds": seconds}))
                network = build_generator(channels=channels)
                predictor = Predictor(weights=run_dir / "models" / "model.pt", network=network)
                evaluate(args.dataset, "valid", run_dir / "eval", predictor, prepared=run_dir / "prepared")
            metrics = json.loads(metrics_path.read_text())
            seconds = json.loads(timing_path.read_text())["seconds"] if timing_path.exists() else float("nan")
            results[arm].append(
                {
                    "seed": seed,
                    "dice": metrics["pixel"]["dice"]["mean"],
                    "auroc": metrics["image"]["auroc"],
                    "ap50": metrics["instance"]["mask_ap50"],
                    "train_seconds": seconds,
                }
            )
            print(f"{arm} seed {seed}: {results[arm][-1]}", flush=True)
    table = ["| arm | seeds | valid Dice | AUROC | mask AP50 | train time (s) |", "|---|---|---|---|---|---|"]
    summary = {}
    for arm, rows in results.items():
        cell = {}
        for key in ("dice", "auroc", "ap50", "train_seconds"):
            values = np.array([np.nan if r[key] is None else r[key] for r in rows], dtype=float)
            cell[key] = (
                float(np.nanmean(values)),
                float(np.nanstd(values, ddof=1)) if len(values) > 1 else 0.0,
            )
        summary[arm] = {"runs": rows, "mean_sd": cell}
        table.append(
            f"| {arm} | {len(rows)} | {cell['dice'][0]:.3f} ± {cell['dice'][1]:.3f} | "
            f"{cell['auroc'][0]:.3f} ± {cell['auroc'][1]:.3f} | "
            f"{cell['ap50'][0]:.3f} ± {cell['ap50'][1]:.3f} | "
            f"{cell['train_seconds'][0]:.0f} ± {cell['train_seconds'][1]:.0f} |"
        )
    print("\n".join(table))
    (out / "summary.json").write_text(
        json.dumps({"args": vars(args), "arms": summary, "table": table}, indent=1)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
