"""The README's main job: ``fracseg infer`` over the bundled samples and the shared CR DICOMs."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from fracseg.inference.batch import CSV_COLUMNS
from fracseg.io import TEMP_PREFIX, read_xray

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fracseg", "infer", *args, "--quiet"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )


def test_main_job_on_samples_and_shared_dicoms(tmp_path, shared_data) -> None:
    inputs = tmp_path / "in"
    shutil.copytree(REPO / "data" / "samples", inputs / "samples")
    shutil.copytree(shared_data / "dicom", inputs / "pacs" / "a")
    # The same file name in two folders must not collide.
    shutil.copy(shared_data / "dicom" / "CR-MONO1-10-chest.dcm", inputs / "pacs" / "CR-MONO1-10-chest.dcm")
    (inputs / "pacs" / "broken.dcm").write_bytes(b"\x00" * 64 + b"garbage")
    out = tmp_path / "out"
    proc = _run(
        str(inputs), str(REPO / "data" / "samples" / "IMG0004068.jpg"), "--output", str(out), "--dicom-seg"
    )
    assert proc.returncode == 1, proc.stderr  # one bad file -> non-zero exit, batch completed
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    by_image = {
        Path(r["image"]).relative_to(inputs).as_posix() if str(inputs) in r["image"] else r["image"]: r
        for r in rows
    }
    assert len(rows) == 10
    bad = by_image["pacs/broken.dcm"]
    assert "broken.dcm" in bad["error"] and bad["fracture_score"] == ""
    good = [r for r in rows if not r["error"]]
    assert len(good) == 9
    for row in good:
        src = Path(row["image"])
        rel = src.relative_to(inputs) if str(inputs) in str(src) else Path(src.name)
        stem = src.name[: -len(src.suffix)] if src.suffix else src.name
        mask_path = out / rel.parent / f"{stem}_mask.png"
        overlay_path = out / rel.parent / f"{stem}_overlay.png"
        mask = np.asarray(Image.open(mask_path))
        h, w = read_xray(src).array.shape
        assert mask.shape == (h, w) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        assert Image.open(overlay_path).size == (w, h) and Image.open(overlay_path).mode == "RGB"
        assert int(row["mask_pixels"]) == int((mask == 255).sum())
        assert 0.0 <= float(row["fracture_score"]) <= 1.0
    assert (out / "pacs" / "a" / "CR-MONO1-10-chest_mask.png").exists()
    assert (out / "pacs" / "CR-MONO1-10-chest_mask.png").exists()
    assert (out / "IMG0004068_mask.png").exists()  # a file input goes straight into the output folder
    exif = np.asarray(Image.open(out / "samples" / "IMG0002628_mask.png"))
    assert exif.shape == (373, 454)  # EXIF-upright frame
    # --dicom-seg: a SEG next to the mask for every DICOM input (4 here), none for JPEGs.
    segs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*_seg.dcm"))
    assert segs == [
        "pacs/CR-MONO1-10-chest_seg.dcm",
        "pacs/a/CR-MONO1-10-chest_seg.dcm",
        "pacs/a/CR-ModalitySequenceLUT_seg.dcm",
        "samples/IMG0003766_CR_seg.dcm",
    ]
    for seg_path in out.rglob("*_seg.dcm"):
        seg = pydicom.dcmread(seg_path)
        mask = np.asarray(Image.open(seg_path.with_name(seg_path.name.replace("_seg.dcm", "_mask.png")))) > 0
        np.testing.assert_array_equal(seg.pixel_array.astype(bool), mask)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 10 and summary["failed"] == 1
    assert not list(out.rglob(f"{TEMP_PREFIX}*"))


def _many_inputs(shared_data: Path, folder: Path, count: int = 12, dicom: bool = False) -> Path:
    """``count`` real FracAtlas X-rays, half of them in a sub-folder (and the sample CR DICOM)."""
    images = sorted((shared_data / "fracatlas" / "images" / "Fractured").glob("*.jpg"))[:count]
    for i, image in enumerate(images):
        target = folder / ("sub" if i % 2 else "") / image.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, target)
    if dicom:
        shutil.copy(REPO / "data" / "samples" / "IMG0003766_CR.dcm", folder / "IMG0003766_CR.dcm")
    return folder


def _records(folder: Path) -> list[Path]:
    """Completed per-image records (a kill can leave an atomic write's ``.<name>.tmp`` file too)."""
    return [p for p in folder.rglob("*.json") if not p.name.startswith(".")]


def test_killed_batch_resumes_without_redoing_finished_images(tmp_path, shared_data) -> None:
    """A batch killed mid-run, resumed, then redone from scratch with ``--overwrite``: the resumed masks
    are byte-identical to the fresh run's, so the same input gives the same mask in another process (the
    CR DICOM included). The output folder lies inside the input folder, so each later run must not read
    the earlier runs' masks and overlays back as inputs. (Merged here: test_same_input_same_mask, two runs
    of that DICOM, and test_output_folder_inside_the_input_folder_is_not_read_back, two runs into
    ``<input>/results``; each run costs a fresh interpreter's torch/monai imports.)"""
    import os
    import signal
    import time

    inputs = _many_inputs(shared_data, tmp_path / "in", count=11, dicom=True)
    out = inputs / "results"
    records = out / ".fracseg-records"
    cmd = [
        sys.executable,
        "-m",
        "fracseg",
        "infer",
        str(inputs),
        "--output",
        str(out),
        "--batch-size",
        "1",
        "--workers",
        "0",
        "--quiet",
    ]
    with subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    ) as victim:
        deadline = time.monotonic() + 300
        while len(_records(records)) < 3:
            assert victim.poll() is None and time.monotonic() < deadline, "batch ended before the kill"
            time.sleep(0.02)
        os.killpg(victim.pid, signal.SIGKILL)
    done_before = len(_records(records))
    assert done_before < 12
    assert not (out / "predictions.csv").exists()

    proc = _run(str(inputs), "--output", str(out), "--batch-size", "3")
    assert proc.returncode == 0, proc.stderr
    assert f"{done_before} of 12 inputs already done" in proc.stderr
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == 12 and all(not r["error"] for r in rows)
    assert not list(out.rglob(f"{TEMP_PREFIX}*"))
    resumed = {p.relative_to(out): p.read_bytes() for p in out.rglob("*_mask.png")}
    assert len(resumed) == 12 and Path("IMG0003766_CR_mask.png") in resumed

    again = _run(str(inputs), "--output", str(out), "--overwrite")
    assert again.returncode == 0
    assert json.loads((out / "summary.json").read_text())["skipped_already_done"] == 0
    assert len(list(csv.DictReader((out / "predictions.csv").open()))) == 12  # still no output read back
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*_mask.png")} == resumed


def test_quoted_glob_inputs_keep_their_sub_folders(tmp_path, shared_data) -> None:
    inputs = tmp_path / "in"
    for folder in ("a", "b"):
        (inputs / folder).mkdir(parents=True)
        shutil.copy(shared_data / "dicom" / "CR-MONO1-10-chest.dcm", inputs / folder / "same.dcm")
    shutil.copy(REPO / "data" / "samples" / "IMG0004068.jpg", inputs / "a" / "hand.jpg")
    out = tmp_path / "out"
    assert _run(f"{inputs}/**/*.dcm", "--output", str(out)).returncode == 0  # quoted: fracseg expands it
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert sorted(Path(r["image"]).relative_to(inputs).as_posix() for r in rows) == [
        "a/same.dcm",
        "b/same.dcm",
    ]
    assert (out / "a" / "same_mask.png").exists() and (out / "b" / "same_mask.png").exists()
