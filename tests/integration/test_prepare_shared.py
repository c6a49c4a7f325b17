"""End to end: ``fracseg prepare fracatlas`` on the shared FracAtlas development subset."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.integration

TRUNCATED = {
    "IMG0004028",
    "IMG0004036",
    "IMG0004076",
    "IMG0004084",
    "IMG0004109",
    "IMG0004120",
    "IMG0004121",
    "IMG0004122",
    "IMG0004123",
    "IMG0004130",
    "IMG0004134",
    "IMG0004143",
    "IMG0004145",
    "IMG0004154",
    "IMG0004169",
    "IMG0004173",
    "IMG0004174",
    "IMG0004189",
    "IMG0004226",
    "IMG0004228",
    "IMG0004252",
    "IMG0004259",
    "IMG0004263",
    "IMG0004273",
    "IMG0004275",
    "IMG0004278",
    "IMG0004279",
    "IMG0004286",
    "IMG0004288",
    "IMG0004291",
    "IMG0004297",
    "IMG0004298",
}


@pytest.fixture(scope="module")
def prepared(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fracseg",
            "prepare",
            "fracatlas",
            str(shared_data / "fracatlas"),
            "--out",
            str(out),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout


def test_summary_counts(prepared) -> None:
    out, stdout = prepared
    assert "fractured images: 656 (training 574, validation 82)" in stdout
    assert "negatives: 1968 usable" in stdout
    assert "unreadable files: 32" in stdout
    report = json.loads((out / "report.json").read_text())
    assert {u["image_id"] for u in report["unreadable"]} == TRUNCATED
    assert report["counts"]["polygons"] == 855
    assert report["size_mismatches"] == [] and report["missing_images"] == []


def test_datalist_matches_official_split_files(prepared, shared_data) -> None:
    out, _ = prepared
    dl = json.loads((out / "datalist.json").read_text())
    split = shared_data / "fracatlas" / "Utilities" / "Fracture Split"
    for key, name in (("training", "train.csv"), ("validation", "valid.csv")):
        ids = {
            line.strip().removesuffix(".jpg") for line in (split / name).read_text().splitlines()[1:] if line
        }
        assert {e["image_id"] for e in dl[key]} == ids
    assert "test" not in dl  # withheld in the development subset
    assert not {e["image_id"] for e in dl["negatives"]} & TRUNCATED
    folds = [len(dl[k]) for k in ("negatives_train", "negatives_valid", "negatives_test")]
    assert folds == [1174, 399, 395] and sum(folds) == len(dl["negatives"]) == 1968
    held_out = {e["image_id"] for e in dl["negatives_valid"] + dl["negatives_test"]}
    assert not held_out & {e["image_id"] for e in dl["negatives_train"]}
    # k = 5 cross-validation over train+valid: 656 fractured + 1,573 negatives, stratified by hashing
    fractured = [sum(e["fractured"] for e in dl[f"cv_fold{k}"]) for k in range(5)]
    negatives = [sum(not e["fractured"] for e in dl[f"cv_fold{k}"]) for k in range(5)]
    assert fractured == [116, 134, 122, 133, 151] and negatives == [298, 321, 349, 287, 318]


def test_masks_match_image_sizes_including_exif_rotated(prepared, shared_data) -> None:
    out, _ = prepared
    content = json.loads((out / "datalist.json").read_text())
    dl = {e["image_id"]: e for e in content["training"] + content["validation"]}
    for image_id in ("IMG0002628", "IMG0002588"):  # EXIF orientation 8 and 3
        entry = dl[image_id]
        mask = np.asarray(Image.open(entry["label"]))
        assert mask.shape == (entry["height"], entry["width"])
        assert mask.max() == 1 and mask.sum() == entry["mask_pixels"] > 0
    assert (dl["IMG0002628"]["height"], dl["IMG0002628"]["width"]) == (373, 454)  # stored 454 high
    assert (dl["IMG0002588"]["height"], dl["IMG0002588"]["width"]) == (454, 181)
    for entry in list(dl.values())[::50]:
        mask = np.asarray(Image.open(entry["label"]))
        assert mask.shape == (entry["height"], entry["width"]) and mask.sum() == entry["mask_pixels"] > 0


def test_evaluate_cv_scores_each_held_out_fold_with_its_own_model(
    prepared, shared_data, tmp_path, capsys, caplog
) -> None:
    """``fracseg evaluate --cv``: each fold's checkpoint scores only its held-out fold; two folds of five are
    reported as partial. Untrained (seeded) generators: this checks the protocol, not the model."""
    import torch

    from fracseg.cli import main
    from fracseg.networks import build_generator

    out, _ = prepared
    cv_dir = tmp_path / "cv"
    for fold, seed in ((0, 0), (2, 1)):
        torch.manual_seed(seed)
        net = build_generator(channels=[16, 32, 64, 128, 256], strides=[2, 2, 2, 2], num_res_units=2)
        (cv_dir / f"fold{fold}" / "checkpoints").mkdir(parents=True)
        torch.save(
            {"model": net.state_dict()}, cv_dir / f"fold{fold}" / "checkpoints" / "checkpoint_epoch=3.pt"
        )
    result = tmp_path / "eval"
    argv = ["evaluate", str(shared_data / "fracatlas"), "--cv", str(cv_dir), "-o", str(result),
            "--prepared", str(out), "--limit", "2", "--quiet"]  # fmt: skip
    # in-process (as test_evaluate.py does): the same ``main`` the console script calls, without paying
    # twice for a fresh interpreter's torch/monai imports
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "folds [0, 2] (NOT all folds: partial figures)" in stdout
    assert "cross-fitted (rule and view chosen on the other folds)" in stdout
    metrics = json.loads((result / "metrics.json").read_text())
    assert metrics["folds"] == [0, 2] and metrics["complete"] is False
    assert metrics["images"] == {"cv_fold0": 4, "cv_fold2": 4}
    assert metrics["fold_checkpoints"] == {"0": "checkpoint_epoch=3.pt", "2": "checkpoint_epoch=3.pt"}
    assert metrics["release_rule"]["view"] in ("plain", "mirror")
    dl = json.loads((out / "datalist.json").read_text())
    fold_of = {e["image_id"]: k for k in range(5) for e in dl[f"cv_fold{k}"]}
    rows = (result / "per_image.csv").read_text().splitlines()[1:]
    assert len(rows) == 8
    for row in rows:
        image_id, split = row.split(",")[:2]
        assert split == f"cv_fold{fold_of[image_id]}" and fold_of[image_id] in (0, 2)
    # run again: the maps of each fold are reused (same weights, same images), the answers are the same
    assert sorted(p.name for p in (result / "out_of_fold").iterdir()) == ["fold0.npz", "fold2.npz"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fracseg"):
        assert main(argv) == 0
    assert sum("out-of-fold maps reused" in r.getMessage() for r in caplog.records) == 2
    assert (result / "per_image.csv").read_text().splitlines()[1:] == rows
