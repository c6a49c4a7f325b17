"""DICOMweb end to end against a real Orthanc, isolated in a network namespace (loopback only).

The scenario (``tests/helpers/orthanc_scenario.py``) runs under ``unshare --net``: Orthanc (DICOM port
off) gets two CRs, a DX and a CT; ``fracseg infer --dicomweb URL --stow`` runs twice (the second run
must find everything done); the test then checks outputs here and the SEG and SR objects on the server.
"""

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

from fracseg.io import TEMP_PREFIX

pytestmark = [pytest.mark.integration, pytest.mark.orthanc]
REPO = Path(__file__).resolve().parents[2]
SCENARIO = REPO / "tests" / "helpers" / "orthanc_scenario.py"


def test_dicomweb_qido_wado_stow_roundtrip_with_orthanc(tmp_path, shared_data) -> None:
    for tool in ("Orthanc", "unshare", "ip"):
        assert shutil.which(tool), (
            f"{tool} is missing: run `make system-tools` (Debian orthanc, orthanc-dicomweb)"
        )
    proc = subprocess.run(
        ["unshare", "--net", sys.executable, str(SCENARIO), str(tmp_path), str(shared_data)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["interfaces"] == ["lo"]  # nothing but the namespace's own loopback

    first, second = result["first"], result["second"]
    assert first["code"] == 0, first["stderr"]
    assert "3 instance(s) of modality CR/DX" in first["stdout"]  # the CT was filtered out
    assert "stored 3 of 3 DICOM SEG" in first["stdout"]
    assert second["code"] == 0 and "3 of 3 inputs already done" in second["stderr"]

    out = tmp_path / "out"
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == 3 and all(not r["error"] for r in rows)
    sent = result["sent"]
    wanted = {uid for uid, modality in sent.items() if modality in ("CR", "DX")}
    masks = sorted(out.rglob("*_mask.png"))
    assert {p.name.removesuffix("_mask.png") for p in masks} == wanted
    for mask_path in masks:  # <study>/<series>/<sop>_mask.png, SEG beside it on the same grid
        seg = pydicom.dcmread(mask_path.with_name(mask_path.name.replace("_mask.png", "_seg.dcm")))
        mask = np.asarray(Image.open(mask_path)) > 0
        np.testing.assert_array_equal(seg.pixel_array.astype(bool), mask)
        assert mask_path.parent.parent.name == seg.StudyInstanceUID

    on_server = result["segs_on_server"]
    assert result["seg_series_on_server"] == 3
    assert {s["references"] for s in on_server} == wanted
    # each SEG went with the SR of its findings, which names the X-ray and that SEG
    srs = result["srs_on_server"]
    assert len(srs) == 3
    seg_of = {s["references"]: s["sop"] for s in on_server}
    assert {frozenset(s["evidence"]) for s in srs} == {frozenset({ref, seg_of[ref]}) for ref in wanted}
    assert len(list(out.rglob("*_sr.dcm"))) == 3
    assert not list(out.rglob(f"{TEMP_PREFIX}*"))

    # --dicomweb --ray: the same instances through two Ray workers give the same rows, masks and SEG pixels.
    ray = result["ray"]
    assert ray["code"] == 0 and "Ray: 2 worker(s)" in ray["stderr"], ray["stderr"]
    ray_out = tmp_path / "out_ray"

    def answers(folder: Path) -> list[tuple]:
        rows = csv.DictReader((folder / "predictions.csv").open())
        keys = ("fracture_score", "fracture_present", "mask_pixels", "regions", "error", "mask")
        return sorted(tuple(r[k] for k in keys) for r in rows)

    assert answers(ray_out) == answers(out)
    for mask_path in masks:
        twin = ray_out / mask_path.relative_to(out)
        np.testing.assert_array_equal(np.asarray(Image.open(twin)), np.asarray(Image.open(mask_path)))
        seg = twin.with_name(twin.name.replace("_mask.png", "_seg.dcm"))
        np.testing.assert_array_equal(
            pydicom.dcmread(seg).pixel_array.astype(bool), np.asarray(Image.open(mask_path)) > 0
        )
