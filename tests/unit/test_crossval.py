"""Cross-fitting (fracseg.evaluation.crossval): nothing about a fold is chosen on that fold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from monai.bundle import ConfigParser

from fracseg.data import prepare_fracatlas
from fracseg.evaluation.crossval import VIEWS, FoldCase, crossfit_folds, release_rule
from tests.helpers.fracatlas_layout import make_layout

SIZE = 48


def _case(fold: int, index: int, fractured: bool, rng: np.random.Generator) -> FoldCase:
    truth = np.zeros((SIZE, SIZE), dtype=bool)
    plain = rng.uniform(0.0, 0.3, (SIZE, SIZE)).astype(np.float32)
    if fractured:
        y, x = rng.integers(8, SIZE - 16, 2)
        truth[y : y + 8, x : x + 8] = True
        plain[y : y + 8, x + 1 : x + 9] = rng.uniform(0.5, 0.95)  # a shifted, partly right blob
    else:
        y, x = rng.integers(0, SIZE - 4, 2)
        plain[y : y + 4, x : x + 4] = rng.uniform(0.2, 0.7)  # a false speck of varying strength
    mirror = (plain + np.fliplr(np.fliplr(plain) * 0.9)) / 2
    entry = {"image_id": f"I{fold}_{index}", "fractured": int(fractured), "body_part": "hand"}
    maps = {"plain": plain.astype(np.float16), "mirror": mirror.astype(np.float16)}
    return FoldCase(entry, fold, truth, [truth] if fractured else [], maps)


def _cases(seed: int = 0) -> list[FoldCase]:
    rng = np.random.default_rng(seed)
    return [_case(f, i, i % 2 == 0, rng) for f in range(3) for i in range(12)]


def test_every_image_is_decided_once_by_a_rule_chosen_without_its_fold() -> None:
    cases = _cases()
    result = crossfit_folds(cases, [0, 1, 2])
    rows = result["rows"]
    assert sorted(r.row["image_id"] for r in rows) == sorted(c.entry["image_id"] for c in cases)
    assert result["cross_fitted"]["fractured_images"] == 18
    assert set(result["choices"]) == {0, 1, 2}
    assert all(result["choices"][k]["view"] in VIEWS for k in (0, 1, 2))
    # change only fold 0's maps: fold 0's rule and view stay; the rules chosen on fold 0 may move
    changed = [
        FoldCase(
            c.entry,
            c.fold,
            c.truth,
            c.instances,
            {k: (v * 0.5).astype(np.float16) for k, v in c.maps.items()},
        )
        if c.fold == 0
        else c
        for c in cases
    ]
    again = crossfit_folds(changed, [0, 1, 2])
    assert again["choices"][0] == result["choices"][0]
    assert again["choices"][1] != result["choices"][1] or again["choices"][2] != result["choices"][2]
    # fold 0's own rows did change (its maps were halved), so the figures are measured on fold 0's maps
    before = {r.row["image_id"]: r.row["fracture_score"] for r in rows}
    after = {r.row["image_id"]: r.row["fracture_score"] for r in again["rows"]}
    assert all(after[i] < before[i] for i in before if i.startswith("I0_"))


def test_cross_fitted_figures_carry_intervals_and_the_release_rule_uses_every_fold() -> None:
    cases = _cases(1)
    result = crossfit_folds(cases, [0, 1, 2])
    block = result["cross_fitted"]
    low, high = block["ci95"]["dice_mean"]
    assert low <= block["pixel"]["dice"]["mean"] <= high
    assert 0.0 <= block["image"]["auroc"] <= 1.0
    assert set(result["cross_fitted_by_view"]) == set(VIEWS)
    rule = release_rule(cases)
    assert rule["view"] in VIEWS and rule["mirror"] == (rule["view"] == "mirror")
    assert 0.0 < rule["threshold"] < 1.0


def test_unreadable_held_out_image_is_a_row_with_its_error() -> None:
    cases = _cases(2)
    bad = FoldCase({"image_id": "BAD", "fractured": 1}, 1, np.zeros((1, 1), bool), [], {}, error="truncated")
    result = crossfit_folds([*cases, bad], [0, 1, 2])
    assert result["cross_fitted"]["errors"] == [{"image_id": "BAD", "error": "truncated"}]


STAGE_1 = ["bundle/configs/train.json", "bundle/configs/train_cpu.json", "bundle/configs/train_cv.json"]
STAGE_2 = [*STAGE_1, "bundle/configs/train_cv_whole.json"]


@pytest.mark.parametrize("fold", [0, 3, -1])
@pytest.mark.parametrize("stage", [1, 2])
def test_train_cv_config_trains_on_the_other_folds_and_holds_one_out(tmp_path, fold, stage) -> None:
    out = tmp_path / "prepared"
    prepare_fracatlas(make_layout(tmp_path / "FracAtlas"), out)
    parser = ConfigParser()
    parser.read_config(STAGE_1 if stage == 1 else STAGE_2)
    parser.update({"cv_fold": fold, "cv_dir": str(tmp_path / "cv"), "datalist": str(out / "datalist.json")})
    train = parser.get_parsed_content("train#dataset#data")
    held = parser.get_parsed_content("validate#dataset#data")
    dl = json.loads((out / "datalist.json").read_text())
    expect_held = {e["image_id"] for e in dl[f"cv_fold{max(fold, 0)}"]}
    assert {e["image_id"] for e in held} == expect_held
    fold_dir = tmp_path / "cv" / (f"fold{fold}" if fold >= 0 else "release")
    # stage 1 (crops) in fold<k>/crops, stage 2 (whole images) in fold<k>, from stage 1's export
    assert parser.get_parsed_content("output_dir") == str(fold_dir / "crops" if stage == 1 else fold_dir)
    if stage == 2:
        assert parser.get_parsed_content("init_weights") == str(fold_dir / "crops" / "model.pt")
        assert parser.get_parsed_content("patch_size") == [512, 512]
    train_ids = {e["image_id"] for e in train}
    if fold >= 0:
        assert not expect_held & train_ids
    else:  # the release run trains on every fold (its validation fold is in-sample, for the curve only)
        assert train_ids >= {e["image_id"] for e in held if e["fractured"] or stage == 2}
    assert parser.get_parsed_content("fit_lr_to_budget") is False
    # each epoch draws epoch_length crops, negative_share of them from non-fractured training images
    sampler = parser.get_parsed_content("train#dataloader#sampler")
    assert len(sampler) == parser.get_parsed_content("epoch_length")
    share = parser.get_parsed_content("negative_share")
    weights = sampler.weights.tolist()
    negatives = sum(w for w, e in zip(weights, train, strict=True) if not e["fractured"])
    assert negatives / sum(weights) == pytest.approx(share)
    # a stage that draws no negative does not load them either
    assert any(not e["fractured"] for e in train) == (share > 0)
    assert parser.get_parsed_content("train#dataloader#shuffle") is False


def test_fold_weights_are_the_export_else_the_newest_checkpoint(tmp_path) -> None:
    from fracseg.errors import DatasetError
    from fracseg.evaluation.crossval import fold_weights

    with pytest.raises(DatasetError, match="no checkpoint"):
        fold_weights(tmp_path, 2)
    ckpts = tmp_path / "fold2" / "checkpoints"
    ckpts.mkdir(parents=True)
    for epoch in (23, 24):
        (ckpts / f"checkpoint_epoch={epoch}.pt").write_bytes(b"x")
    assert fold_weights(tmp_path, 2) == ckpts / "checkpoint_epoch=24.pt"
    # the export of the finished fold wins over any checkpoint left beside it
    (tmp_path / "fold2" / "model.pt").write_bytes(b"x")
    assert fold_weights(tmp_path, 2) == tmp_path / "fold2" / "model.pt"


def _train_cv_script():
    """``scripts/train_cv.py`` as a module (scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_cv", "scripts/train_cv.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_stage_with_only_its_export_counts_as_finished(tmp_path) -> None:
    """A finished stage kept as its ``model.pt`` alone (its checkpoints left on another machine) is not
    trained again by ``scripts/train_cv.py``; a stage with only an earlier epoch's checkpoint is."""
    train_cv = _train_cv_script()
    ckpts = tmp_path / "fold1" / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "checkpoint_epoch=20.pt").write_bytes(b"x")
    assert not train_cv.finished(tmp_path / "fold1", 100)
    (ckpts / "checkpoint_epoch=100.pt").write_bytes(b"x")
    assert train_cv.finished(tmp_path / "fold1", 100)
    assert not train_cv.finished(tmp_path / "fold2", 100)
    (tmp_path / "fold2").mkdir()
    (tmp_path / "fold2" / "model.pt").write_bytes(b"x")
    assert train_cv.finished(tmp_path / "fold2", 100)
    # each stage's epochs are those of its last config that sets them
    (_, configs1, sub1), (_, configs2, sub2) = train_cv.STAGES
    assert (sub1, sub2) == ("crops", "")
    assert train_cv.stage_epochs(configs1, []) == json.loads(Path(configs1[-1]).read_text())["epochs"]
    assert train_cv.stage_epochs(configs2, []) == json.loads(Path(configs2[-1]).read_text())["epochs"]
    assert train_cv.stage_epochs(configs2, ["--epochs", "3"]) == 3
    assert train_cv.stage_epochs(configs2, ["--epochs", "3", "--seed", "1", "--epochs", "5"]) == 5


