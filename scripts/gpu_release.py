"""Train, evaluate and benchmark the release model on a lent GPU machine, in one prepared call.

The GPU machine (see the device tool's README) has Python 3.12, torch and numpy 2 but no MONAI, ignite
or pydicom, no ``../shared`` and no network. This script covers the three ends of that trip; it uses the
standard library only, so it runs before the carried packages are importable:

``pack`` (here)
    Download the wheels the machine lacks into ``.whl/`` and copy FracAtlas and the CR DICOMs into
    ``.devdata/`` (both git-ignored), check that the working tree fits the 64 MiB carry limit, and print
    the device command. ``--subset N`` makes a consistent small FracAtlas instead (a rehearsal).
``release`` / ``ablation`` (there)
    ``release``: environment report, training-throughput benchmark, the bundle's own training command
    on ``train.json`` + ``train_gpu.json`` (seed 0, wall-clock budget), export as fp16 ``model.pt``
    into a copy of the bundle whose ``inference.json`` matches the trained network, evaluation on valid
    with ``--calibrate``, the chosen rule written into that ``inference.json``, evaluation again with
    it, and the inference benchmark. ``ablation``: ``studies/ablation.py`` on the GPU recipe (GAN vs
    supervised, 3 seeds, equal epochs). Every step has a timeout and its log is kept; a failed step
    does not stop later independent steps. At most 8 files come back from ``$OUT``: ``model.pt``,
    ``inference.json``, ``summary.json`` and a ``.tar.gz`` of logs, metrics and reports.
``apply`` (here)
    Copy a fetched ``model.pt`` and the network/rule keys of its ``inference.json`` into ``bundle/``.

``--rehearse`` runs ``release``/``ablation`` on the CPU at toy sizes, to test this script end to end.

    python3 scripts/gpu_release.py pack
    # device run, carry [".whl", ".devdata"], command:
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \\
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; \\
        python3 scripts/gpu_release.py release --out $OUT
    python3 scripts/gpu_release.py apply /work/.device/.../model.pt /work/.device/.../inference.json
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
CONFIGS = REPO / "bundle" / "configs"
CARRY_LIMIT = 64 * 2**20
#: Wheels the GPU machine lacks (pure Python except pylibjpeg-libjpeg, for JPEG-lossless CR DICOM).
WHEELS = [
    "monai==1.6.1",
    "pytorch-ignite==0.5.5",
    "pydicom==2.4.5",
    "fire==0.7.1",
    "termcolor==3.3.0",
    "pylibjpeg==2.1.0",
    "pylibjpeg-libjpeg==2.2.0",
]
PLATFORMS = [
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
]
#: The network and decision-rule keys of inference.json that travel with a model.
MODEL_KEYS = ("generator_channels", "generator_strides", "generator_res_units", "spatial_size")
RULE_KEYS = ("threshold", "min_region_pixels", "score_top_pixels", "score_threshold")


# --------------------------------------------------------------------------------------------- pack
def _tree_bytes(paths: list[Path]) -> int:
    return sum(f.stat().st_size for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())


def _subset_fracatlas(src: Path, dst: Path, per_split: int) -> None:
    """A small FracAtlas with the release layout: ``per_split`` fractured images of train and valid and
    ``3 * per_split`` negatives, with dataset.csv, the split CSVs and the COCO file filtered to them."""
    split_dir = Path("Utilities") / "Fracture Split"
    keep: set[str] = set()
    for split in ("train", "valid"):
        with (src / split_dir / f"{split}.csv").open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        rows = rows[:per_split]
        keep |= {r["image_id"] for r in rows}
        (dst / split_dir).mkdir(parents=True, exist_ok=True)
        with (dst / split_dir / f"{split}.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    negatives = sorted((src / "images" / "Non_fractured").glob("*.jpg"))[: 3 * per_split]
    keep |= {p.name for p in negatives}
    for folder in ("Fractured", "Non_fractured"):
        (dst / "images" / folder).mkdir(parents=True, exist_ok=True)
        for path in (src / "images" / folder).glob("*"):
            if path.name in keep:
                shutil.copy2(path, dst / "images" / folder / path.name)
    with (src / "dataset.csv").open(newline="") as fh:
        reader = csv.DictReader(fh)
        rows = [r for r in reader if r["image_id"] in keep]
        fields = reader.fieldnames
    with (dst / "dataset.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    coco_rel = Path("Annotations") / "COCO JSON" / "COCO_fracture_masks.json"
    coco = json.loads((src / coco_rel).read_text())
    coco["images"] = [i for i in coco["images"] if i["file_name"] in keep]
    ids = {i["id"] for i in coco["images"]}
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in ids]
    (dst / coco_rel).parent.mkdir(parents=True, exist_ok=True)
    (dst / coco_rel).write_text(json.dumps(coco))


def cmd_pack(args: argparse.Namespace) -> int:
    wheels = REPO / ".whl"
    shutil.rmtree(wheels, ignore_errors=True)  # one version of each wheel, for one Python
    wheels.mkdir()
    pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    pip += ["--python-version", args.python, "--implementation", "cp"]
    for platform in PLATFORMS:
        pip += ["--platform", platform]
    subprocess.run([*pip, "-d", str(wheels), *WHEELS], check=True)
    data = REPO / ".devdata"
    shutil.rmtree(data, ignore_errors=True)
    (data / "dicom").mkdir(parents=True)
    for dcm in (SHARED / "dicom").glob("*.dcm"):
        shutil.copy2(dcm, data / "dicom" / dcm.name)
    if args.subset:
        _subset_fracatlas(SHARED / "fracatlas", data / "fracatlas", args.subset)
    else:
        shutil.copytree(SHARED / "fracatlas", data / "fracatlas")
    tracked = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    tree = _tree_bytes([REPO / t.decode() for t in tracked if t and (REPO / t.decode()).exists()])
    carried = _tree_bytes([wheels, data])
    total = tree + carried
    mib = 2**20
    print(
        f"working tree {tree / mib:.1f} MiB + .whl/.devdata {carried / mib:.1f} MiB = {total / mib:.1f} MiB"
    )
    if total > CARRY_LIMIT:
        print(f"too large for one device call ({CARRY_LIMIT / 2**20:.0f} MiB)", file=sys.stderr)
        return 1
    print('carry: [".whl", ".devdata"]')
    return 0


# ----------------------------------------------------------------------------------- release / ablation
class Steps:
    """Runs commands with timeouts, logging each to ``<work>/<name>.log`` and recording the outcome."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.results: dict[str, dict] = {}

    def run(self, name: str, cmd: list[str], timeout: float, env: dict | None = None) -> bool:
        log = self.work / f"{name}.log"
        start = time.monotonic()
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(cmd)}", flush=True)
        with log.open("w") as fh:
            fh.write(" ".join(cmd) + "\n")
            fh.flush()
            try:
                proc = subprocess.run(
                    cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout, cwd=REPO, env=env
                )
                rc = proc.returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        seconds = round(time.monotonic() - start, 1)
        self.results[name] = {"rc": rc, "seconds": seconds}
        tail = log.read_text(errors="replace").splitlines()[-15:]
        print(f"    -> rc {rc} in {seconds} s; log tail:\n      " + "\n      ".join(tail), flush=True)
        return rc == 0


