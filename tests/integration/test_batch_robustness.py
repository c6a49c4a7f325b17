"""Batch inference never loses or mixes up a result: crafted collisions, replaced inputs, failing writers.

Runs ``run_batch`` in-process with the shipped model on small synthetic images (each test a few seconds).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image

from fracseg import cli
from fracseg.errors import FracsegError
from fracseg.inference import Predictor
from fracseg.inference import batch as batch_module
from fracseg.inference.batch import CSV_COLUMNS, run_batch
from fracseg.io import TEMP_PREFIX, read_xray
from tests.helpers.dicom_factory import JPEG_2000, make_lossy_cr, save
from tests.helpers.lock_holder import hold_lock

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor()  # the shipped weights


def _image(path: Path, width: int, height: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    grey = (
        np.add.outer(np.arange(height), np.arange(width)) % 200 + rng.integers(0, 50, (height, width))
    ).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".dcm":
        save(make_lossy_cr(grey, JPEG_2000), path)  # lossy JPEG 2000 without method: the SEG crash case
    else:
        Image.fromarray(grey).save(path)
    return path


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "predictions.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_every_input_gets_its_own_outputs(tmp_path: Path, predictor: Predictor) -> None:
    folder = tmp_path / "in"
    sizes = {"a.jpg": (64, 48), "a.png": (50, 70), "a.dcm": (48, 64)}
    for i, (name, (w, h)) in enumerate(sizes.items()):
        _image(folder / name, w, h, seed=i)
    (folder / "dangling.png").symlink_to(folder / "deleted.png")
    x1, x2 = _image(tmp_path / "sub1" / "x.jpg", 40, 30, 7), _image(tmp_path / "sub2" / "x.jpg", 30, 40, 8)
    out = tmp_path / "out"
    inputs = [folder, folder / "a.jpg", str(folder / "a.jpg"), x1, x2, x2]  # repeats: processed once

    failed = run_batch(inputs, out, predictor, quiet=True, batch_size=1, dicom_seg=True)

    rows = _rows(out)
    assert failed == 1 and tuple(rows[0]) == CSV_COLUMNS
    assert [Path(r["image"]).relative_to(tmp_path).as_posix() for r in rows] == [
        "in/a.dcm",
        "in/a.jpg",
        "in/a.png",
        "in/dangling.png",
        "sub1/x.jpg",
        "sub2/x.jpg",
    ]
    bad = rows[3]
    assert "broken symbolic link" in bad["error"] and bad["mask"] == ""
    good = [r for r in rows if not r["error"]]
    masks = [r["mask"] for r in good]
    assert len(set(masks)) == 5
    assert masks[:3] == ["a.dcm_mask.png", "a.jpg_mask.png", "a.png_mask.png"]  # extension kept
    assert all(m.startswith("x.jpg~") and m.endswith("_mask.png") for m in masks[3:])  # + path hash
    for row in good:
        mask = np.asarray(Image.open(out / row["mask"]))
        assert mask.shape == read_xray(row["image"]).array.shape  # the mask belongs to this very input
        assert int(row["mask_pixels"]) == int((mask > 0).sum())
        assert (out / row["mask"].replace("_mask.png", "_overlay.png")).exists()
    seg = pydicom.dcmread(out / "a.dcm_seg.dcm")  # the SEG matches the DICOM's own mask
    np.testing.assert_array_equal(
        seg.pixel_array.astype(bool), np.asarray(Image.open(out / "a.dcm_mask.png")) > 0
    )
    assert seg.LossyImageCompressionMethod == "ISO_15444_1"
    report = hd.sr.srread(out / "a.dcm_sr.dcm")  # the SR of its findings, beside the SEG
    dcm = next(r for r in rows if r["image"].endswith("a.dcm"))
    (image_group,) = report.content.get_image_measurement_groups()
    score = {m.name.meaning: m.value for m in image_group.get_measurements()}["Score"]
    assert score == pytest.approx(float(dcm["fracture_score"]), abs=1e-5)
    assert len(report.content.get_planar_roi_measurement_groups()) == int(dcm["regions"])
    assert seg.SOPInstanceUID in {  # cited by a region, else listed as other evidence
        i.ReferencedSOPInstanceUID
        for evidence in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence")
        for s in report.get(evidence, [])
        for r in s.ReferencedSeriesSequence
        for i in r.ReferencedSOPSequence
    }

    # A rerun lists each input once and redoes nothing.
    assert run_batch(inputs, out, predictor, quiet=True, dicom_seg=True) == 1

    def without_time(table: list[dict[str, str]]) -> list[dict[str, str]]:  # the failed row is timed anew
        return [{k: v for k, v in r.items() if k != "seconds"} for r in table]

    again = _rows(out)
    assert without_time(again) == without_time(rows)
    assert [r["seconds"] for r in again if not r["error"]] == [r["seconds"] for r in good]  # from records
    assert json.loads((out / "summary.json").read_text())["skipped_already_done"] == 5
    # Redone without --dicom-seg: the earlier SEG, which need not match the new mask, does not stay.
    assert run_batch(inputs, out, predictor, quiet=True, overwrite=True) == 1
    assert not list(out.glob("*_seg.dcm")) and not list(out.glob("*_sr.dcm"))


def test_resume_compares_the_input_not_only_its_name(tmp_path: Path, predictor: Predictor) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, seed in ((first, 0), (second, 100)):
        _image(folder / "hand.png", 60, 40, seed)
        _image(folder / "knee.png", 40, 60, seed + 1)
    out = tmp_path / "out"
    assert run_batch([first], out, predictor, quiet=True) == 0
    before = {Path(r["image"]).name: r for r in _rows(out)}

    # Replace one input with a different image of another size: it must be redone, the other kept.
    _image(first / "hand.png", 80, 20, seed=55)
    os.utime(first / "hand.png", ns=(1, 1))
    assert run_batch([first], out, predictor, quiet=True) == 0
    after = {Path(r["image"]).name: r for r in _rows(out)}
    assert json.loads((out / "summary.json").read_text())["skipped_already_done"] == 1
    assert after["knee.png"] == before["knee.png"]
    assert np.asarray(Image.open(out / "hand_mask.png")).shape == (20, 80)

    # Another folder with the same file names into the same output: its own results, not the first's.
    assert run_batch([second], out, predictor, quiet=True) == 0
    rows = _rows(out)
    assert json.loads((out / "summary.json").read_text())["skipped_already_done"] == 0
    assert [Path(r["image"]).parent for r in rows] == [second, second]
    reference = tmp_path / "reference"
    run_batch([second], reference, predictor, quiet=True)
    assert [r["fracture_score"] for r in rows] == [r["fracture_score"] for r in _rows(reference)]


def test_a_failing_writer_costs_one_image_whatever_it_raises(
    tmp_path: Path, predictor: Predictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "in"
    for i, name in enumerate(("one.dcm", "two.dcm", "three.dcm")):
        _image(folder / name, 40 + i, 30, seed=i)
    real = batch_module.write_dicom_seg

    def flaky(source, mask, target):
        if Path(source).name == "two.dcm":
            raise AttributeError("'FileDataset' object has no attribute 'LossyImageCompressionMethod'")
        return real(source, mask, target)

    monkeypatch.setattr(batch_module, "write_dicom_seg", flaky)
    out = tmp_path / "out"
    assert run_batch([folder], out, predictor, quiet=True, dicom_seg=True) == 1
    rows = {Path(r["image"]).name: r for r in _rows(out)}
    assert set(rows) == {"one.dcm", "two.dcm", "three.dcm"}
    error = rows["two.dcm"]["error"]
    assert "AttributeError" in error and error.count(str(folder / "two.dcm")) == 1
    assert json.loads((out / "summary.json").read_text())["failed"] == 1
    # The failed image leaves nothing behind; the others are complete.
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("two")) == []
    for name in ("one", "three"):
        assert {f"{name}_mask.png", f"{name}_overlay.png", f"{name}_seg.dcm", f"{name}_sr.dcm"} <= {
            p.name for p in out.iterdir()
        }
    assert not list(out.rglob(f"{TEMP_PREFIX}*"))
    # The rerun retries only the failed image (and succeeds once the writer works).
    monkeypatch.setattr(batch_module, "write_dicom_seg", real)
    assert run_batch([folder], out, predictor, quiet=True, dicom_seg=True) == 0
    assert json.loads((out / "summary.json").read_text())["skipped_already_done"] == 2


def test_output_that_cannot_work_is_refused_before_the_model_loads(
    tmp_path: Path, predictor: Predictor, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "in"
    _image(folder / "a.png", 30, 30, 0)
    not_a_folder = tmp_path / "results.csv"
    not_a_folder.write_text("x")

    def no_model(args):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(cli, "_predictor", no_model)
    for output, words in (
        (not_a_folder, "exists and is not a folder"),
        (folder, "is the input folder"),
        (tmp_path, "contains the input folder"),
    ):
        caplog.clear()
        assert cli.main(["infer", str(folder), "--output", str(output), "--quiet"]) == 2
        assert words in caplog.text, caplog.text
    assert not_a_folder.read_text() == "x" and sorted(p.name for p in folder.iterdir()) == ["a.png"]
    with pytest.raises(FracsegError, match="is the input folder"):
        run_batch([folder], folder, predictor, quiet=True)


def test_a_second_run_into_a_busy_output_is_refused_and_touches_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "in"
    _image(folder / "a.png", 30, 30, 0)
    out = tmp_path / "out"
    holder = hold_lock(out)  # another run, with a temporary file in flight
    try:
        assert cli.main(["infer", str(folder), "--output", str(out), "--quiet"]) == 2
        assert f"another fracseg run (pid {holder.pid})" in caplog.text
        assert (out / f"{TEMP_PREFIX}inflight-x_mask.png").exists()
        assert not (out / "predictions.csv").exists()
    finally:
        holder.kill()
        holder.wait(timeout=30)
