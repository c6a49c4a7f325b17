"""The MONAI Label app on a real DICOMweb server (Orthanc), isolated in a network namespace (loopback only).

The scenario (``tests/helpers/orthanc_app_scenario.py``) runs under ``unshare --net``: Orthanc gets four
CRs (MONOCHROME1, JPEG lossless, JPEG 2000, one without file meta), a DX and a CT; the app starts with
``--studies http://127.0.0.1:8042/dicom-web`` (nothing downloaded: no dcmqi), runs ``fracture`` on every
image, saves labels as 3D Slicer (``.nii.gz``) and the page (``.png``) do, survives Orthanc going down and
coming back. This test checks the answers against ``fracseg``'s predictor on the same files and the
SEGs on the server.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from fracseg.inference.predictor import Predictor
from fracseg.io import read_xray
from tests.helpers.dciodvfy import dciodvfy_errors

pytestmark = [pytest.mark.integration, pytest.mark.orthanc]
REPO = Path(__file__).resolve().parents[2]
SCENARIO = REPO / "tests" / "helpers" / "orthanc_app_scenario.py"


@pytest.fixture(scope="module")
def scenario(tmp_path_factory, shared_data) -> tuple[Path, dict]:
    for tool in ("Orthanc", "unshare", "ip"):
        assert shutil.which(tool), (
            f"{tool} is missing: run `make system-tools` (Debian orthanc, orthanc-dicomweb)"
        )
    work = tmp_path_factory.mktemp("pacs")
    proc = subprocess.run(
        ["unshare", "--net", sys.executable, str(SCENARIO), str(work), str(shared_data)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work, json.loads((work / "result.json").read_text())


def _sources(work: Path) -> dict[str, Path]:
    """SOPInstanceUID -> the file sent to Orthanc."""
    return {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in work.glob("upload*.dcm")}


def test_app_lists_cr_and_dx_of_the_server_only_on_loopback(scenario) -> None:
    work, result = scenario
    assert result["interfaces"] == ["lo"]
    wanted = {uid for uid, modality in result["sent"].items() if modality in ("CR", "DX")}
    assert len(wanted) == 5 and set(result["listed"]) == wanted  # the CT is filtered out
    assert result["dicomweb"]["error"] is None
    log = (work / "server.log").read_text(errors="replace")
    assert "dcmqi" not in log.lower()


def test_inference_through_the_datastore_equals_fracseg_on_the_same_files(scenario) -> None:
    work, result = scenario
    assert set(result["infer"].values()) == {200}
    predictor = Predictor(
        weights=work / "app" / "model" / "models" / "model.pt", bundle=work / "app" / "model"
    )
    sources = _sources(work)
    nonempty = 0
    for image in result["listed"]:
        returned = next((work / "masks").glob(f"{image}.*"))
        got = read_xray(returned).array > 0
        expected = predictor.predict(sources[image]).mask
        np.testing.assert_array_equal(got, expected, err_msg=image)
        nonempty += int(expected.any())
    transfer = {uid: str(pydicom.dcmread(p).file_meta.TransferSyntaxUID) for uid, p in sources.items()}
    cached = {
        (ds := pydicom.dcmread(p, stop_before_pixels=True)).SOPInstanceUID: str(
            ds.file_meta.TransferSyntaxUID
        )
        for p in (work / "cache" / ".dicomweb").rglob("*.dcm")
    }
    assert cached == {uid: ts for uid, ts in transfer.items() if uid in result["listed"]}  # not transcoded
    assert {pydicom.uid.JPEGLosslessSV1, pydicom.uid.JPEG2000} <= set(transfer.values())  # compressed
    print(f"{nonempty} of {len(result['listed'])} masks non-empty")


def test_saved_labels_are_stored_on_the_server_as_dicom_seg(scenario) -> None:
    work, result = scenario
    sources = _sources(work)
    for saved in result["save"].values():
        assert saved["code"] == 200, saved["body"]
    stored = {s["references"]: s for s in result["segs_on_server"]}
    labelled = set(result["save"]) | {result["save_down"]["image"]}
    assert set(stored) == labelled  # one SEG per saved label, each referencing its source
    for image in labelled:
        seg_path = work / "segs" / f"{image}.dcm"
        seg, source = pydicom.dcmread(seg_path), pydicom.dcmread(sources[image], stop_before_pixels=True)
        assert seg.Modality == "SEG"
        for keyword in ("PatientID", "PatientName", "StudyInstanceUID"):
            assert str(seg.get(keyword, "")) == str(source.get(keyword, "")), keyword
        assert stored[image]["study"] == source.StudyInstanceUID
        assert seg.SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC"
        label = read_xray(next((work / "labels").glob(f"{image}.nii.gz"))).array > 0
        np.testing.assert_array_equal(seg.pixel_array.astype(bool), label)
        assert dciodvfy_errors(seg_path) == []
        info = result["list_back"]["labels"][image]
        assert info["stow"] == "stored" and info["SegSOPInstanceUID"] == seg.SOPInstanceUID


def test_server_down_keeps_the_label_answers_in_bounded_time_and_recovers(scenario) -> None:
    _, result = scenario
    down = result["save_down"]
    assert down["code"] == 502 and "saved locally" in down["body"] and "STOW-RS" in down["body"]
    assert down["image"] + ".nii.gz" in result["local_labels"]
    assert result["list_down"]["code"] == 200 and result["list_down"]["stow"] == "failed"
    assert "http://127.0.0.1:8042/dicom-web: STOW-RS" in result["list_down"]["dicomweb"]["error"]
    assert result["infer_down"]["code"] == 503 and "not cached" in result["infer_down"]["body"]
    assert "QIDO-RS search failed" in result["infer_down"]["body"]
    for step in (down, result["list_down"], result["infer_down"]):
        assert step["seconds"] < 10
    assert result["list_back"]["dicomweb"]["error"] is None  # recovered; the retried SEG is on the server
    assert down["image"] in {s["references"] for s in result["segs_on_server"]}


def test_training_datalist_and_correction_page_work_on_server_images(scenario) -> None:
    work, result = scenario
    labelled = set(result["save"]) | {result["save_down"]["image"]}
    assert result["train_datalist"] == sorted(f"{image}.nii.gz" for image in labelled)  # what training reads
    assert result["page_image"] == {"code": 200, "type": "image/png"}
    image = next(iter(result["save"]))
    shown = read_xray(work / "page_image.png").array
    stored = read_xray(next((work / "cache").glob(f"{image}.nii.gz"))).array
    assert shown.shape == stored.shape