def _python() -> list[str]:
    return [sys.executable]


def _env() -> dict[str, str]:
    """The environment for the steps: this checkout first on ``PYTHONPATH`` (fracseg is not installed)."""
    paths = [str(REPO), os.environ.get("PYTHONPATH", "")]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p))


def _literal(value: object) -> str:
    """A bundle command-line value (``fire`` reads Python literals: ``False``, not ``false``)."""
    return value if isinstance(value, str) else repr(value)


def _bundle_args(overrides: dict) -> list[str]:
    out = []
    for key, value in overrides.items():
        out += [f"--{key}", _literal(value)]
    return out


def _parse_sets(items: list[str]) -> dict:
    """``key=value`` pairs of bundle overrides; values are Python literals where they parse as one
    (``False``, ``[16, 32]``, ``0.5``), else strings (``$torch.device('cpu')``)."""
    pairs: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        try:
            pairs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pairs[key] = value
    return pairs


def _rehearsal_overrides() -> dict:
    """Toy sizes for a CPU rehearsal of the GPU recipe (same configs and code path, tiny budget)."""
    return {
        "spatial_size": 128,
        "patch_size": [128, 128],
        "batch_size": 4,
        "val_batch_size": 4,
        "amp": False,
        "channels_last": False,
        "generator_channels": [8, 16, 32, 64, 128],
        "warmup_epochs": 1,
        "ramp_epochs": 1,
        "num_workers": 2,
    }