def test_crops_epochs_reach_stage_1_only(tmp_path, monkeypatch) -> None:
    """``--crops-epochs`` lengthens stage 1 (its command, and the epoch that counts as finished) and leaves
    stage 2 at ``train_cv_whole.json``'s epochs; every command goes to ``commands.log``."""
    train_cv = _train_cv_script()
    commands: list[list[str]] = []
    monkeypatch.setattr(train_cv.subprocess, "call", lambda cmd, **_: commands.append(cmd) or 0)
    args = ["--cv-dir", str(tmp_path), "--folds", "0", "--no-release", "--crops-epochs", "60"]
    # nothing trained yet: stage 1 runs with --epochs 60; no epoch-60 checkpoint appears, so it stops there
    assert train_cv.main(args) == 0
    assert len(commands) == 1 and commands[0][-2:] == ["--epochs", "60"]
    # an epoch-30 checkpoint (train_cv.json's epochs) does not finish a 60-epoch stage 1
    ckpts = tmp_path / "fold0" / "crops" / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "checkpoint_epoch=30.pt").write_bytes(b"x")
    assert train_cv.main(args) == 0
    assert len(commands) == 2 and commands[1][-2:] == ["--epochs", "60"]
    # stage 1 exported: stage 2 runs without --epochs (train_cv_whole.json's 6)
    (tmp_path / "fold0" / "crops" / "model.pt").write_bytes(b"x")
    assert train_cv.main(args) == 0
    assert len(commands) == 3 and "--epochs" not in commands[2]
    assert "train_cv_whole.json" in " ".join(commands[2])
    assert len((tmp_path / "commands.log").read_text().splitlines()) == 3
