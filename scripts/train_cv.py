"""Train the k cross-validation folds (and the release run on all folds) with the bundle, one after another.

A fold is two runs of the bundle's own command: stage 1 (``train.json`` + ``train_cpu.json`` +
``train_cv.json``: 256² crops of the fractured images, conditional GAN) into ``fold<k>/crops/``, then
stage 2 (``+ train_cv_whole.json``: whole 512² images with the negatives, from stage 1's last epoch) into
``fold<k>/``. A stage stopped by ``--until`` (or killed) resumes bit-identically from its last epoch
checkpoint when this script runs again: finished stages and folds are skipped, the first unfinished one
continues. Every command is appended to ``<cv_dir>/commands.log`` with the time and the CPU. A finished
stage's last epoch is exported to its ``model.pt`` (``scripts/export_model.py``); ``fold<k>/model.pt`` is the
fold model ``fracseg evaluate --cv`` reads once the checkpoints are gone (how finished folds are kept
between sittings on different machines).

    python scripts/train_cv.py --until 21:05                    # folds 0-4, then the release run
    python scripts/train_cv.py --folds 0 1 --no-release --until 20:30 -- --seed 1   # extra bundle args
    python scripts/train_cv.py --cv-dir runs/cv6 --crops-epochs 60 --until 20:55    # a longer stage 1 only

The cross-fitted figures come afterwards from ``fracseg evaluate --cv <cv_dir>``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shlex
import subprocess
import sys
from pathlib import Path

from fracseg.engines.resume import checkpoints_newest_first
from fracseg.precision import cpu_description

ROOT = Path(__file__).resolve().parents[1]
BASE = ["bundle/configs/train.json", "bundle/configs/train_cpu.json", "bundle/configs/train_cv.json"]
#: (name, config files, folder under the fold's) of each stage, in order
STAGES = [("crops", BASE, "crops"), ("whole", [*BASE, "bundle/configs/train_cv_whole.json"], "")]
logger = logging.getLogger("train_cv")


def fold_dir(cv_dir: Path, fold: int) -> Path:
    return cv_dir / (f"fold{fold}" if fold >= 0 else "release")


def finished(directory: Path, epochs: int) -> bool:
    """True when a stage's last epoch checkpoint is in ``directory``, or its export ``model.pt`` (written only
    once the stage has finished; kept when the checkpoints are not, e.g. on another machine)."""
    if (directory / "model.pt").is_file():
        return True
    newest = checkpoints_newest_first(directory / "checkpoints")
    return bool(newest) and newest[0].name == f"checkpoint_epoch={epochs}.pt"


def stage_epochs(configs: list[str], extra: list[str]) -> int:
    """A stage's epochs: those of the last of its configs that sets them, or ``--epochs`` in ``extra``."""
    if "--epochs" in extra:  # the last one, as the bundle's command line reads them
        last = max(i for i, arg in enumerate(extra) if arg == "--epochs")
        return int(extra[last + 1])
    epochs = [json.loads((ROOT / c).read_text()).get("epochs") for c in configs]
    return next(e for e in reversed(epochs) if e is not None)


def deadline_seconds(until: str | None) -> int:
    if not until:
        return 0
    now = dt.datetime.now()
    hour, minute = (int(x) for x in until.split(":"))
    end = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if end <= now:
        end += dt.timedelta(days=1)
    return int((end - now).total_seconds())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--no-release", action="store_true", help="skip the run on all folds")
    parser.add_argument("--cv-dir", type=Path, default=Path("runs/cv"))
    parser.add_argument("--dataset-dir", default="../shared/data/fracatlas")
    parser.add_argument("--until", help="HH:MM local time: stop (at an epoch boundary) before then")
    parser.add_argument(
        "--crops-epochs", type=int, help="stage 1's epochs (its cosine follows), instead of train_cv.json's"
    )
    parser.add_argument("extra", nargs="*", help="further bundle arguments, after --")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    args.cv_dir.mkdir(parents=True, exist_ok=True)
    folds = list(args.folds) + ([] if args.no_release else [-1])
    for fold in folds:
        if (fold_dir(args.cv_dir, fold) / "model.pt").is_file():
            logger.info("fold %d: finished (model.pt), skipped", fold)
            continue
        for name, configs, sub in STAGES:
            rc = run_stage(args, fold, name, configs, fold_dir(args.cv_dir, fold) / sub)
            if rc is not None:
                return rc
    return 0


def run_stage(args: argparse.Namespace, fold: int, name: str, configs: list[str], out: Path) -> int | None:
    """Train (or continue) one stage of one fold; ``None`` when it is finished and exported, else the exit
    status the script should end with (0: stopped by the deadline)."""
    extra = list(args.extra)
    if name == "crops" and args.crops_epochs:
        extra += ["--epochs", str(args.crops_epochs)]
    epochs = stage_epochs(configs, extra)
    if finished(out, epochs):
        logger.info("fold %d %s: finished (epoch %d), skipped", fold, name, epochs)
        return None if (out / "model.pt").is_file() else export_last_epoch(out) or None
    budget = deadline_seconds(args.until)
    if args.until and budget < 300:
        logger.info("fold %d %s: under 5 minutes left before %s; stopping here", fold, name, args.until)
        return 0
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "training",
        "--meta_file", "bundle/configs/metadata.json",
        "--config_file", str(configs),
        "--dataset_dir", args.dataset_dir,
        "--cv_dir", str(args.cv_dir),
        "--cv_fold", str(fold),
        "--time_budget_s", str(budget),
        *extra,
    ]  # fmt: skip
    with (args.cv_dir / "commands.log").open("a", encoding="utf-8") as log:
        stamp = dt.datetime.now().isoformat(timespec="seconds")
        log.write(f"{stamp} [{cpu_description()}] {shlex.join(cmd)}\n")
    logger.info("fold %d %s: %s", fold, name, shlex.join(cmd))
    out.mkdir(parents=True, exist_ok=True)
    with (out / "train.log").open("a", encoding="utf-8") as sink:
        rc = subprocess.call(cmd, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
    if rc != 0:
        logger.error("fold %d %s: the bundle exited with %d (see %s)", fold, name, rc, out / "train.log")
        return rc
    if not finished(out, epochs):
        logger.info("fold %d %s: stopped by the time budget; run this again to continue", fold, name)
        return 0
    return export_last_epoch(out) or None


def export_last_epoch(out: Path) -> int:
    """Write a stage's last epoch generator to ``<out>/model.pt`` (fp32, as trained)."""
    source = checkpoints_newest_first(out / "checkpoints")[0]
    cmd = [sys.executable, str(ROOT / "scripts" / "export_model.py"), str(source), str(out / "model.pt")]
    logger.info("%s", shlex.join(cmd))
    return subprocess.call(cmd, cwd=ROOT)


if __name__ == "__main__":
    raise SystemExit(main())
