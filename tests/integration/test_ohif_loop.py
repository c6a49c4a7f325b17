"""The loop closed in the viewer (issue 27): a correction saved on the app's page is STOWed to Orthanc as a
DICOM SEG and OHIF draws it over its CR; and what OHIF 3.12 shows of fracseg's DICOM SR.

The scenario (``tests/helpers/ohif_loop_scenario.py``) runs once under ``unshare --net``: Orthanc with two
generated CRs that have a pixel spacing (one alone, one with fracseg's SEG and SR of two regions), the
MONAI Label app against it (``--studies .../dicom-web``), the correction page in Debian's Chromium
(Playwright, ``executable_path``) painting and saving a correction, then OHIF (``make ohif``'s build,
``scripts/ohif_server.py``) loading the corrected SEG and the SR. Screenshots stay in the scenario's
folder (``page_saved.png``, ``ohif_loop_seg.png``, ``ohif_report_sr.png``; printed by the tests).
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

from tests.helpers.dciodvfy import dciodvfy_errors

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.orthanc]
REPO = Path(__file__).resolve().parents[2]
SCENARIO = REPO / "tests" / "helpers" / "ohif_loop_scenario.py"
OHIF_DIST = Path(os.environ.get("OHIF_DIST", REPO / "outputs" / "ohif" / "3.12.0" / "dist"))


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> tuple[Path, dict]:
    assert (OHIF_DIST / "index.html").is_file(), f"{OHIF_DIST}: no OHIF; run `make ohif`"
    for tool in ("Orthanc", "unshare", "ip", "chromium"):
        assert shutil.which(tool), f"{tool} is missing: run `make system-tools`"
    work = tmp_path_factory.mktemp("ohif_loop")
    proc = subprocess.run(
        ["unshare", "--net", sys.executable, str(SCENARIO), str(work), str(OHIF_DIST)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work, json.loads((work / "result.json").read_text())


def _red(image: np.ndarray) -> np.ndarray:
    """Pixels of OHIF's first segment colour (red, blended over grey)."""
    r, g, b = (image[..., i].astype(int) for i in range(3))
    return (r > g + 40) & (r > b + 40)


def _largest(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    assert count, "nothing red after loading the SEG"
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=range(1, count + 1))
    return labels == 1 + int(np.argmax(sizes))


def _image_box_in_screenshot(before: np.ndarray, shape: tuple[int, int]) -> tuple[float, float, float]:
    """Where OHIF draws the CR: (left, top, screen pixels per image pixel). The CR's columns are the grey
    run across the viewport's middle row; OHIF centres the image in the viewport (rows 53..760)."""
    row = before[400, 290:1325].astype(int)
    grey = np.nonzero((row[:, 0] > 20) & (np.abs(row[:, 0] - row[:, 2]) < 10))[0] + 290
    left, right = int(grey.min()), int(grey.max()) + 1
    scale = (right - left) / shape[1]
    return left, (53 + 760) / 2 - scale * shape[0] / 2, scale


def test_a_correction_saved_on_the_page_is_stowed_and_drawn_by_ohif(scenario) -> None:
    work, result = scenario
    # the page saved the painted correction; the app stored it on Orthanc as a DICOM SEG
    assert result["page_errors"] == []
    assert result["page_status"].startswith(f"Saved the final label of {result['loop_sop']}")
    assert result["label_info"]["stow"] == "stored", result["label_info"]
    seg_path = work / "loop_seg_on_server.dcm"
    assert result["loop_seg_on_server"] and seg_path.is_file(), "no SEG in the CR's study on Orthanc"
    seg = pydicom.dcmread(seg_path)
    assert seg.SOPInstanceUID == result["label_info"]["SegSOPInstanceUID"]
    assert seg.StudyInstanceUID == result["loop_study"]
    assert seg.SeriesDescription == "fracseg fracture mask, corrected"
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC"
    assert (
        seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
        == (result["loop_sop"])
    )
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert [float(v) for v in measures.PixelSpacing] == [0.15, 0.15]  # the CR's: OHIF can draw it
    painted = np.asarray(Image.open(work / "page_mask.png")) > 0
    assert painted.sum() > 20_000
    np.testing.assert_array_equal(seg.pixel_array.astype(bool), painted)  # the page's mask, pixel for pixel
    assert dciodvfy_errors(seg_path) == []

    # OHIF lists the SEG beside the CR, loads it as a labelmap and draws it where it was painted
    assert "fracseg fracture mask, corrected" in result["loop_viewer_text"]
    assert result.get("loop_representation"), "OHIF did not add the SEG as a labelmap"
    assert result.get("loop_first_image"), "OHIF did not display the CR"
    errors = [line for line in result["console"] if "error" in line.lower()]
    # OHIF's onboarding tour looks for its next element while the SEG viewport replaces it: not ours
    assert not [line for line in errors if "advanceOn" not in line], result["console"]
    before = np.asarray(Image.open(work / "ohif_loop_before.png").convert("RGB"))
    after = np.asarray(Image.open(work / "ohif_loop_seg.png").convert("RGB"))
    assert _red(before).sum() < 50  # nothing red before the SEG is loaded
    box = _largest(_red(after))
    rows, cols = np.nonzero(box)
    assert box.sum() > 0.8 * (np.ptp(rows) + 1) * (np.ptp(cols) + 1)  # a filled region, not scattered
    left, top, scale = _image_box_in_screenshot(before, painted.shape)
    drawn = (
        np.array([cols.min() - left, cols.max() + 1 - left, rows.min() - top, rows.max() + 1 - top]) / scale
    )
    mask_rows, mask_cols = np.nonzero(painted)
    expected = np.array([mask_cols.min(), mask_cols.max() + 1, mask_rows.min(), mask_rows.max() + 1])
    # the red region's box, in CR pixels, is the painted mask's box (within 1% of the CR's size)
    assert np.abs(drawn - expected).max() < 6, (drawn.round(1), expected)
    print(f"screenshots: {work / 'page_saved.png'} {work / 'ohif_loop_seg.png'}")


