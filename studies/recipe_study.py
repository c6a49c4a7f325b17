"""Choose the CPU recipe by measurement: train candidate recipes at an equal wall-clock budget with the
bundle's own command and compare their learning curves (``curves.jsonl`` of
:class:`fracseg.engines.LearningCurve`: Dice at 0.5 and at the best threshold, pixel AP, image AUROC
against training time).

    python studies/recipe_study.py run --budget 1500 --cpus 0            # every candidate, one after another
    python studies/recipe_study.py run --budget 1500 --only large-fractured
    python studies/recipe_study.py report --figure bundle/docs/recipe_curves.png
    python studies/recipe_study.py report --runs runs/release --marks 15 30 60 90 120   # any run folders

Each run is ``python -m monai.bundle run training --config_file [train.json, train_cpu.json]
--<overrides> --time_budget_s B --seed S --output_dir runs/recipes/<name>``, so a candidate is nothing
but bundle overrides; ``--cpus`` pins the run (and sets its thread count) so that candidates measured
while other work uses the remaining cores are timed alike. A killed run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from fracseg.precision import cpu_description

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ["bundle/configs/train.json", "bundle/configs/train_cpu.json"]

#: Candidate recipes: overrides of train_cpu.json (the chosen one, "small-instance-noise", has none).
CANDIDATES: dict[str, dict[str, Any]] = {
    "small-fractured": {"instance_noise": 0.0},
    "small-with-negatives": {
        "train_keys": ["training", "negatives_train"],
        "val_interval": 3,
        "instance_noise": 0.0,
    },
    "large-fractured": {
        "generator_channels": [32, 64, 128, 256, 512],
        "val_interval": 2,
        "instance_noise": 0.0,
    },
    "small-instance-noise": {},
    "small-supervised": {"adversarial_weight": 0.0},
}
DEFAULT_ORDER = ["small-fractured", "small-with-negatives", "large-fractured", "small-instance-noise"]
#: Training-time marks (minutes) of the report table (a run's budget is wall time, validation included).
MARKS = (4, 8, 12, 16, 20)


def command(name: str, budget: float, seed: int, out_root: Path, dataset: str) -> list[str]:
    overrides = CANDIDATES[name]
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", repr(CONFIGS)]
    cmd += ["--dataset_dir", dataset, "--output_dir", str(out_root / name)]
    cmd += ["--prepared_dir", str(out_root / "prepared"), "--time_budget_s", str(budget), "--seed", str(seed)]
    cmd += ["--ckpt_dir", str(out_root / name / "models")]
    for key, value in overrides.items():
        cmd += [f"--{key}", json.dumps(value)]
    return cmd


def run(args: argparse.Namespace) -> None:
    names = args.only or DEFAULT_ORDER
    env = dict(os.environ)
    cpus = [int(c) for c in args.cpus.split(",")] if args.cpus else None
    if cpus:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(len(cpus))
    for name in names:
        cmd = command(name, args.budget, args.seed, args.out, args.dataset)
        log = args.out / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"[{name}] {' '.join(cmd)}\n  log: {log}", flush=True)
        with log.open("a") as stream:
            preexec = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
            code = subprocess.call(cmd, cwd=ROOT, env=env, stdout=stream, stderr=subprocess.STDOUT,
                                   preexec_fn=preexec)  # fmt: skip
        print(f"[{name}] exit {code}", flush=True)


def read_curve(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def at_mark(rows: list[dict[str, Any]], minutes: float) -> dict[str, Any] | None:
    """The last validation at or before ``minutes`` of training time."""
    before = [r for r in rows if r["train_seconds"] <= minutes * 60 + 1e-6]
    return before[-1] if before else None


def critic_accuracy(log: Path, last_epochs: int = 3) -> float:
    """Mean logged critic patch accuracy (``d_acc``) over the last ``last_epochs`` epochs of a run's log."""
    if not log.exists():
        return float("nan")
    pattern = r"Epoch: (\d+)/\d+, Iter: \d+/\d+ -- d_acc: ([0-9.na]+)"
    found = re.findall(pattern, log.read_text(errors="replace"))
    values = [(int(e), float(a)) for e, a in found if a != "nan"]
    if not values:
        return float("nan")
    last = max(e for e, _ in values)
    recent = [a for e, a in values if e > last - last_epochs]
    return sum(recent) / len(recent)