def _inference_config(bundle: Path) -> dict:
    return json.loads((bundle / "configs" / "inference.json").read_text())


def _write_inference_config(bundle: Path, updates: dict, rule: dict | None = None) -> None:
    """Top-level ``updates`` and the ``decision_rule``'s values ``rule`` into the bundle's inference.json."""
    path = bundle / "configs" / "inference.json"
    config = json.loads(path.read_text())
    config.update(updates)
    config["decision_rule"].update(rule or {})
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(config, indent=4) + "\n")
    os.replace(tmp, path)


def _merged_train_config(overrides: dict) -> dict:
    config = json.loads((CONFIGS / "train.json").read_text())
    config.update(json.loads((CONFIGS / "train_gpu.json").read_text()))
    config.update(overrides)
    return config


def _pack_outputs(work: Path, out: Path, name: str, extra: list[Path]) -> None:
    """``<out>/<name>.tar.gz`` with the small artefacts under ``work`` (no checkpoints, caches, masks)."""
    out.mkdir(parents=True, exist_ok=True)
    keep_suffixes = {".log", ".json", ".csv", ".md", ".html", ".png", ".txt"}
    skip_parts = {"prepared", "checkpoints", "models", "masks", "overlays"}
    with tarfile.open(out / f"{name}.tar.gz", "w:gz") as tar:
        for path in sorted(work.rglob("*")):
            rel = path.relative_to(work)
            small = path.is_file() and path.suffix in keep_suffixes and path.stat().st_size <= 4 * 2**20
            if small and not skip_parts & set(rel.parts):
                tar.add(path, arcname=str(Path(name) / rel))
        for path in extra:
            if path.exists():
                tar.add(path, arcname=str(Path(name) / path.name))