def _yellow(image: np.ndarray) -> np.ndarray:
    """Pixels of OHIF's SR annotations (yellow dashed outlines and labels)."""
    r, g, b = (image[..., i].astype(int) for i in range(3))
    return (r > 180) & (g > 180) & (b < 100)


def _outlined(yellow: np.ndarray, box: np.ndarray) -> tuple[float, float]:
    """(share of the box's perimeter with a yellow pixel within 3 screen pixels, share of yellow inside)."""
    left, right, top, bottom = np.round(box).astype(int)
    near = ndimage.binary_dilation(yellow, iterations=3)
    edges = np.concatenate(
        [near[top, left:right], near[bottom, left:right], near[top:bottom, left], near[top:bottom, right]]
    )
    return float(edges.mean()), float(yellow[top + 6 : bottom - 6, left + 6 : right - 6].mean())


def test_ohif_lists_the_sr_and_draws_its_regions_over_the_cr(scenario) -> None:
    """OHIF 3.12 lists fracseg's SR, shows its content in the Tag Browser and, on double-clicking it, draws
    each region's outline (TID 1410 Image Region on the CR) over the CR with its measurements, and the
    image-level group (its score's source: the whole image) as the CR's outline; OHIF's offer to track
    them (as editable measurements) finds nothing it can convert. docs/pacs.md says so."""
    work, result = scenario
    assert ["SR", "fracseg fracture findings"] in result["report_series"]  # stored on Orthanc
    # the study browser lists the SR series with its description and number beside the CR and the SEG
    assert "SR\nfracseg fracture findings\nS:9902" in result["report_viewer_text"]
    assert "SEG\nfracseg fracture mask\nS:9901" in result["report_viewer_text"]
    # its content, as DICOM tags: the series' "..." menu, "Tag Browser", searched for the groups
    present = result["tags"]["fracture present"]
    assert "9902 (SR): fracseg fracture findings" in present
    assert "TextValue\nImage-level finding: fracture present" in present  # the answer's group
    regions = result["tags"]["Fracture region"]
    assert "TextValue\nFracture region 1" in regions and "TextValue\nFracture region 2" in regions

    # double-clicking the SR: OHIF reads the three groups, all with image coordinates, without an error
    console = "\n".join(result["report_console"])
    assert result["report_read"], console
    assert "ReferencedSOPSequence" not in console and "pageerror" not in console, console
    assert "No measurements found which were rehydratable" not in console, console
    # each group's labels are its measurements (OHIF shows the first five of a region)
    shown = result["report_sr_text"]
    assert "Area: 216.00 mm2" in shown and "Area: 56.25 mm2" in shown, shown  # 80 x 120 and 50 x 50 px
    assert "Centroid column: 260.00 {pixels}" in shown and "Centroid row: 190.00 {pixels}" in shown
    assert "Score: 0.90 1" in shown and "Threshold Value: 0.50 1" in shown, shown
    # ... and the regions' outlines are drawn where they are on the CR (the SR viewport shows the CR as the
    # study's first viewport did): yellow dashed rectangles around each region's pixels, nothing inside
    before = np.asarray(Image.open(work / "ohif_report_before.png").convert("RGB"))
    after = np.asarray(Image.open(work / "ohif_report_sr.png").convert("RGB"))
    assert _yellow(before).sum() < 50
    left, top, scale = _image_box_in_screenshot(before, (480, 600))
    yellow = _yellow(after)
    for cols, rows in (((200, 320), (150, 230)), ((420, 470), (330, 380))):  # the report's two regions
        box = np.array(
            [left + scale * cols[0], left + scale * cols[1], top + scale * rows[0], top + scale * rows[1]]
        )
        perimeter, inside = _outlined(yellow, box)
        assert perimeter > 0.4 and inside < 0.01, (cols, rows, perimeter, inside)

    # the image-level group is drawn as the CR's outline (green: OHIF's active annotation), its labels the
    # score and the threshold (top right, clipped at the viewport's edge)
    tracked = np.asarray(Image.open(work / "ohif_report_tracked.png").convert("RGB"))
    r, g, b = (tracked[..., i].astype(int) for i in range(3))
    green = (g > 150) & (r < 100) & (b < 100)
    for edge in (round(float(left)), round(left + scale * 600)):
        column = green[100:700, edge - 3 : edge + 4].any(axis=1)
        assert column.mean() > 0.3, (edge, column.mean())
    # OHIF offers to track the SR's measurements (edit them as its own tools); accepting closes the prompt
    # and leaves the SR drawn, but its Cornerstone adapters read only their own encoding (the SCOORD inside
    # a NUM) and track nothing: the measurements panel stays empty
    assert "Do you want to continue tracking measurements for this study?" in shown
    assert "Do you want to continue tracking" not in result["report_tracked_text"]
    assert "Didn't find any tracked measurements" in console, console
    box = np.array([left + scale * 200, left + scale * 320, top + scale * 150, top + scale * 230])
    assert _outlined(_yellow(tracked), box)[0] > 0.4  # still drawn
    shots = (
        "ohif_report_before.png",
        "ohif_sr_tags_present.png",
        "ohif_sr_tags_region.png",
        "ohif_report_sr.png",
        "ohif_report_tracked.png",
    )
    print("screenshots:", *(work / name for name in shots))
