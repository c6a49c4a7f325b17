"""The GPU release script, rehearsed on the CPU: a small real FracAtlas subset goes through training,
export, calibration, evaluation and both benchmarks, and the fetched files install into a bundle copy.

This is the script a session with a lent GPU runs in one call, so it must work the first time there.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from fracseg.inference import Predictor

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
SCRIPT = REPO / "scripts" / "gpu_release.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_release", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def devdata(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (SHARED / "fracatlas").is_dir():
        pytest.fail(f"{SHARED / 'fracatlas'} is missing: the tests need ../shared/data")
    root = tmp_path_factory.mktemp("devdata")
    _module()._subset_fracatlas(SHARED / "fracatlas", root / "fracatlas", 4)
    shutil.copytree(SHARED / "dicom", root / "dicom")
    return root


def test_subset_keeps_the_release_layout_consistent(devdata: Path) -> None:
    root = devdata / "fracatlas"
    fractured = {p.name for p in (root / "images" / "Fractured").iterdir()}
    negatives = {p.name for p in (root / "images" / "Non_fractured").iterdir()}
    assert len(fractured) == 8 and len(negatives) == 12
    coco = json.loads((root / "Annotations" / "COCO JSON" / "COCO_fracture_masks.json").read_text())
    assert {i["file_name"] for i in coco["images"]} <= fractured | negatives
    assert coco["annotations"] and {a["image_id"] for a in coco["annotations"]} <= {
        i["id"] for i in coco["images"]
    }
    rows = (root / "dataset.csv").read_text().splitlines()
    assert len(rows) == 1 + 20


def test_release_rehearsal_produces_an_installable_model(devdata: Path, tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    cmd = [sys.executable, str(SCRIPT), "release", "--rehearse", "--epochs", "2", "--budget", "120"]
    cmd += ["--data", str(devdata), "--work", str(work), "--out", str(out)]
    cmd += ["--set", "generator_channels=[4, 8, 16, 32, 64]"]  # overrides reach training and export
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "release_summary.json").read_text())
    assert set(summary["steps"]) >= {"env", "bench_train", "train", "export", "evaluate_calibrate"}
    assert all(step["rc"] == 0 for step in summary["steps"].values())
    assert 0.0 <= summary["eval_valid"]["dice_mean"] <= 1.0
    config = json.loads((out / "inference.json").read_text())
    assert config["generator_channels"] == [4, 8, 16, 32, 64] and config["spatial_size"] == 128
    calibration = summary["eval_calibrate"]["calibration"]
    assert config["decision_rule"]["score_top_pixels"] == calibration["score_top_pixels"]
    with tarfile.open(out / "release.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"release/train.log", "release/eval_valid/metrics.json", "release/bench_infer.log"} <= names
    assert sorted(p.name for p in out.iterdir()) == [
        "inference.json",
        "model.pt",
        "release.tar.gz",
        "release_summary.json",
    ]

    bundle = tmp_path / "bundle"
    shutil.copytree(REPO / "bundle" / "configs", bundle / "configs")
    (bundle / "models").mkdir()
    apply = [sys.executable, str(SCRIPT), "apply", str(out / "model.pt"), str(out / "inference.json")]
    subprocess.run([*apply, "--bundle", str(bundle)], check=True, capture_output=True, cwd=REPO)
    state = torch.load(bundle / "models" / "model.pt", map_location="cpu", weights_only=True)["model"]
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    predictor = Predictor(weights=bundle / "models" / "model.pt", bundle=bundle)
    prediction = predictor.predict(SHARED / "dicom" / "CR-MONO1-10-chest.dcm")
    assert prediction.probability.shape == (440, 440)
    assert prediction.probability.dtype == np.float32
    assert np.isfinite(prediction.probability).all() and prediction.probability.min() >= 0.0
