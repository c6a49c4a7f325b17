"""The MONAI bundle: tiny CPU runs of every config, resume after a kill, DDP with gloo, verify commands."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow
from PIL import Image

from fracseg.data import ensure_prepared, load_datalist
from fracseg.inference.batch import CSV_COLUMNS
from fracseg.networks import build_discriminator, build_generator

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundle" / "configs"
TINY_CHANNELS = [8, 16, 32, 64, 128]
#: Images of each class in the tiny runs (see ``prepared``).
TINY_IMAGES = 32


@pytest.fixture(scope="module")
def prepared(shared_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    ensure_prepared(shared_data / "fracatlas", out)
    # The tiny runs train and validate on 32 fractured and 32 non-fractured valid images: every image costs
    # its read and letterbox when the run's CacheDataset fills (about 40 ms on one core), and these runs test
    # the bundle's wiring, not the data (the full datalist is what test_prepare_shared counts).
    datalist = out / "datalist.json"
    content = json.loads(datalist.read_text())
    content["fractured_tiny"] = content["validation"][:TINY_IMAGES]
    content["negatives_tiny"] = content["negatives_valid"][:TINY_IMAGES]
    datalist.write_text(json.dumps(content))
    return out


def tiny_overrides(shared_data: Path, prepared: Path, run_dir: Path, **extra) -> dict:
    """Overrides for a seconds-long CPU run on 32 fractured and 32 non-fractured valid images at 64x64."""
    overrides = {
        "dataset_dir": str(shared_data / "fracatlas"),
        "prepared_dir": str(prepared),
        "output_dir": str(run_dir / "runs"),
        "ckpt_dir": str(run_dir / "models"),
        "device": "$torch.device('cpu')",
        "spatial_size": 64,
        "patch_size": [64, 64],
        "generator_channels": TINY_CHANNELS,
        "discriminator_channels": 8,
        "train_keys": ["fractured_tiny", "negatives_tiny"],
        "val_keys": ["fractured_tiny"],
        "num_workers": 0,
        "batch_size": 8,
        "learning_rate": 0.003,
        "warmup_epochs": 1,
        "ramp_epochs": 1,
        "click_probability": 0.5,
    }
    overrides.update(extra)
    return overrides


def cli_args(overrides: dict) -> list[str]:
    args = []
    for key, value in overrides.items():
        args += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return args


def run_workflow(config_files: list[Path], overrides: dict) -> tuple[ConfigWorkflow, list[dict], dict]:
    """Run a bundle workflow in-process, recording every iteration's losses and the critic's initial state."""
    workflow = ConfigWorkflow(
        config_file=[str(f) for f in config_files],
        meta_file=str(CONFIGS / "metadata.json"),
        workflow_type="train",
        **overrides,
    )
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    records: list[dict] = []

    def record(engine) -> None:
        out = engine.state.output[0]
        records.append({"epoch": engine.state.epoch, **{k: float(out[k]) for k in ("seg_loss", "d_loss")}})

    trainer.add_event_handler(Events.ITERATION_COMPLETED, record)
    critic = workflow.parser.get_parsed_content("discriminator")
    critic_before = {k: v.detach().clone() for k, v in critic.state_dict().items()}
    workflow.run()
    workflow.finalize()
    return workflow, records, critic_before


def test_training_runs_loss_decreases_and_checkpoints_reload(shared_data, prepared, tmp_path) -> None:
    overrides = tiny_overrides(shared_data, prepared, tmp_path, epochs=3)
    workflow, records, critic_before = run_workflow([CONFIGS / "train.json"], overrides)
    critic_after = workflow.parser.get_parsed_content("discriminator").state_dict()
    assert any(not torch.equal(critic_before[k], critic_after[k]) for k in critic_before)
    seg = {e: np.mean([r["seg_loss"] for r in records if r["epoch"] == e]) for e in (1, 2, 3)}
    assert seg[3] < seg[1], seg
    assert all(r["d_loss"] == 0 for r in records if r["epoch"] == 1)  # warm-up: no critic step
    assert any(r["d_loss"] > 0 for r in records if r["epoch"] == 3)
    ckpt = torch.load(tmp_path / "runs" / "checkpoints" / "checkpoint_epoch=3.pt", weights_only=True)
    assert {"model", "discriminator", "optimizer", "d_optimizer", "trainer", "rng", "lr_scheduler"} <= set(
        ckpt
    )
    generator = build_generator(channels=TINY_CHANNELS)
    generator.load_state_dict(ckpt["model"])
    build_discriminator(channels=8).load_state_dict(ckpt["discriminator"])
    best = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    build_generator(channels=TINY_CHANNELS).load_state_dict(best)
    evaluator = workflow.parser.get_parsed_content("validate#evaluator")
    assert 0 < evaluator.state.best_metric <= 1 and "val_mean_iou" in evaluator.state.metrics


def test_adversarial_weight_zero_is_the_supervised_ablation(shared_data, prepared, tmp_path) -> None:
    overrides = tiny_overrides(shared_data, prepared, tmp_path, epochs=2, adversarial_weight=0.0)
    workflow, records, critic_before = run_workflow([CONFIGS / "train.json"], overrides)
    assert records and all(r["d_loss"] == 0 for r in records)
    critic_after = workflow.parser.get_parsed_content("discriminator").state_dict()
    assert all(torch.equal(critic_before[k], critic_after[k]) for k in critic_before)
    state = torch.load(tmp_path / "runs" / "checkpoints" / "checkpoint_epoch=2.pt", weights_only=True)
    assert state["d_optimizer"]["state"] == {}  # the critic's optimiser never stepped


def _train_cmd(overrides: dict, *config: Path) -> list[str]:
    files = str([str(c) for c in config]) if len(config) > 1 else str(config[0])
    return [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        files,
        *cli_args(overrides),
    ]


@pytest.mark.parametrize(
    ("overlays", "precision"),
    [((), "fp32"), (("train_gpu.json",), "auto")],
    ids=["train-fp32", "train_gpu"],
)
def test_resume_after_kill_matches_an_uninterrupted_run(
    shared_data, prepared, tmp_path, overlays, precision
) -> None:
    """Bit-identical resume: train.json in fp32 (DataLoader, per-sample augmentation), and with the GPU
    overlay (data on the device, ThreadDataLoader, bf16 autocast and channels_last whatever ``precision``
    says, BatchAugment re-seeded every epoch; here the device is the CPU, the same code path as on a GPU
    but for the kernels). The overlay's run is the bf16 + channels_last case: a third run of train.json
    under bf16 was merged into it (each run here is three bundle processes, ~12 s of imports each)."""
    configs = [CONFIGS / "train.json", *(CONFIGS / name for name in overlays)]
    # Fractured images only: the resume, not the data, is under test.
    short = {"epochs": 2, "precision": precision, "train_keys": ["fractured_tiny"]}
    full = tiny_overrides(shared_data, prepared, tmp_path / "full", **short)
    proc = subprocess.run(_train_cmd(full, *configs), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "val_mean_dice" in proc.stdout + proc.stderr  # the recipe validates and keeps its best model
    assert (tmp_path / "full" / "models" / "model.pt").exists()

    cut = tiny_overrides(shared_data, prepared, tmp_path / "cut", **short)
    ckpt_dir = tmp_path / "cut" / "runs" / "checkpoints"
    with subprocess.Popen(
        _train_cmd(cut, *configs),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    ) as victim:
        deadline = time.monotonic() + 300
        while not (ckpt_dir / "checkpoint_epoch=1.pt").exists():
            assert victim.poll() is None and time.monotonic() < deadline, "training ended before the kill"
            time.sleep(0.05)
        os.killpg(victim.pid, signal.SIGKILL)
    killed_at = sorted(p.name for p in ckpt_dir.glob("checkpoint_epoch=*.pt"))
    assert "checkpoint_epoch=2.pt" not in killed_at
    proc = subprocess.run(_train_cmd(cut, *configs), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stdout + proc.stderr
    a = torch.load(tmp_path / "full" / "runs" / "checkpoints" / "checkpoint_epoch=2.pt", weights_only=True)
    b = torch.load(ckpt_dir / "checkpoint_epoch=2.pt", weights_only=True)
    for net in ("model", "discriminator"):
        for key in a[net]:
            assert torch.equal(a[net][key], b[net][key]), f"{net}.{key} differs after resume"
    assert a["trainer"]["iteration"] == b["trainer"]["iteration"]


def test_ddp_with_two_gloo_processes(shared_data, prepared, tmp_path) -> None:
    overrides = tiny_overrides(
        shared_data, prepared, tmp_path, epochs=2, batch_size=4, train_keys=["fractured_tiny"]
    )
    files = str([str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json")])
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        files,
        *cli_args(overrides),
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "Epoch: 2/2, Iter: 4/4" in log  # 32 images / 2 ranks / batch 4 = 4 iterations per rank
    ckpt = torch.load(tmp_path / "runs" / "checkpoints" / "checkpoint_epoch=2.pt", weights_only=True)
    build_generator(channels=TINY_CHANNELS).load_state_dict(ckpt["model"])  # saved unwrapped (no "module.")


@pytest.fixture(scope="module")
def trained_model(shared_data, prepared, tmp_path_factory) -> Path:
    """One tiny epoch with MLflow tracking on (test_mlflow_tracking_logs_locally reads its store); the
    critic steps from the first iteration (no warm-up). The evaluate and inference tests use its model."""
    run_dir = tmp_path_factory.mktemp("trained")
    overrides = tiny_overrides(shared_data, prepared, run_dir, epochs=1, warmup_epochs=0, ramp_epochs=0)
    cmd = [*_train_cmd(overrides, CONFIGS / "train.json"), "--tracking", "mlflow"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


#: The fracseg report step of evaluate.json scores this many images of each class (``eval_limit``).
EVAL_LIMIT = 16


def test_evaluate_config_writes_metrics(shared_data, prepared, trained_model) -> None:
    overrides = tiny_overrides(shared_data, prepared, trained_model, eval_limit=EVAL_LIMIT)
    files = str([str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")])
    cmd = [sys.executable, "-m", "monai.bundle", "run", "evaluating", "--config_file", files]
    proc = subprocess.run([*cmd, *cli_args(overrides)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = (trained_model / "runs" / "eval" / "val_mean_dice_summary.csv").read_text().splitlines()
    assert summary[0].startswith("class,mean") and summary[1].endswith(f"{TINY_IMAGES}.0000")
    # Step 2: the fracseg report on the same split, at the displayed size, with the bundle's rule.
    metrics = json.loads((trained_model / "runs" / "eval" / "report" / "metrics.json").read_text())
    assert metrics["split"] == "valid" and metrics["fractured_images"] == EVAL_LIMIT
    assert metrics["non_fractured_images"] == EVAL_LIMIT and metrics["model"]["trained_model"]
    assert (trained_model / "runs" / "eval" / "report" / "report.md").exists()


def test_inference_config_writes_masks_at_input_size(trained_model, tmp_path) -> None:
    out = tmp_path / "masks"
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "inference",  # the issue's command: `python -m monai.bundle run inference --config_file ...`
        "--config_file",
        str(CONFIGS / "inference.json"),
        "--input",
        str(REPO / "data" / "samples"),
        "--output_dir",
        str(out),
        "--ckpt_path",
        str(trained_model / "models" / "model.pt"),
        "--generator_channels",
        json.dumps(TINY_CHANNELS),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert np.asarray(Image.open(out / "IMG0002628_mask.png")).shape == (373, 454)  # EXIF-upright
    mask = np.asarray(Image.open(out / "IMG0003766_CR_mask.png"))
    assert mask.shape == (454, 373) and set(np.unique(mask)) <= {0, 255}
    assert len(list(out.glob("*_mask.png"))) == 5
    # Same output contract as `fracseg infer`: overlays at the displayed size and predictions.csv.
    assert Image.open(out / "IMG0002628_overlay.png").size == (454, 373)
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 5
    by_name = {Path(r["image"]).name: r for r in rows}
    assert int(by_name["IMG0003766_CR.dcm"]["mask_pixels"]) == int((mask == 255).sum())
    # One implementation: `fracseg infer` with the same weights and network gives the same masks and rows.
    bundle = tmp_path / "bundle" / "configs"
    bundle.mkdir(parents=True)
    config = json.loads((CONFIGS / "inference.json").read_text())
    (bundle / "inference.json").write_text(json.dumps({**config, "generator_channels": TINY_CHANNELS}))
    weights = str(trained_model / "models" / "model.pt")
    cli = [
        sys.executable,
        "-m",
        "fracseg",
        "infer",
        str(REPO / "data" / "samples"),
        "-o",
        str(tmp_path / "cli"),
    ]
    proc = subprocess.run(
        [*cli, "--bundle", str(bundle.parent), "--weights", weights, "--quiet"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_outputs(out, tmp_path / "cli")


def assert_same_outputs(bundle_out: Path, cli_out: Path) -> None:
    """The bundle run's and ``fracseg infer``'s results are identical: each mask PNG byte for byte, and every
    ``predictions.csv`` column but the timing (scores as both write them, 6 decimals), and each overlay PNG
    byte for byte (both drawn on the X-ray as read, at its displayed size)."""
    bundle_rows = list(csv.DictReader((bundle_out / "predictions.csv").open()))
    cli_rows = list(csv.DictReader((cli_out / "predictions.csv").open()))
    assert len(bundle_rows) == len(cli_rows) == len(list(bundle_out.glob("*_mask.png"))) > 0

    def by_image(rows: list[dict]) -> dict[str, dict]:
        return {
            Path(r["image"]).resolve().as_posix(): {k: v for k, v in r.items() if k != "seconds"}
            for r in rows
        }

    assert by_image(bundle_rows) == by_image(cli_rows)
    for row in bundle_rows:
        assert (bundle_out / row["mask"]).read_bytes() == (cli_out / row["mask"]).read_bytes(), row["mask"]
        overlay = row["mask"].replace("_mask.png", "_overlay.png")
        assert (bundle_out / overlay).read_bytes() == (cli_out / overlay).read_bytes(), overlay


def test_shipped_bundle_run_and_fracseg_infer_give_identical_outputs(tmp_path) -> None:
    """Issue 29: the bundle's own command and the CLI assemble one inference from inference.json (shipped
    weights, mirror, precision and decision rule as the bundle ships them) and agree exactly."""
    samples = str(REPO / "data" / "samples")
    bundle_cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(CONFIGS / "inference.json"),
    ]
    proc = subprocess.run(
        [*bundle_cmd, "--input", samples, "--output_dir", str(tmp_path / "bundle")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    cli = [sys.executable, "-m", "fracseg", "infer", samples, "-o", str(tmp_path / "cli"), "--quiet"]
    proc = subprocess.run(cli, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_outputs(tmp_path / "bundle", tmp_path / "cli")
    rows = list(csv.DictReader((tmp_path / "cli" / "predictions.csv").open()))
    assert sum(int(r["fracture_present"]) for r in rows) > 0 and any(int(r["mask_pixels"]) for r in rows)


def test_bundle_verification_commands_run_offline() -> None:
    """``verify_metadata`` runs as the command a user types (the schema must come from the vendored file,
    not a download); the two ``verify_net_in_out`` checks run in-process, the very functions that
    ``python -m monai.bundle verify_net_in_out ...`` calls (two fresh interpreters' imports saved)."""
    command = ["verify_metadata", "--meta_file", "bundle/configs/metadata.json"]
    command += ["--filepath", "bundle/docs/meta_schema.json"]
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *command],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "verified with no error" in proc.stdout + proc.stderr
    assert "Downloading" not in proc.stdout + proc.stderr

    import logging

    from monai.bundle import verify_net_in_out

    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    monai_logger = logging.getLogger("monai.bundle.scripts")
    monai_logger.addHandler(handler)
    try:
        meta = str(CONFIGS / "metadata.json")
        verify_net_in_out("network_def", meta_file=meta, config_file=str(CONFIGS / "inference.json"))
        verify_net_in_out("network_def", meta_file=meta, config_file=str(CONFIGS / "train.json"), n=2)
    finally:
        monai_logger.removeHandler(handler)
    assert messages.count("data shape of network is verified with no error.") == 2, messages