def report(args: argparse.Namespace) -> None:
    if args.runs:  # run folders of any training (curves.jsonl + train.log), named by folder
        folders = {Path(d).name: Path(d) for d in args.runs}
        logs = {n: d / "train.log" for n, d in folders.items()}
    else:
        names = args.only or [n for n in CANDIDATES if (args.out / n / "curves.jsonl").exists()]
        folders = {n: args.out / n for n in names}
        logs = {n: args.out / f"{n}.log" for n in names}
    curves = {n: read_curve(d / "curves.jsonl") for n, d in folders.items()}
    marks = args.marks or MARKS
    print(f"CPU: {cpu_description()}; runs: {', '.join(str(d) for d in folders.values())}\n")
    header = "| recipe | " + " | ".join(f"{m:g} min" for m in marks) + " | at the end (training min) | best |"
    for metric, label in (
        ("val_best_dice", "Dice at the best threshold"),
        ("val_dice_05", "Dice at 0.5"),
        ("val_auroc", "image AUROC"),
        ("val_pixel_ap", "pixel AP"),
    ):
        print(f"**{label}** (valid, 512² letterbox), by training minutes\n")
        print(header)
        print("|---|" + "---:|" * (len(marks) + 2))
        for name, rows in curves.items():
            end = rows[-1]["train_seconds"] if rows else 0.0
            cells = []
            for m in marks:
                r = at_mark(rows, m) if m * 60 <= end + 60 else None
                cells.append(f"{r[metric]:.3f}" if r else "–")
            last = f"{rows[-1][metric]:.3f} ({end / 60:.1f})" if rows else "–"
            best = max((r[metric] for r in rows), default=float("nan"))
            print(f"| {name} | " + " | ".join(cells) + f" | {last} | {best:.3f} |")
        print()
    print("| recipe | critic patch accuracy, last 3 epochs |")
    print("|---|---:|")
    for name in curves:
        print(f"| {name} | {critic_accuracy(logs[name]):.3f} |")
    print()
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        for name, rows in curves.items():
            t = [r["train_seconds"] / 60 for r in rows]
            for ax, key in zip(axes, ("val_best_dice", "val_auroc", "val_pixel_ap"), strict=True):
                ax.plot(t, [r[key] for r in rows], marker=".", label=name)
        for ax, title in zip(axes, ("Dice, best threshold", "image AUROC", "pixel AP"), strict=True):
            ax.set_title(title)
            ax.set_xlabel("training minutes")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"Valid learning curves, {cpu_description()}", fontsize=9)
        fig.tight_layout()
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.figure, dpi=110)
        print(f"figure: {args.figure}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, func in (("run", run), ("report", report)):
        p = sub.add_parser(name)
        p.add_argument("--out", type=Path, default=ROOT / "runs" / "recipes")
        p.add_argument("--only", nargs="+", choices=sorted(CANDIDATES))
        p.set_defaults(func=func)
        if name == "run":
            p.add_argument("--budget", type=float, default=1500.0, help="time_budget_s of each run")
            p.add_argument("--seed", type=int, default=0)
            p.add_argument("--cpus", default=None, help="pin each run to these CPUs, e.g. 0 or 0,1")
            p.add_argument("--dataset", default=str(ROOT.parent / "shared" / "data" / "fracatlas"))
        else:
            p.add_argument("--figure", type=Path, default=None)
            p.add_argument("--runs", nargs="+", type=Path, help="run folders instead of the candidates")
            p.add_argument("--marks", nargs="+", type=float, help=f"training minutes (default {MARKS})")
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