def cmd_release(args: argparse.Namespace) -> int:
    data = Path(args.data).resolve()
    fracatlas = data / "fracatlas"
    work = Path(args.work).resolve()
    out = Path(args.out).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    steps = Steps(work)
    device = "cpu" if args.rehearse else "cuda"
    overrides = _rehearsal_overrides() if args.rehearse else {}
    overrides.update(_parse_sets(args.set))
    overrides.update({"epochs": args.epochs, "time_budget_s": args.budget, "seed": args.seed})
    env = _env()

    probe = (
        "import sys, torch, numpy, monai, ignite, pydicom, fracseg; "
        "print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), "
        "torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-', 'numpy', numpy.__version__, "
        "'monai', monai.__version__, 'ignite', ignite.__version__, 'pydicom', pydicom.__version__)"
    )
    if not steps.run("env", [*_python(), "-c", probe], 120, env):
        _finish(work, out, steps, "release", [])
        return 1
    if shutil.which("nvidia-smi"):
        steps.run("nvidia_smi", ["nvidia-smi"], 30, env)

    config = _merged_train_config(overrides)
    channels = [str(c) for c in config["generator_channels"]]
    size = str(config["spatial_size"])
    bench = [*_python(), "scripts/bench_train.py", "--data", str(fracatlas), "--device", device]
    bench += ["--size", size, "--channels", *channels]
    bench += ["--batch", str(config["batch_size"]), "--repeats", "1" if args.rehearse else "3"]
    bench += ["--images", "8" if args.rehearse else "128"]
    amp = config.get("amp")  # True/False when the recipe or --set fixes it, else derived from "precision"
    precisions = ["fp32", "bf16"] if not isinstance(amp, bool) else ["bf16" if amp else "fp32"]
    bench += ["--precisions", *precisions]
    steps.run("bench_train", bench, 60 if args.rehearse else 150, env)

    run_dir = work / "release"
    train = [*_python(), "-m", "monai.bundle", "run", "training", "--config_file"]
    train += [str([str(CONFIGS / "train.json"), str(CONFIGS / "train_gpu.json")])]
    train += ["--dataset_dir", str(fracatlas), "--output_dir", str(run_dir)]
    train += ["--ckpt_dir", str(run_dir / "models"), "--prepared_dir", str(work / "prepared")]
    train += _bundle_args(overrides)
    trained = steps.run("train", train, args.budget + 240, env)
    best = run_dir / "models" / "model.pt"
    if not best.exists():
        _finish(work, out, steps, "release", [])
        return 1
    if not trained:
        print("training did not finish cleanly: exporting its best checkpoint so far", flush=True)

    bundle = work / "bundle"
    shutil.copytree(REPO / "bundle" / "configs", bundle / "configs")
    shutil.copytree(REPO / "bundle" / "docs", bundle / "docs")
    (bundle / "models").mkdir()
    _write_inference_config(
        bundle,
        {
            "generator_channels": config["generator_channels"],
            "generator_strides": config["generator_strides"],
            "generator_res_units": config["generator_res_units"],
            "spatial_size": config["spatial_size"],
        },
    )
    model = bundle / "models" / "model.pt"
    steps.run(
        "export",
        [*_python(), "scripts/export_model.py", str(best), str(model), "--bundle", str(bundle), "--fp16"],
        120,
        env,
    )
    evaluate = [*_python(), "-m", "fracseg", "evaluate", str(fracatlas), "--split", "valid", "--quiet"]
    evaluate += ["--bundle", str(bundle), "--device", device, "--prepared", str(work / "prepared")]
    if steps.run(
        "evaluate_calibrate", [*evaluate, "-o", str(work / "eval_calibrate"), "--calibrate"], 600, env
    ):
        calibration = json.loads((work / "eval_calibrate" / "metrics.json").read_text())["calibration"]
        _write_inference_config(bundle, {}, rule={k: calibration[k] for k in RULE_KEYS})
        steps.run("evaluate_valid", [*evaluate, "-o", str(work / "eval_valid")], 600, env)
    bench_infer = [*_python(), "scripts/bench_infer.py", "--device", device, "--data", str(data)]
    bench_infer += ["--bundle", str(bundle)]
    bench_infer += ["--jpegs", "4", "--dicoms", "1", "--repeats", "1"] if args.rehearse else ["--batch", "32"]
    steps.run("bench_infer", bench_infer, 60 if args.rehearse else 180, env)

    out.mkdir(parents=True, exist_ok=True)
    if model.exists():
        shutil.copy2(model, out / "model.pt")
        shutil.copy2(bundle / "configs" / "inference.json", out / "inference.json")
    _finish(work, out, steps, "release", [])
    return 0 if all(r["rc"] == 0 for r in steps.results.values()) else 1


def cmd_ablation(args: argparse.Namespace) -> int:
    data = Path(args.data).resolve()
    work = Path(args.work).resolve()
    out = Path(args.out).resolve()
    work.mkdir(parents=True, exist_ok=True)
    steps = Steps(work)
    overrides = _rehearsal_overrides() if args.rehearse else {}
    overrides.update(_parse_sets(args.set))
    overrides.update({"time_budget_s": args.budget})
    env = _env()
    cmd = [
        *_python(),
        "studies/ablation.py",
        "--out",
        str(work / "ablation"),
        "--dataset",
        str(data / "fracatlas"),
    ]
    cmd += ["--config", str(CONFIGS / "train_gpu.json"), "--epochs", str(args.epochs)]
    cmd += ["--device", "cpu" if args.rehearse else "cuda", "--seeds", *[str(s) for s in args.seeds]]
    cmd += ["--set", *[f"{k}={_literal(v)}" for k, v in overrides.items()]]
    steps.run("ablation", cmd, args.timeout, env)
    _finish(work, out, steps, "ablation", [])
    return 0 if all(r["rc"] == 0 for r in steps.results.values()) else 1


