"""DICOM SR of the findings (TID 1500): read back with highdicom, references the X-ray and the SEG, the
three image-level answers, areas in mm2 or pixels, passes dciodvfy."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from fracseg.errors import ImageReadError
from fracseg.inference.decision import Decision, DecisionRule, decide
from fracseg.io.dicom_seg import write_dicom_seg
from fracseg.io.dicom_sr import ModelInfo, sr_path_for, write_dicom_sr
from tests.helpers.dciodvfy import dciodvfy_errors
from tests.helpers.dicom_factory import make_dataset, save

REPO = Path(__file__).resolve().parents[2]
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
MODEL = ModelInfo(
    name="fracseg fracture segmentation (2D X-ray)",
    version="0.10.1",
    image_threshold=0.4205,
    pixel_threshold=0.5,
    weights_sha256="ab" * 32,
)


def _probability(rows: int, cols: int) -> np.ndarray:
    prob = np.zeros((rows, cols), np.float32)
    prob[5:10, 5:15] = 0.9  # 50 px, centroid (x 10.0, y 7.5), box x 5..15, y 5..10
    prob[20:30, 40:44] = 0.7  # 40 px
    return prob


def _write(tmp_path: Path, ds: pydicom.Dataset, decision, model: ModelInfo = MODEL) -> tuple[Path, Path]:
    src = save(ds, tmp_path / "src.dcm")
    seg = write_dicom_seg(src, decision.mask, tmp_path / "src_seg.dcm")
    sr = write_dicom_sr(src, seg, decision, model, sr_path_for(seg))
    assert sr == tmp_path / "src_sr.dcm"
    return seg, sr


def _evaluation(report: hd.sr.Comprehensive3DSR) -> tuple[hd.sr.MeasurementsAndQualitativeEvaluations, str]:
    (image,) = report.content.get_image_measurement_groups()
    # the finding category is read back as an evaluation too; the answer is the one named "Fracture"
    (evaluation,) = [e for e in image.get_qualitative_evaluations() if e.name.value == "72704001"]
    return image, evaluation.value.meaning


def _measurements(group) -> dict[str, tuple[float, str]]:
    return {m.name.meaning: (m.value, m.unit.value) for m in group.get_measurements()}


def test_present_with_regions_references_the_image_and_the_seg(tmp_path) -> None:
    ds = make_dataset(np.zeros((40, 60), np.uint16))
    ds.PixelSpacing = [0.2, 0.1]  # row, column
    decision = decide(_probability(40, 60), DecisionRule())
    seg_path, sr_path = _write(tmp_path, ds, decision)
    seg = pydicom.dcmread(seg_path)

    report = hd.sr.srread(sr_path)
    assert report.SOPClassUID == COMPREHENSIVE_3D_SR and report.Modality == "SR"
    assert report.StudyInstanceUID == ds.StudyInstanceUID and report.PatientID == ds.PatientID
    assert report.SeriesInstanceUID not in (ds.SeriesInstanceUID, seg.SeriesInstanceUID)
    assert report.CompletionFlag == "COMPLETE" and report.VerificationFlag == "UNVERIFIED"
    evidence = {
        item.ReferencedSOPInstanceUID
        for study in report.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert evidence == {ds.SOPInstanceUID, seg.SOPInstanceUID}

    image, finding = _evaluation(report)
    assert finding == "Present"
    assert image.tracking_identifier == "Image-level finding: fracture present"
    assert _measurements(image) == {"Score": (pytest.approx(0.9), "1"), "Threshold Value": (0.4205, "1")}
    assert [s.referenced_sop_instance_uid for s in image.source_images] == [ds.SOPInstanceUID]
    parameters = _algorithm_parameters(sr_path)
    for text in (MODEL.name, "0.10.1", "image threshold 0.4205", "pixel threshold 0.5", "ab" * 32):
        assert text in parameters
    assert "area from PixelSpacing: 0.2 x 0.1 mm" in parameters

    # the score's source is the whole image, drawn by viewers as its outline (OHIF needs coordinates)
    (score,) = [m for m in image.get_measurements() if m.name.meaning == "Score"]
    (source,) = [item for item in score[0].ContentSequence if item.ValueType == "SCOORD"]
    assert source.RelationshipType == "INFERRED FROM" and source.GraphicType == "POLYLINE"
    assert [float(v) for v in source.GraphicData] == [0, 0, 60, 0, 60, 40, 0, 40, 0, 0]
    assert source.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID

    groups = report.content.get_planar_roi_measurement_groups()
    assert [g.tracking_identifier for g in groups] == ["Fracture region 1", "Fracture region 2"]
    outlines = []
    for group in groups:
        # the ROI is the region's outline on the X-ray (pixel edges, DICOM image coordinates: column, row)
        assert group.referenced_segmentation_frame is None
        region = group.roi
        assert region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        assert (
            region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID
        )
        outlines.append(region.value.tolist())
        # every measurement was made on segment 1 of the SEG
        for measurement in group.get_measurements():
            (made_on,) = measurement.referenced_images
            assert made_on.referenced_sop_instance_uid == seg.SOPInstanceUID
            assert made_on.ReferencedSOPSequence[0].ReferencedSegmentNumber == 1
    assert outlines == [
        [[5, 5], [15, 5], [15, 10], [5, 10], [5, 5]],
        [[40, 20], [44, 20], [44, 30], [40, 30], [40, 20]],
    ]
    first, second = (_measurements(g) for g in groups)
    assert first["Area"] == (pytest.approx(50 * 0.2 * 0.1), "mm2")
    assert second["Area"] == (pytest.approx(40 * 0.2 * 0.1), "mm2")
    # pixel centres are at +0.5: columns 5..14, rows 5..9
    assert (first["Centroid column"][0], first["Centroid row"][0]) == (10.0, 7.5)
    box = [
        first[f"Bounding box {side}"][0] for side in ("left column", "top row", "right column", "bottom row")
    ]
    assert box == [5, 5, 15, 10]
    assert first["Mean fracture probability in region"][0] == pytest.approx(0.9)
    assert dciodvfy_errors(sr_path) == []


def _algorithm_parameters(sr_path: Path) -> str:
    """All text values of the SR (the algorithm's parameters are among them)."""
    texts: list[str] = []

    def walk(items) -> None:
        for item in items:
            if "TextValue" in item:
                texts.append(str(item.TextValue))
            walk(item.get("ContentSequence", []))

    walk(pydicom.dcmread(sr_path).ContentSequence)
    return "\n".join(texts)


def test_suspected_not_localised_and_absent_have_a_dicom_form(tmp_path) -> None:
    """Score above the threshold with an empty mask ("fracture suspected, not localised") and "absent"
    are both stated, with the score and the threshold; neither has a region group."""
    ds = make_dataset(np.zeros((40, 60), np.uint16))
    empty = np.zeros((40, 60), np.int32)  # an image-level "yes" without a region (no rule gives one today)
    suspected = Decision(mask=empty > 0, labels=empty, fracture_score=0.61, fracture_present=True)
    (tmp_path / "s").mkdir()
    model = ModelInfo(name="m", version="1", image_threshold=0.4, pixel_threshold=0.95)
    seg_path, sr_path = _write(tmp_path / "s", ds, suspected, model)
    report = hd.sr.srread(sr_path)
    image, finding = _evaluation(report)
    assert finding == "Suspected"
    assert image.tracking_identifier == "Image-level finding: fracture suspected, not localised"
    assert _measurements(image) == {"Score": (pytest.approx(0.61), "1"), "Threshold Value": (0.4, "1")}
    assert report.content.get_planar_roi_measurement_groups() == []
    # no region cites the (empty) SEG: the SR lists it as other evidence of the same study
    (other,) = report.PertinentOtherEvidenceSequence[0].ReferencedSeriesSequence
    assert other.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == pydicom.dcmread(seg_path).SOPInstanceUID
    assert "weights sha256 none (untrained model)" in _algorithm_parameters(sr_path)
    assert dciodvfy_errors(sr_path) == []

    absent = decide(_probability(40, 60), DecisionRule(score_threshold=0.95))
    (tmp_path / "a").mkdir()
    _, sr_path = _write(tmp_path / "a", ds, absent)
    report = hd.sr.srread(sr_path)
    assert _evaluation(report)[1] == "Absent"
    assert report.content.get_planar_roi_measurement_groups() == []
    assert dciodvfy_errors(sr_path) == []


@pytest.mark.parametrize(
    ("spacing", "unit", "area", "note"),
    [
        ({"PixelSpacing": [0, 0]}, "{pixels}", 50.0, "area in pixels: the source has no valid pixel spacing"),
        ({}, "{pixels}", 50.0, "area in pixels"),
        ({"ImagerPixelSpacing": [0.5, 0.5]}, "mm2", 12.5, "(at the detector, magnification not corrected)"),
    ],
)
def test_area_in_pixels_without_a_valid_spacing(tmp_path, spacing, unit, area, note) -> None:
    ds = make_dataset(np.zeros((40, 60), np.uint16))
    for keyword, value in spacing.items():
        setattr(ds, keyword, value)
    decision = decide(_probability(40, 60), DecisionRule())
    _, sr_path = _write(tmp_path, ds, decision, MODEL)
    first = _measurements(hd.sr.srread(sr_path).content.get_planar_roi_measurement_groups()[0])
    assert first["Area"] == (pytest.approx(area), unit)
    parameters = _algorithm_parameters(sr_path)
    assert note in parameters and "image threshold 0.4205" in parameters and "ab" * 32 in parameters
    assert dciodvfy_errors(sr_path) == []


def test_sr_for_the_sample_cr(tmp_path) -> None:
    sample = REPO / "data" / "samples" / "IMG0003766_CR.dcm"
    source = pydicom.dcmread(sample, stop_before_pixels=True)
    prob = np.zeros((source.Rows, source.Columns), np.float32)
    prob[100:140, 200:230] = 0.8
    decision = decide(prob, DecisionRule())
    seg = write_dicom_seg(sample, decision.mask, tmp_path / "cr_seg.dcm")
    sr_path = write_dicom_sr(sample, seg, decision, MODEL, tmp_path / "cr_sr.dcm")
    report = hd.sr.srread(sr_path)
    assert report.StudyInstanceUID == source.StudyInstanceUID
    assert len(report.content.get_planar_roi_measurement_groups()) == 1
    assert dciodvfy_errors(sr_path) == []


def test_sr_refuses_labels_off_the_grid(tmp_path) -> None:
    src = save(make_dataset(np.zeros((20, 30), np.uint16)), tmp_path / "a.dcm")
    decision = decide(_probability(40, 60), DecisionRule())
    seg = write_dicom_seg(
        save(make_dataset(np.zeros((40, 60), np.uint16)), tmp_path / "b.dcm"),
        decision.mask,
        tmp_path / "b_seg.dcm",
    )
    with pytest.raises(ImageReadError, match="do not match the DICOM grid"):
        write_dicom_sr(src, seg, decision, MODEL, tmp_path / "a_sr.dcm")
    assert not (tmp_path / "a_sr.dcm").exists()


def test_region_outline_follows_pixel_edges() -> None:
    """The ROI drawn for a region: its outer boundary along pixel edges (holes filled), one closed polygon
    even where pixels touch only at a corner (regions are 8-connected); its area is the pixels' area."""
    from fracseg.io.dicom_sr import _outline

    rng = np.random.default_rng(3)
    for _ in range(20):
        mask = np.zeros((30, 30), bool)
        mask[5:25, 5:25] = rng.random((20, 20)) > 0.35
        from scipy import ndimage

        labels, _count = ndimage.label(mask, structure=np.ones((3, 3), bool))
        region = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
        poly = _outline(region)
        assert (poly[0] == poly[-1]).all()
        x, y = poly[:, 0], poly[:, 1]
        area = 0.5 * abs(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))
        assert area == ndimage.binary_fill_holes(region).sum()
    diagonal = np.zeros((5, 5), bool)
    diagonal[1, 1] = diagonal[2, 2] = True
    assert _outline(diagonal).tolist() == [
        [1, 1],
        [2, 1],
        [2, 2],
        [3, 2],
        [3, 3],
        [2, 3],
        [2, 2],
        [1, 2],
        [1, 1],
    ]
