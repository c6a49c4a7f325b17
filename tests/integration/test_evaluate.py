"""``fracseg evaluate`` on real FracAtlas images and on a release-layout root with ``test.csv``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fracseg.cli import main
from fracseg.evaluation.evaluate import ROW_COLUMNS
from fracseg.evaluation.metrics import pixel_metrics
from fracseg.inference import Predictor
from tests.helpers.fracatlas_layout import make_layout

pytestmark = pytest.mark.integration


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_evaluate_valid_writes_metrics_report_and_rows_that_match_the_predictor(
    tmp_path, shared_data, prepared_shared
) -> None:
    out = tmp_path / "eval"
    code = main(
        [
            "evaluate",
            str(shared_data / "fracatlas"),
            "--split",
            "valid",
            "--limit",
            "3",
            "--calibrate",
            "-o",
            str(out),
            "--prepared",
            str(prepared_shared),
            "--quiet",
        ]
    )
    assert code == 0
    for name in ("metrics.json", "per_image.csv", "report.md", "report.html", "roc.png", "dice_hist.png"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())  # strict JSON: NaN written as null
    assert metrics["fractured_images"] == 3 and metrics["non_fractured_images"] == 3
    assert set(metrics["calibration"]) >= {"threshold", "score_top_pixels", "score_threshold", "crossfit"}
    fit = metrics["calibration"]["crossfit"]  # each hashed cv fold decided by the rule of the others
    assert len(fit["folds"]) >= 2 and set(map(int, fit["choices"])) == set(fit["folds"])
    block = fit["cross_fitted"]
    assert block["images"] == 6 and "auroc" in block["ci95"]
    assert all(0.0 <= block["image"][k] <= 1.0 for k in ("sensitivity", "specificity"))
    rows = _rows(out / "per_image.csv")
    assert list(rows[0]) == list(ROW_COLUMNS) and len(rows) == 6
    assert [int(r["fractured"]) for r in rows] == [1, 1, 1, 0, 0, 0]

    # Recompute one fractured image by hand: the CSV must hold the same Dice and instance count.
    datalist = json.loads((prepared_shared / "datalist.json").read_text())
    entry = datalist["validation"][0]
    pred = Predictor().predict(entry["image"])
    truth = np.asarray(Image.open(entry["label"])) > 0
    assert float(rows[0]["dice"]) == pytest.approx(pixel_metrics(pred.mask, truth)["dice"], abs=1e-6)
    assert int(rows[0]["gt_instances"]) == entry["polygons"]
    assert float(rows[0]["fracture_score"]) == pytest.approx(pred.fracture_score, abs=1e-6)
    assert metrics["pixel"]["dice"]["n"] == 3
    low, high = metrics["ci95"]["dice_mean"]
    assert low <= metrics["pixel"]["dice"]["mean"] <= high
    low, high = metrics["ci95"]["sensitivity"]
    assert 0.0 <= low <= metrics["image"]["sensitivity"] <= high <= 1.0
    assert set(metrics["ci95"]) == {"dice_mean", "auroc", "sensitivity", "specificity", "mask_ap50"}


def test_evaluate_test_split_of_a_full_release_layout_uses_held_out_negatives(tmp_path) -> None:
    root = make_layout(tmp_path / "FracAtlas", with_test=True)
    out = tmp_path / "eval"
    assert main(["evaluate", str(root), "--split", "test", "-o", str(out), "--quiet"]) == 0
    rows = _rows(out / "per_image.csv")
    datalist = json.loads((out / "prepared" / "datalist.json").read_text())
    expected = [e["image_id"] for e in datalist["test"] + datalist["negatives_test"]]
    assert [r["image_id"] for r in rows] == expected and rows[0]["image_id"] == "F5"


def test_evaluate_names_a_split_the_dataset_lacks(tmp_path, shared_data, prepared_shared, caplog) -> None:
    args = ["evaluate", str(shared_data / "fracatlas"), "--split", "test", "-o", str(tmp_path)]
    code = main([*args, "--prepared", str(prepared_shared), "--quiet"])
    assert code == 2
    assert "split 'test' is not in this dataset" in caplog.text
