"""DICOM Structured Report of the findings: a TID 1500 Measurement Report (Comprehensive 3D SR, highdicom).

One SR per ``--dicom-seg`` / ``--stow`` result, written beside the SEG (``<stem>_sr.dcm``), in the same
study as the X-ray and referencing it and the SEG (both are the SR's evidence):

* one image-level group (TID 1501) for the answer about the whole image: the qualitative evaluation
  "Fracture" = Present (SCT 52101004), Suspected (SCT 415684004: the score is above the threshold but no
  region was found, "fracture suspected, not localised") or Absent (SCT 2667000), the score (SCT
  246262008 "Score") and the threshold it was compared with (DCM 122411 "Threshold Value"), the model
  (algorithm name = bundle name, version = bundle version, parameters: weights sha256, image and
  pixel threshold, the spacing used). The score's source of measurement (TID 300 "INFERRED FROM", TID
  320) is the whole image, as a SCOORD POLYLINE along the image's border selected from the X-ray: a
  viewer that draws measurement groups (OHIF) has coordinates for this group too;
* one planar ROI group (TID 1410) per predicted region: its ROI is an Image Region on the X-ray, the
  region's outline (a closed POLYLINE along its pixels' outer edges, holes not cut out), with its area (SCT
  42798000, in mm2 where the source has a valid pixel spacing, else in pixels), centroid, bounding box
  and mean probability, each measured on segment 1 of the SEG (TID 300 "Source of Measurement": the
  SEG's instance, Referenced Segment Number 1). Positions use DICOM's image coordinates (PS3.3
  C.18.6.1.2: column, row; 0.0\\0.0 is the top left corner of the top left pixel, so the first pixel's
  centre is 0.5\\0.5); the bounding box is the smallest such rectangle around the region's pixels.

The SR's evidence is the X-ray and the SEG: cited by the groups (Current Requested Procedure Evidence);
where no region cites the SEG (absent, suspected not localised: its one frame is empty), the SEG is listed
as Pertinent Other Evidence, so every SR still names its SEG.

Concepts the standard does not name (centroid and bounding box coordinates, a region's mean probability)
use the local coding scheme ``99FRACSEG`` (PS3.16 8.2), declared in the SR's Coding Scheme Identification
Sequence. The SR is marked complete and preliminary (unverified): a model's answer for a radiologist to
review, never a signed report.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from fracseg import __version__
from fracseg.errors import ImageReadError
from fracseg.io.atomic import atomic_path
from fracseg.io.dicom_seg import CATEGORY, FRACTURE, REQUIRED_FOR_REFERENCE, TYPE2_FROM_SOURCE, seg_spacing

if TYPE_CHECKING:
    from fracseg.inference.decision import Decision, Region

#: The three image-level answers (:func:`finding_of`) and their SNOMED CT qualifier values.
PRESENT, SUSPECTED, ABSENT = "present", "suspected, not localised", "absent"
FINDING_CODES = {
    PRESENT: ("52101004", "SCT", "Present"),
    SUSPECTED: ("415684004", "SCT", "Suspected"),
    ABSENT: ("2667000", "SCT", "Absent"),
}
SCORE = ("246262008", "SCT", "Score")
THRESHOLD = ("122411", "DCM", "Threshold Value")
AREA = ("42798000", "SCT", "Area")
RADIOGRAPHY = ("363680008", "SCT", "Radiographic imaging procedure")
NO_UNITS = ("1", "UCUM", "no units")
MM2 = ("mm2", "UCUM", "square millimeter")
PIXELS = ("{pixels}", "UCUM", "pixels")
#: Local codes (PS3.16 8.2: a "99" prefix marks a private coding scheme).
LOCAL_SCHEME = "99FRACSEG"
CENTROID_X = ("CENTROID-X", LOCAL_SCHEME, "Centroid column")
CENTROID_Y = ("CENTROID-Y", LOCAL_SCHEME, "Centroid row")
BOX_X_MIN = ("BBOX-X-MIN", LOCAL_SCHEME, "Bounding box left column")
BOX_Y_MIN = ("BBOX-Y-MIN", LOCAL_SCHEME, "Bounding box top row")
BOX_X_MAX = ("BBOX-X-MAX", LOCAL_SCHEME, "Bounding box right column")
BOX_Y_MAX = ("BBOX-Y-MAX", LOCAL_SCHEME, "Bounding box bottom row")
MEAN_PROBABILITY = ("REGION-MEAN-PROB", LOCAL_SCHEME, "Mean fracture probability in region")
SR_SERIES_NUMBER = 9902


@dataclass(frozen=True)
class ModelInfo:
    """What produced the answer: the bundle's name and version, the weights, and the thresholds."""

    name: str
    version: str
    image_threshold: float
    pixel_threshold: float
    weights_sha256: str | None = None
    trained: bool = True

    @classmethod
    def of(cls, predictor: Any) -> ModelInfo:
        """From a :class:`~fracseg.inference.predictor.Predictor`."""
        from fracseg.inference.predictor import DEFAULT_BUNDLE

        bundle = Path(getattr(predictor, "bundle", DEFAULT_BUNDLE))
        try:
            metadata = json.loads((bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            metadata = {}
        weights = getattr(predictor, "weights_sha256", None)
        return cls(
            name=str(metadata.get("name") or "fracseg"),
            version=str(metadata.get("version") or __version__),
            image_threshold=float(predictor.rule.score_threshold),
            pixel_threshold=float(predictor.rule.threshold),
            weights_sha256=weights if weights and weights != "untrained" else None,
            trained=bool(getattr(predictor, "trained", True)),
        )


def finding_of(decision: Decision) -> str:
    """:data:`PRESENT` (a region), :data:`SUSPECTED` (judged present without a region) or :data:`ABSENT`."""
    if not decision.fracture_present:
        return ABSENT
    return PRESENT if decision.regions else SUSPECTED


def _code(triple: tuple[str, str, str]) -> Any:
    import highdicom as hd

    return hd.sr.CodedConcept(*triple)


def _region_measurements(
    labels: np.ndarray, region: Region, spacing: tuple[float, float] | None
) -> list[Any]:
    """Area, centroid, bounding box (from the decision's :class:`Region`) and mean probability."""
    import highdicom as hd

    rows, cols = np.nonzero(labels == region.label)
    pixels = region.pixels
    box_rows, box_cols = region.bbox
    if spacing is not None:
        area, unit = pixels * spacing[0] * spacing[1], MM2
    else:
        area, unit = float(pixels), PIXELS
    values = [
        (AREA, round(float(area), 4), unit),
        (CENTROID_X, round(float(cols.mean()) + 0.5, 3), PIXELS),
        (CENTROID_Y, round(float(rows.mean()) + 0.5, 3), PIXELS),
        (BOX_X_MIN, int(box_cols.start), PIXELS),
        (BOX_Y_MIN, int(box_rows.start), PIXELS),
        (BOX_X_MAX, int(box_cols.stop), PIXELS),
        (BOX_Y_MAX, int(box_rows.stop), PIXELS),
        (MEAN_PROBABILITY, round(float(region.confidence), 6), NO_UNITS),
    ]
    return [hd.sr.Measurement(name=_code(n), value=v, unit=_code(u)) for n, v, u in values]


def _outline(mask: np.ndarray) -> np.ndarray:
    """The outer boundary of ``mask``'s pixels (one 8-connected region) as a closed polygon along pixel
    edges, in DICOM image coordinates (column, row; the top left pixel spans 0..1): holes are not cut out,
    collinear points are dropped, the first point is repeated at the end."""
    from scipy import ndimage

    filled = np.pad(ndimage.binary_fill_holes(mask), 1)
    # directed boundary edges, clockwise on screen (the region on the right): vertex -> [next vertices]
    out: dict[tuple[int, int], list[tuple[int, int]]] = {}
    rows, cols = np.nonzero(filled & ~ndimage.binary_erosion(filled))  # pixels with a background side
    for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
        x, y = c - 1, r - 1  # the pixel's top left corner, padding removed
        if not filled[r - 1, c]:
            out.setdefault((x, y), []).append((x + 1, y))
        if not filled[r, c + 1]:
            out.setdefault((x + 1, y), []).append((x + 1, y + 1))
        if not filled[r + 1, c]:
            out.setdefault((x + 1, y + 1), []).append((x, y + 1))
        if not filled[r, c - 1]:
            out.setdefault((x, y + 1), []).append((x, y))
    start = min(out, key=lambda v: (v[1], v[0]))  # top left corner: its edge goes right
    points, here, heading = [start], start, (1, 0)
    while True:
        options = out[here]
        if len(options) > 1:  # two regions' corners touch here: turn left, keeping diagonal pixels together
            left = (heading[1], -heading[0])
            options.sort(key=lambda v: (v[0] - here[0], v[1] - here[1]) != left)
        nxt = options.pop(0)
        heading = (nxt[0] - here[0], nxt[1] - here[1])
        here = nxt
        if here == start and not out[start]:
            break
        points.append(here)
    points.append(start)
    poly = np.asarray(points, dtype=float)
    keep = [0]
    for i in range(1, len(poly) - 1):
        a, b, c = poly[keep[-1]], poly[i], poly[i + 1]
        if (b[0] - a[0]) * (c[1] - b[1]) != (b[1] - a[1]) * (c[0] - b[0]):
            keep.append(i)
    keep.append(len(poly) - 1)
    return poly[keep]


def _whole_image(rows: int, cols: int) -> np.ndarray:
    return np.array([[0, 0], [cols, 0], [cols, rows], [0, rows], [0, 0]], dtype=float)


def _evidence(source: Dataset, path: str) -> Dataset:
    missing = [kw for kw in REQUIRED_FOR_REFERENCE if not source.get(kw)]
    if missing:
        raise ImageReadError(path, f"cannot reference the source in a DICOM SR: no {', '.join(missing)}")
    ds = copy.deepcopy(source)
    for keyword in TYPE2_FROM_SOURCE:
        if keyword not in ds:
            setattr(ds, keyword, "")
    return ds


def dicom_sr_dataset(
    source: Dataset,
    seg: Dataset,
    decision: Decision,
    model: ModelInfo,
    source_path: str = "<dataset>",
) -> Dataset:
    """Build the Measurement Report of ``decision`` for ``source`` and its ``seg`` (headers suffice).

    Raises:
        ImageReadError: the source cannot be referenced, or the decision's grid is not the source's.
    """
    import highdicom as hd

    labels = np.asarray(decision.labels)
    if labels.shape != (int(source.Rows), int(source.Columns)):
        raise ImageReadError(
            source_path, f"labels {labels.shape} do not match the DICOM grid {(source.Rows, source.Columns)}"
        )
    src = _evidence(source, source_path)
    spacing = seg_spacing(src)
    finding = finding_of(decision)
    parameters = [
        f"image threshold {model.image_threshold:g}",
        f"pixel threshold {model.pixel_threshold:g}",
        f"weights sha256 {model.weights_sha256 or 'none (untrained model)'}",
    ]
    parameters.append(
        "area in pixels: the source has no valid pixel spacing"
        if spacing is None
        else f"area from {spacing[0]}: {spacing[1][0]:g} x {spacing[1][1]:g} mm"
        + (" (at the detector, magnification not corrected)" if spacing[0] == "ImagerPixelSpacing" else "")
    )
    algorithm = hd.sr.AlgorithmIdentification(name=model.name, version=model.version, parameters=parameters)
    source_ref = {
        "referenced_sop_class_uid": src.SOPClassUID,
        "referenced_sop_instance_uid": src.SOPInstanceUID,
    }
    # the score is computed from the whole image: its source (TID 300 "INFERRED FROM", TID 320) is the
    # image's outline, so that viewers that draw measurements (OHIF) have coordinates for this group too
    score = hd.sr.Measurement(
        name=_code(SCORE), value=round(float(decision.fracture_score), 6), unit=_code(NO_UNITS)
    )
    whole = hd.sr.ScoordContentItem(
        name=codes.DCM.SourceOfMeasurement,
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=_whole_image(*labels.shape),
        relationship_type=hd.sr.RelationshipTypeValues.INFERRED_FROM,
    )
    whole.ContentSequence = [hd.sr.SourceImageForRegion(**source_ref)]
    score[0].ContentSequence = hd.sr.ContentSequence([whole])
    image_group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=hd.UID(), identifier=f"Image-level finding: fracture {finding}"
        ),
        finding_type=_code(FRACTURE),
        finding_category=_code(CATEGORY),
        algorithm_id=algorithm,
        measurements=[
            score,
            hd.sr.Measurement(
                name=_code(THRESHOLD), value=round(model.image_threshold, 6), unit=_code(NO_UNITS)
            ),
        ],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(name=_code(FRACTURE), value=_code(FINDING_CODES[finding]))
        ],
        source_images=[hd.sr.SourceImageForMeasurementGroup(**source_ref)],
    )
    groups: list[Any] = [image_group]
    seg_ref = {"referenced_sop_class_uid": seg.SOPClassUID, "referenced_sop_instance_uid": seg.SOPInstanceUID}
    for region in decision.regions:
        # TID 1410 takes one ROI: the region's outline on the X-ray (what viewers draw); the measurements are
        # made on segment 1 of the SEG (TID 300 "Source of Measurement", the SEG's one frame and segment 1)
        measurements = _region_measurements(labels, region, spacing[1] if spacing else None)
        for measurement in measurements:
            source = hd.sr.SourceImageForMeasurement(**seg_ref)
            source.ReferencedSOPSequence[0].ReferencedSegmentNumber = 1
            measurement[0].ContentSequence = hd.sr.ContentSequence(
                [*measurement[0].get("ContentSequence", []), source]
            )
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=hd.UID(), identifier=f"Fracture region {region.label}"
                ),
                referenced_region=hd.sr.ImageRegion(
                    graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                    graphic_data=_outline(labels == region.label),
                    source_image=hd.sr.SourceImageForRegion(**source_ref),
                ),
                finding_type=_code(FRACTURE),
                finding_category=_code(CATEGORY),
                algorithm_id=algorithm,
                measurements=measurements,
            )
        )
    device = hd.sr.ObserverContext(
        observer_type=hd.sr.CodedConcept("121007", "DCM", "Device"),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=["fracseg", model.name, model.version]),
            name="fracseg",
            manufacturer_name="fracseg",
            model_name=f"{model.name} {model.version}",
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=_code(RADIOGRAPHY),
        imaging_measurements=groups,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[src, seg],
        content=report,
        series_instance_uid=hd.UID(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="fracseg",
        is_complete=True,
        is_final=False,
        series_description="fracseg fracture findings",
    )
    scheme = Dataset()
    scheme.CodingSchemeDesignator = LOCAL_SCHEME
    scheme.CodingSchemeName = "fracseg local codes"
    scheme.CodingSchemeResponsibleOrganization = "fracseg"
    sr.CodingSchemeIdentificationSequence = [scheme]
    sr.SoftwareVersions = __version__
    return sr


def write_dicom_sr(
    source_path: str | os.PathLike[str],
    seg_path: str | os.PathLike[str],
    decision: Decision,
    model: ModelInfo,
    out_path: str | os.PathLike[str],
) -> Path:
    """Read the source's and the SEG's headers, build the SR (:func:`dicom_sr_dataset`) and write it
    atomically to ``out_path``."""
    source_path = os.fspath(source_path)
    try:
        source = pydicom.dcmread(source_path, stop_before_pixels=True, force=True)
    except Exception as exc:  # any parse failure is reported against the file
        raise ImageReadError(source_path, f"cannot read the DICOM header for the SR: {exc}") from exc
    seg = pydicom.dcmread(os.fspath(seg_path), stop_before_pixels=True)
    sr = dicom_sr_dataset(source, seg, decision, model, source_path)
    out = Path(out_path)
    with atomic_path(out) as tmp:
        sr.save_as(tmp, write_like_original=False)
    return out


def sr_path_for(seg_path: str | os.PathLike[str]) -> Path:
    """``<stem>_sr.dcm`` beside ``<stem>_seg.dcm``."""
    seg_path = Path(seg_path)
    return seg_path.with_name(seg_path.name.removesuffix("_seg.dcm") + "_sr.dcm")
