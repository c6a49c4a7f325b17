"""OHIF (prebuilt ``@ohif/app``, ``make ohif``) shows a CR from Orthanc with the DICOM SEG fracseg wrote
for it drawn over it, in headless Chromium (Debian's, through Playwright's ``executable_path``).

The scenario (``tests/helpers/ohif_scenario.py``) runs under ``unshare --net``: Orthanc with the JPEG-lossless
CR of the shared data and a SEG of a rectangle mask (``fracseg.io.dicom_seg``), OHIF served on loopback by
``scripts/ohif_server.py``; the browser opens the study, double-clicks the SEG and accepts OHIF's prompt.
The screenshot (kept as ``ohif_seg.png`` in the test's folder) must show OHIF's red labelmap where the mask
is, and nowhere else.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from scipy import ndimage

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.orthanc]
REPO = Path(__file__).resolve().parents[2]
SCENARIO = REPO / "tests" / "helpers" / "ohif_scenario.py"
OHIF_DIST = Path(os.environ.get("OHIF_DIST", REPO / "outputs" / "ohif" / "3.12.0" / "dist"))


def _red(image: np.ndarray) -> np.ndarray:
    """Pixels of OHIF's first segment colour (red, blended over grey)."""
    r, g, b = (image[..., i].astype(int) for i in range(3))
    return (r > g + 40) & (r > b + 40)


def test_ohif_draws_the_fracseg_seg_over_the_cr(tmp_path, shared_data) -> None:
    assert (OHIF_DIST / "index.html").is_file(), f"{OHIF_DIST}: no OHIF; run `make ohif`"
    for tool in ("Orthanc", "unshare", "ip", "chromium"):
        assert shutil.which(tool), f"{tool} is missing: run `make system-tools`"
    source = shared_data / "dicom" / "CR-ModalitySequenceLUT.dcm"
    proc = subprocess.run(
        ["unshare", "--net", sys.executable, str(SCENARIO), str(tmp_path), str(OHIF_DIST), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["first_image"], "OHIF did not display the CR"
    assert "fracseg fracture mask" in result["viewer_text"]  # the SEG series is listed beside the CR
    assert result.get("labelmap"), "OHIF did not add the SEG as a labelmap"
    errors = [line for line in result["console"] if "error" in line.lower()]
    # OHIF's onboarding tour looks for its next element while the SEG viewport replaces it: not ours
    assert not [line for line in errors if "advanceOn" not in line], result["console"]

    before = np.asarray(Image.open(tmp_path / "ohif_viewer.png").convert("RGB"))
    after = np.asarray(Image.open(tmp_path / "ohif_seg.png").convert("RGB"))
    assert _red(before).sum() < 50  # nothing red before the SEG is loaded
    labels, count = ndimage.label(_red(after))
    assert count, "nothing red after loading the SEG"
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=range(1, count + 1))
    box = labels == 1 + int(np.argmax(sizes))  # the labelmap (toasts may add small reddish icons)
    rows, cols = np.nonzero(box)
    assert box.sum() > 5000, box.sum()
    assert box.sum() > 0.8 * (np.ptp(rows) + 1) * (np.ptp(cols) + 1)  # a filled box, not scattered pixels
    # The mask is rows 1/3..1/2 and columns 1/3..1/2 of the CR: the red box has the mask's aspect ratio.
    ds = pydicom.dcmread(source, stop_before_pixels=True)
    box_aspect = (cols.max() - cols.min()) / (rows.max() - rows.min())
    mask_aspect = (int(ds.Columns) // 2 - int(ds.Columns) // 3) / (int(ds.Rows) // 2 - int(ds.Rows) // 3)
    assert abs(box_aspect - mask_aspect) < 0.1 * mask_aspect, (box_aspect, mask_aspect)
    print(f"screenshot: {tmp_path / 'ohif_seg.png'}")
