"""DICOM Segmentation (SEG) objects for a predicted fracture mask, written with highdicom.

The SEG references its source instance and copies the patient and study identifiers, so a PACS or
viewer (OHIF, 3D Slicer) files it next to the X-ray. Projection radiographs (CR/DX) have no patient
coordinate system: the SEG is written without a Frame of Reference (pixel-grid aligned with the source),
which is what the Segmentation IOD allows for such images. A Frame of Reference UID that some CR writers
add anyway is ignored for that reason (highdicom would otherwise demand CT/MR-style plane geometry).
The SEG's Pixel Measures carry the source's ``PixelSpacing``, else its ``ImagerPixelSpacing``, when that
is two positive numbers; a zero, negative or malformed spacing (seen in exported CRs) is dropped, and the
SEG then has no Pixel Measures: a valid object on the source's pixel grid, never a copied invalid value.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from fracseg import __version__
from fracseg.errors import ImageReadError
from fracseg.io.atomic import atomic_path
from fracseg.io.dicom import valid_spacing

#: SNOMED CT codes for the single segment (also what MONAI Label's label "fracture" maps to).
CATEGORY = ("49755003", "SCT", "Morphologically Abnormal Structure")
FRACTURE = ("72704001", "SCT", "Fracture")
#: Algorithm family (CID 7162).
AI_FAMILY = ("123110", "DCM", "Artificial Intelligence")
#: Attributes the SEG needs (type 2: present, may be empty) but some X-ray exports leave out.
TYPE2_FROM_SOURCE = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)
REQUIRED_FOR_REFERENCE = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
#: Lossy Image Compression Method (0028,2114) defined terms (PS3.3 C.7.6.1.1.5.1) implied by a lossy
#: transfer syntax; a SEG of a lossy source must carry the method and ratio (PS3.3 C.8.20.2).
LOSSY_METHOD_OF_TRANSFER_SYNTAX = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",  # JPEG 2000 (lossy allowed)
    "1.2.840.10008.1.2.4.93": "ISO_15444_1",  # JPIP referenced, JPEG 2000
    "1.2.840.10008.1.2.4.203": "ISO_15444_15",  # High-Throughput JPEG 2000
}


def _lossy_compression_details(ds: Dataset, path: str) -> None:
    """Fill in Lossy Image Compression Method and Ratio when a lossy source leaves them out.

    Many archives set ``LossyImageCompression`` to ``01`` (common after lossy JPEG 2000) without the
    method or ratio, which the SEG's Segmentation Image Module requires. The method follows from a lossy
    transfer syntax; the ratio from the encapsulated pixel data's size against the uncompressed size.

    Raises:
        ImageReadError: the source says it was lossy compressed but neither the header nor its transfer
            syntax tells how (e.g. decompressed earlier and stored uncompressed).
    """
    if str(ds.get("LossyImageCompression", "")).strip() != "01":
        return
    tsyntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    if not ds.get("LossyImageCompressionMethod"):
        method = LOSSY_METHOD_OF_TRANSFER_SYNTAX.get(tsyntax)
        if method is None:
            raise ImageReadError(
                path,
                "cannot write a DICOM SEG: the source is marked lossy compressed (LossyImageCompression 01) "
                f"but gives no LossyImageCompressionMethod, and its transfer syntax ({tsyntax or 'none'}) "
                "does not tell which",
            )
        ds.LossyImageCompressionMethod = method
    if not ds.get("LossyImageCompressionRatio"):
        ratio = _compression_ratio(ds, path)
        if ratio is None:
            raise ImageReadError(
                path,
                "cannot write a DICOM SEG: the source is marked lossy compressed but gives no "
                "LossyImageCompressionRatio and has no encapsulated pixel data to measure it from",
            )
        methods = ds.LossyImageCompressionMethod
        count = len(methods) if isinstance(methods, MultiValue) else 1
        ds.LossyImageCompressionRatio = [ratio] * count if count > 1 else ratio


def _compression_ratio(ds: Dataset, path: str) -> float | None:
    """Uncompressed over encapsulated pixel data size, from the full file (pixels are not decoded)."""
    try:
        full = pydicom.dcmread(path, force=True)
        compressed = len(full.PixelData)
        uncompressed = (int(full.Rows) * int(full.Columns) * int(full.get("SamplesPerPixel", 1) or 1)) * (
            (int(full.BitsAllocated) + 7) // 8
        )
    except Exception:  # unreadable or no pixel data: the caller reports it
        return None
    if compressed <= 0 or not full.file_meta.TransferSyntaxUID.is_compressed:
        return None
    return round(uncompressed / compressed, 2)


def _source_for_seg(source: Dataset, path: str) -> Dataset:
    missing = [kw for kw in REQUIRED_FOR_REFERENCE if not source.get(kw)]
    if missing:
        raise ImageReadError(path, f"cannot reference the source in a DICOM SEG: no {', '.join(missing)}")
    ds = copy.deepcopy(source)
    for keyword in TYPE2_FROM_SOURCE:
        if keyword not in ds:
            setattr(ds, keyword, "")
    if "FrameOfReferenceUID" in ds and "ImagePositionPatient" not in ds:
        del ds.FrameOfReferenceUID  # a projection image: no patient-space geometry to carry
    for keyword in SPACING_KEYWORDS:
        # highdicom copies the source's PixelSpacing into the SEG when given no Pixel Measures: a spacing
        # the standard forbids (zero, negative, not two numbers) must not get that far.
        if keyword in ds and valid_spacing(ds, keyword) is None:
            del ds[keyword]
    _lossy_compression_details(ds, path)
    return ds


#: Where a projection radiograph states its pixel spacing, in order of preference: ``PixelSpacing`` (in the
#: patient, corrected for magnification where the modality does so), else ``ImagerPixelSpacing`` (at the
#: detector's front plane).
SPACING_KEYWORDS = ("PixelSpacing", "ImagerPixelSpacing")


def seg_spacing(ds: Dataset) -> tuple[str, tuple[float, float]] | None:
    """``(keyword, (row, column) mm)`` of the first valid spacing of :data:`SPACING_KEYWORDS`, or ``None``:
    the spacing a SEG (and the SR's areas) of ``ds`` use."""
    for keyword in SPACING_KEYWORDS:
        spacing = valid_spacing(ds, keyword)
        if spacing is not None:
            return keyword, spacing
    return None


def dicom_seg_dataset(
    source: Dataset,
    mask: np.ndarray,
    source_path: str = "<dataset>",
    series_number: int = 9901,
    corrected: bool = False,
) -> Dataset:
    """Build a binary SEG (one segment, "Fracture") for ``mask`` on the pixel grid of ``source``.

    Args:
        source: the source instance's header (pixel data not needed).
        mask: ``(Rows, Columns)`` boolean mask on the source pixel grid.
        source_path: used in error messages.
        series_number: SEG series number.
        corrected: the mask is the model's output corrected by a person (segment algorithm type
            SEMIAUTOMATIC, series "fracseg fracture mask, corrected"), not the model's output alone.

    Raises:
        ImageReadError: the source cannot be referenced or the mask does not fit its grid.
    """
    import highdicom as hd

    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (int(source.Rows), int(source.Columns)):
        raise ImageReadError(
            source_path, f"mask {mask.shape} does not match the DICOM grid {(source.Rows, source.Columns)}"
        )
    src = _source_for_seg(source, source_path)
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Fracture",
        segmented_property_category=hd.sr.CodedConcept(*CATEGORY),
        segmented_property_type=hd.sr.CodedConcept(*FRACTURE),
        algorithm_type=(
            hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC
            if corrected
            else hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        ),
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="fracseg",
            version=__version__,
            family=hd.sr.CodedConcept(*AI_FAMILY),
        ),
    )
    pixel_measures = None
    spacing = seg_spacing(src)  # invalid spacings were removed: without one, no Pixel Measures at all
    if spacing is not None:
        pixel_measures = hd.PixelMeasuresSequence(pixel_spacing=list(spacing[1]), slice_thickness=None)
    seg = hd.seg.Segmentation(
        source_images=[src],
        pixel_array=mask[None].astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="fracseg",
        manufacturer_model_name="fracseg fracture segmentation",
        software_versions=__version__,
        device_serial_number="0",
        series_description="fracseg fracture mask, corrected" if corrected else "fracseg fracture mask",
        content_label="FRACTURE",
        content_description="Fracture segmentation (fracseg, research use only)",
        pixel_measures=pixel_measures,
        omit_empty_frames=False,  # "no fracture found" is a result too: keep the (empty) frame
    )
    if "FrameOfReferenceUID" not in seg and pixel_measures is not None:
        # Viewers built on Cornerstone (OHIF 3.9+) read the pixel grid's orientation from the shared
        # functional groups even for a projection image; the identity orientation of the source grid keeps
        # the SEG valid (dciodvfy) and lets OHIF draw it over the CR/DX.
        orientation = Dataset()
        orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence = [orientation]
    if "PatientOrientation" not in seg:  # type 2C in General Image when there is no Frame of Reference
        seg.PatientOrientation = src.get("PatientOrientation", "")
    return seg


def write_dicom_seg(
    source_path: str | os.PathLike[str],
    mask: np.ndarray,
    out_path: str | os.PathLike[str],
    corrected: bool = False,
) -> Path:
    """Read ``source_path``'s header, build its SEG for ``mask`` and write it atomically to ``out_path``
    (``corrected``: see :func:`dicom_seg_dataset`)."""
    source_path = os.fspath(source_path)
    try:
        source = pydicom.dcmread(source_path, stop_before_pixels=True, force=True)
    except Exception as exc:  # any parse failure is reported against the file
        raise ImageReadError(source_path, f"cannot read the DICOM header for the SEG: {exc}") from exc
    seg = dicom_seg_dataset(source, mask, source_path, corrected=corrected)
    out = Path(out_path)
    with atomic_path(out) as tmp:
        seg.save_as(tmp, write_like_original=False)
    return out