def test_metadata_declares_fracture_label_one() -> None:
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    out = meta["network_data_format"]["outputs"]["pred"]
    assert out["channel_def"] == {"0": "background", "1": "fracture"}
    assert len(meta["network_data_format"]["inputs"]["image"]["spatial_shape"]) == 2
    train = json.loads((CONFIGS / "train.json").read_text())
    assert train["training"] == "%run"
    for key in ("network_def", "network", "train", "validate", "run", "initialize"):
        assert key in train
    assert {"trainer", "dataset", "handlers"} <= set(train["train"])


def test_cpu_recipe_parses_and_trains_one_short_epoch(shared_data, prepared, tmp_path) -> None:
    """train_cpu.json with its own networks and sampling, one short epoch at 64x64: the precision switch
    resolves, the learning curve gets its row (AUROC from the valid negatives) and the cosine is fitted."""
    recipe = json.loads((CONFIGS / "train_cpu.json").read_text())
    overrides = tiny_overrides(
        shared_data, prepared, tmp_path, epochs=2, val_interval=1, time_budget_s=3600, precision="bf16"
    )
    overrides["val_keys"] = ["fractured_tiny", "negatives_tiny"]
    for key in ("generator_channels", "discriminator_channels", "warmup_epochs", "ramp_epochs"):
        overrides.pop(key)
    workflow, records, _ = run_workflow([CONFIGS / "train.json", CONFIGS / "train_cpu.json"], overrides)
    parser = workflow.parser
    assert parser.get_parsed_content("generator_channels") == recipe["generator_channels"]
    assert parser.get_parsed_content("amp") is True and parser.get_parsed_content("channels_last") is True
    assert records and all(r["d_loss"] == 0 for r in records)  # the critic waits for its warm-up
    rows = [json.loads(line) for line in (tmp_path / "runs" / "curves.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[-1]["val_images"] == 2 * TINY_IMAGES and 0.0 <= rows[-1]["val_auroc"] <= 1.0
    assert 0.0 <= rows[-1]["val_dice_05"] <= rows[-1]["val_best_dice"] <= 1.0
    assert parser.get_parsed_content("lr_scheduler").T_max == 2  # fitted to the budget, capped at epochs


def test_finetune_overlay_continues_from_weights_supervised_with_negatives(
    shared_data, prepared, tmp_path
) -> None:
    """train_cpu_finetune.json on top of train_cpu.json, one short epoch at 64x64: the generator starts
    from the given weights, the critic never steps, and non-fractured training images are in the batches.

    The recipe's data (``training`` + ``negatives_train``, about 1,900 images) is checked whole; the epoch
    runs on 24 of each class drawn from it, so the test costs seconds rather than a full-data epoch."""
    recipe = json.loads((CONFIGS / "train_cpu_finetune.json").read_text())
    recipe_data = load_datalist(prepared / "datalist.json", recipe["train_keys"])
    fractured = [item for item in recipe_data if item["fractured"] == 1]
    normal = [item for item in recipe_data if item["fractured"] == 0]
    assert len(fractured) > 500 and len(normal) > 1000
    overrides = tiny_overrides(shared_data, prepared, tmp_path, epochs=1, val_interval=1, time_budget_s=3600)
    for key in ("warmup_epochs", "ramp_epochs", "learning_rate", "train_keys"):
        overrides.pop(key)
    overrides["val_keys"] = ["fractured_tiny", "negatives_tiny"]
    overrides["train#dataset#data"] = fractured[:24] + normal[:24]
    start = build_generator(channels=TINY_CHANNELS)
    torch.save({"model": start.state_dict()}, tmp_path / "start.pt")
    overrides["init_weights"] = str(tmp_path / "start.pt")
    configs = [CONFIGS / "train.json", CONFIGS / "train_cpu.json", CONFIGS / "train_cpu_finetune.json"]
    workflow = ConfigWorkflow(
        config_file=[str(f) for f in configs],
        meta_file=str(CONFIGS / "metadata.json"),
        workflow_type="train",
        **overrides,
    )
    workflow.initialize()
    parser = workflow.parser
    assert parser.get_parsed_content("train_keys") == recipe["train_keys"] == ["training", "negatives_train"]
    assert parser.get_parsed_content("adversarial_weight") == 0.0
    assert parser.get_parsed_content("datalist") == str(prepared / "datalist.json")
    trainer = parser.get_parsed_content("train#trainer")
    network = parser.get_parsed_content("network")
    first: dict = {}

    def check_start(engine) -> None:  # after InitialWeights (attached earlier): the release weights are in
        first["equal"] = all(torch.equal(v, start.state_dict()[k]) for k, v in network.state_dict().items())

    trainer.add_event_handler(Events.ITERATION_STARTED(once=1), check_start)
    d_losses: list[float] = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: d_losses.append(float(e.state.output[0]["d_loss"]))
    )
    seg_losses: list[float] = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: seg_losses.append(float(e.state.output[0]["seg_loss"]))
    )
    workflow.run()
    workflow.finalize()
    assert first == {"equal": True}
    assert d_losses and all(d == 0 for d in d_losses)
    assert seg_losses and all(math.isfinite(v) for v in seg_losses)
    assert (tmp_path / "models" / "model.pt").exists()


def test_mlflow_tracking_logs_locally(trained_model) -> None:
    import mlflow  # installed with monailabel (monai[mlflow])

    store = trained_model / "runs" / "mlruns.db"
    assert store.exists()
    mlflow.set_tracking_uri(f"sqlite:///{store}")
    runs = mlflow.search_runs(search_all_experiments=True)
    assert len(runs) == 1
    assert {"metrics.train_loss", "metrics.val_mean_dice"} <= set(runs.columns)
