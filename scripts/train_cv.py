"""Train the k cross-validation folds (and the release run on all folds) with the bundle, one after another.

Each fold is the bundle's own command (``train.json`` + ``train_cpu.json`` + ``train_cv.json``,
``--cv_fold K``), so a fold stopped by ``--until`` (or killed) resumes bit-identically from its last
epoch checkpoint when this script runs again: finished folds are skipped, the first unfinished one
continues. Every command is appended to ``<cv_dir>/commands.log`` with the time and the CPU. A finished
fold's last epoch is exported to ``<cv_dir>/fold<k>/model.pt`` (``scripts/export_model.py``), the file
``fracseg evaluate --cv`` reads once the checkpoints are gone (how finished folds are kept between sittings
on different machines).

    python scripts/train_cv.py --until 21:05                    # folds 0-4, then the release run
    python scripts/train_cv.py --folds 0 1 --no-release --until 20:30 -- --seed 1   # extra bundle args

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
CONFIGS = ["bundle/configs/train.json", "bundle/configs/train_cpu.json", "bundle/configs/train_cv.json"]
logger = logging.getLogger("train_cv")


def fold_dir(cv_dir: Path, fold: int) -> Path:
    return cv_dir / (f"fold{fold}" if fold >= 0 else "release")


def finished(cv_dir: Path, fold: int, epochs: int) -> bool:
    """True when the fold's last epoch checkpoint is there, or its export ``model.pt`` (written only once the
    fold has finished; kept when the checkpoints are not, e.g. on another machine)."""
    if (fold_dir(cv_dir, fold) / "model.pt").is_file():
        return True
    newest = checkpoints_newest_first(fold_dir(cv_dir, fold) / "checkpoints")
    return bool(newest) and newest[0].name == f"checkpoint_epoch={epochs}.pt"


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
    parser.add_argument("extra", nargs="*", help="further bundle arguments, after --")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    epochs = json.loads((ROOT / CONFIGS[-1]).read_text())["epochs"]
    if "--epochs" in args.extra:
        epochs = int(args.extra[args.extra.index("--epochs") + 1])
    args.cv_dir.mkdir(parents=True, exist_ok=True)
    folds = list(args.folds) + ([] if args.no_release else [-1])
    for fold in folds:
        if finished(args.cv_dir, fold, epochs):
            logger.info("fold %d: finished (epoch %d checkpoint), skipped", fold, epochs)
            continue
        budget = deadline_seconds(args.until)
        if args.until and budget < 300:
            logger.info("fold %d: under 5 minutes left before %s; stopping here", fold, args.until)
            return 0
        cmd = [
            sys.executable, "-m", "monai.bundle", "run", "training",
            "--meta_file", "bundle/configs/metadata.json",
            "--config_file", str(CONFIGS),
            "--dataset_dir", args.dataset_dir,
            "--cv_dir", str(args.cv_dir),
            "--cv_fold", str(fold),
            "--time_budget_s", str(budget),
            *args.extra,
        ]  # fmt: skip
        with (args.cv_dir / "commands.log").open("a", encoding="utf-8") as log:
            stamp = dt.datetime.now().isoformat(timespec="seconds")
            log.write(f"{stamp} [{cpu_description()}] {shlex.join(cmd)}\n")
        logger.info("fold %d: %s", fold, shlex.join(cmd))
        out = fold_dir(args.cv_dir, fold)
        out.mkdir(parents=True, exist_ok=True)
        with (out / "train.log").open("a", encoding="utf-8") as sink:
            rc = subprocess.call(cmd, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
        if rc != 0:
            logger.error("fold %d: the bundle exited with %d (see %s)", fold, rc, out / "train.log")
            return rc
        if not finished(args.cv_dir, fold, epochs):
            logger.info("fold %d: stopped by the time budget; run this again to continue", fold)
            return 0
        rc = export_last_epoch(args.cv_dir, fold)
        if rc != 0:
            return rc
    return 0


def export_last_epoch(cv_dir: Path, fold: int) -> int:
    """Write the fold's last epoch generator to ``fold<k>/model.pt`` (fp32, as trained)."""
    source = checkpoints_newest_first(fold_dir(cv_dir, fold) / "checkpoints")[0]
    target = fold_dir(cv_dir, fold) / "model.pt"
    cmd = [sys.executable, str(ROOT / "scripts" / "export_model.py"), str(source), str(target)]
    logger.info("fold %d: %s", fold, shlex.join(cmd))
    return subprocess.call(cmd, cwd=ROOT)


if __name__ == "__main__":
    raise SystemExit(main())