def _finish(work: Path, out: Path, steps: Steps, name: str, extra: list[Path]) -> None:
    summary = {"steps": steps.results}
    for metrics in ("eval_valid", "eval_calibrate"):
        path = work / metrics / "metrics.json"
        if path.exists():
            m = json.loads(path.read_text())
            summary[metrics] = {
                "dice_mean": m["pixel"]["dice"]["mean"],
                "dice_median": m["pixel"]["dice"]["median"],
                "iou_mean": m["pixel"]["iou"]["mean"],
                "mask_ap50": m["instance"]["mask_ap50"],
                "auroc": m["image"]["auroc"],
                "sensitivity": m["image"]["sensitivity"],
                "specificity": m["image"]["specificity"],
                "calibration": {k: m["calibration"][k] for k in (*RULE_KEYS, "crossfit")}
                if "calibration" in m
                else None,
            }
    ablation = work / "ablation" / "summary.json"
    if ablation.exists():
        summary["ablation"] = json.loads(ablation.read_text())["table"]
    out.mkdir(parents=True, exist_ok=True)
    (work / f"{name}_summary.json").write_text(json.dumps(summary, indent=1))
    shutil.copy2(work / f"{name}_summary.json", out / f"{name}_summary.json")
    _pack_outputs(work, out, name, extra)
    print(json.dumps(summary, indent=1), flush=True)


# ----------------------------------------------------------------------------------------------- apply
def cmd_apply(args: argparse.Namespace) -> int:
    """Install a fetched model and its network/rule keys into ``bundle/`` (then update the docs by hand)."""
    fetched = json.loads(Path(args.inference_json).read_text())
    updates = {k: fetched[k] for k in MODEL_KEYS if k in fetched}
    rule = {k: fetched["decision_rule"][k] for k in RULE_KEYS if k in fetched.get("decision_rule", {})}
    bundle = Path(args.bundle)
    target = bundle / "models" / "model.pt"
    tmp = target.with_suffix(".pt.tmp")
    shutil.copy2(args.model, tmp)
    os.replace(tmp, target)
    _write_inference_config(bundle, updates, rule)
    print(
        f"installed {target} and {json.dumps({**updates, 'decision_rule': rule})} "
        f"into {bundle}/configs/inference.json"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    pack = sub.add_parser("pack", help="wheels and data for the device call (run here)")
    pack.add_argument("--python", default="3.12", help="the device machine's Python version")
    pack.add_argument("--subset", type=int, default=0, help="N fractured images per split (rehearsal)")
    for name, epochs, budget in (("release", 60, 240), ("ablation", 15, 40)):
        p = sub.add_parser(name, help=f"{name} on the device machine")
        p.add_argument("--data", default=str(REPO / ".devdata"), help="folder with fracatlas/ and dicom/")
        p.add_argument("--work", default=str(REPO / "runs" / f"gpu_{name}"))
        p.add_argument("--out", default=os.environ.get("OUT", str(REPO / "runs" / "gpu_out")))
        p.add_argument("--epochs", type=int, default=epochs)
        p.add_argument(
            "--budget", type=float, default=budget, help="training seconds per run (time_budget_s)"
        )
        p.add_argument("--rehearse", action="store_true", help="CPU, toy sizes: test this script")
        p.add_argument(
            "--set", nargs="*", default=[], help="bundle overrides key=value, e.g. amp=False (a fallback)"
        )
    sub.choices["release"].add_argument("--seed", type=int, default=0)
    sub.choices["ablation"].add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    sub.choices["ablation"].add_argument("--timeout", type=float, default=540, help="whole ablation, seconds")
    apply = sub.add_parser("apply", help="install a fetched model.pt + inference.json into bundle/")
    apply.add_argument("model")
    apply.add_argument("inference_json")
    apply.add_argument("--bundle", default=str(REPO / "bundle"))
    args = parser.parse_args()
    return {"pack": cmd_pack, "release": cmd_release, "ablation": cmd_ablation, "apply": cmd_apply}[
        args.command
    ](args)


if __name__ == "__main__":
    sys.exit(main())
