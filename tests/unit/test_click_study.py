"""studies/click_study.py: where the simulated annotator clicks, and one real run of the protocol."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fracseg.engines.clicks import BACKGROUND_CHANNEL, FOREGROUND_CHANNEL
from fracseg.evaluation.metrics import pixel_metrics
from fracseg.inference import Predictor
from fracseg.io import read_xray

REPO = Path(__file__).resolve().parents[2]


def _script(name: str, folder: str = "studies"):
    spec = importlib.util.spec_from_file_location(name, REPO / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def study():
    return _script("click_study")


def _masks(size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros((1, 1, size, size)), torch.zeros((1, 1, size, size))


def test_foreground_click_at_centre_of_largest_missed_region(study) -> None:
    pred, truth = _masks()
    truth[..., 10:21, 30:41] = 1  # 11x11 missed fracture, centre (15, 35)
    pred[..., 50:53, 5:8] = 1  # 3x3 false alarm: smaller
    heat, kind = study.next_click(pred, truth, torch.Generator().manual_seed(0))
    assert kind == "foreground"
    assert heat[BACKGROUND_CHANNEL].max() == 0
    assert tuple(np.unravel_index(int(heat[FOREGROUND_CHANNEL].argmax()), heat.shape[1:])) == (15, 35)
    assert heat[FOREGROUND_CHANNEL].max() == pytest.approx(1.0)


def test_background_click_when_the_false_alarm_is_larger(study) -> None:
    pred, truth = _masks()
    truth[..., 10:13, 30:33] = 1
    pred[..., 40:61, 2:23] = 1  # 21x21 false alarm, centre (50, 12)
    heat, kind = study.next_click(pred, truth, torch.Generator().manual_seed(0))
    assert kind == "background"
    assert heat[FOREGROUND_CHANNEL].max() == 0
    assert tuple(np.unravel_index(int(heat[BACKGROUND_CHANNEL].argmax()), heat.shape[1:])) == (50, 12)


def test_no_click_on_a_perfect_prediction(study) -> None:
    pred, truth = _masks()
    pred[..., 5:9, 5:9] = truth[..., 5:9, 5:9] = 1
    assert study.next_click(pred, truth, torch.Generator()) is None


def test_study_on_real_fracatlas_images(study, shared_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "fracatlas"
    _script("gpu_release", "scripts")._subset_fracatlas(shared_data / "fracatlas", root, 2)
    out = tmp_path / "out"
    assert study.main([str(root), "--prepared", str(tmp_path / "prepared"), "--output", str(out)]) == 0

    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 2 and summary["failed"] == 0
    assert set(summary["mean_dice"]) == {"0", "1", "3", "5"}
    with (out / "per_image.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and all(len(r["clicks"].split()) == 5 for r in rows)

    # Without clicks the study sees exactly what automatic inference (fracseg infer / evaluate) returns.
    datalist = json.loads((tmp_path / "prepared" / "datalist.json").read_text())
    predictor = Predictor()
    for row, entry in zip(rows, datalist["validation"], strict=True):
        truth = read_xray(entry["label"]).array > 0
        expected = pixel_metrics(predictor.predict(entry["image"]).mask, truth)["dice"]
        assert float(row["dice_0"]) == pytest.approx(expected, abs=1e-6)
    # Clicks change the prediction on real images (the guidance channels reach the generator).
    assert any(float(r["dice_5"]) != float(r["dice_0"]) for r in rows)
