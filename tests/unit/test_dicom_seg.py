"""DICOM SEG output: read back pixel-exact, references the source, keeps identifiers, passes dciodvfy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from fracseg.errors import ImageReadError
from fracseg.io.dicom_seg import write_dicom_seg
from tests.helpers.dciodvfy import dciodvfy_errors
from tests.helpers.dicom_factory import (
    JPEG_2000,
    JPEG_BASELINE,
    make_dataset,
    make_lossy_cr,
    save,
    save_with_raw_value,
)

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
REPO = Path(__file__).resolve().parents[2]


def _mask(rows: int, cols: int) -> np.ndarray:
    mask = np.zeros((rows, cols), dtype=bool)
    mask[rows // 4 : rows // 2, cols // 3 : cols // 2] = True
    mask[-3:, :5] = True  # touches the border: packing bits must not shift it
    return mask


def _check_seg(seg_path: Path, source: pydicom.Dataset, mask: np.ndarray) -> pydicom.Dataset:
    seg = pydicom.dcmread(seg_path)
    assert seg.SOPClassUID == SEG_STORAGE and seg.Modality == "SEG"
    assert seg.SegmentationType == "BINARY" and seg.NumberOfFrames == 1
    np.testing.assert_array_equal(seg.pixel_array.astype(bool), mask)
    assert seg.SegmentSequence[0].SegmentLabel == "Fracture"
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "72704001"
    ref = seg.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == source.SeriesInstanceUID
    assert ref.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    derivation = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0]
    assert derivation.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID"):
        assert str(seg.get(keyword, "")) == str(source.get(keyword, "")), keyword
    assert seg.SeriesInstanceUID != source.SeriesInstanceUID
    return seg


@pytest.mark.parametrize("name", ["CR-MONO1-10-chest.dcm", "CR-ModalitySequenceLUT.dcm"])
def test_seg_for_the_real_cr_files(tmp_path, shared_data, name) -> None:
    src_path = shared_data / "dicom" / name
    source = pydicom.dcmread(src_path, stop_before_pixels=True, force=True)
    mask = _mask(source.Rows, source.Columns)
    out = write_dicom_seg(src_path, mask, tmp_path / "seg.dcm")
    _check_seg(out, source, mask)
    errors = dciodvfy_errors(out)
    if name == "CR-ModalitySequenceLUT.dcm":
        # The source's own SOP Instance UID "999.999.01.23.45.6789" is invalid; the SEG must quote it to
        # reference the image, so dciodvfy reports exactly that and nothing else.
        assert errors and all("999.999.01.23.45.6789" in e or "invalid data values" in e for e in errors)
    else:
        assert errors == []


def test_seg_for_the_sample_cr_and_a_synthetic_dx_without_patient_attributes(tmp_path) -> None:
    sample = REPO / "data" / "samples" / "IMG0003766_CR.dcm"
    source = pydicom.dcmread(sample, stop_before_pixels=True)
    mask = _mask(source.Rows, source.Columns)
    _check_seg(write_dicom_seg(sample, mask, tmp_path / "cr_seg.dcm"), source, mask)
    assert dciodvfy_errors(tmp_path / "cr_seg.dcm") == []

    ds = make_dataset(np.zeros((37, 53), np.uint16), modality="DX", sop_class="1.2.840.10008.5.1.4.1.1.1.1")
    del ds.PatientName  # type 2 in the SEG: must be written (empty) even when the source lacks it
    ds.ImagerPixelSpacing = [0.143, 0.143]
    dx = save(ds, tmp_path / "dx.dcm")
    mask = _mask(37, 53)
    seg = _check_seg(write_dicom_seg(dx, mask, tmp_path / "dx_seg.dcm"), ds, mask)
    assert "FrameOfReferenceUID" not in seg  # projection image: pixel-grid aligned, no patient geometry
    assert [
        float(v) for v in seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    ] == [
        0.143,
        0.143,
    ]
    # the identity orientation of the source grid that OHIF needs to draw it (tests/integration/test_ohif.py)
    shared = seg.SharedFunctionalGroupsSequence[0]
    assert [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient] == [
        1,
        0,
        0,
        0,
        1,
        0,
    ]
    assert dciodvfy_errors(tmp_path / "dx_seg.dcm") == []
    cr_seg = pydicom.dcmread(tmp_path / "cr_seg.dcm")  # no pixel spacing in the sample: no geometry at all
    assert "PlaneOrientationSequence" not in cr_seg.SharedFunctionalGroupsSequence[0]


def test_empty_mask_gives_a_valid_seg_with_one_empty_frame(tmp_path) -> None:
    sample = REPO / "data" / "samples" / "IMG0003766_CR.dcm"
    source = pydicom.dcmread(sample, stop_before_pixels=True)
    empty = np.zeros((source.Rows, source.Columns), dtype=bool)
    _check_seg(write_dicom_seg(sample, empty, tmp_path / "empty.dcm"), source, empty)
    assert dciodvfy_errors(tmp_path / "empty.dcm") == []


def test_seg_refuses_a_mask_of_the_wrong_size_and_an_unreferenceable_source(tmp_path) -> None:
    ds = make_dataset(np.zeros((20, 30), np.uint16))
    src = save(ds, tmp_path / "a.dcm")
    with pytest.raises(ImageReadError, match="does not match the DICOM grid"):
        write_dicom_seg(src, np.zeros((30, 20), bool), tmp_path / "seg.dcm")
    del ds.SOPInstanceUID
    src = save(ds, tmp_path / "b.dcm")
    with pytest.raises(ImageReadError, match="no SOPInstanceUID"):
        write_dicom_seg(src, np.zeros((20, 30), bool), tmp_path / "seg.dcm")
    assert not (tmp_path / "seg.dcm").exists()


def _lossy_pixels() -> np.ndarray:
    rng = np.random.default_rng(3)
    return (np.add.outer(np.arange(64), np.arange(48)) * 2 + rng.integers(0, 20, (64, 48))).astype(np.uint8)


@pytest.mark.parametrize(
    ("transfer_syntax", "method"), [(JPEG_2000, "ISO_15444_1"), (JPEG_BASELINE, "ISO_10918_1")]
)
def test_lossy_source_without_method_or_ratio_gives_a_valid_seg(tmp_path, transfer_syntax, method) -> None:
    """LossyImageCompression 01 without method and ratio (common in lossy JPEG 2000 archives): the
    method follows from the transfer syntax, the ratio from the encapsulated size; dciodvfy accepts it."""
    src = save(make_lossy_cr(_lossy_pixels(), transfer_syntax), tmp_path / "lossy.dcm")
    source = pydicom.dcmread(src, stop_before_pixels=True)
    assert "LossyImageCompressionMethod" not in source and "LossyImageCompressionRatio" not in source
    mask = _mask(64, 48)
    seg = _check_seg(write_dicom_seg(src, mask, tmp_path / "seg.dcm"), source, mask)
    assert seg.LossyImageCompression == "01" and seg.LossyImageCompressionMethod == method
    compressed = len(pydicom.dcmread(src).PixelData)
    assert float(seg.LossyImageCompressionRatio) == pytest.approx(64 * 48 / compressed, rel=0.01)
    assert dciodvfy_errors(tmp_path / "seg.dcm") == []


def test_lossy_source_keeps_its_own_method(tmp_path) -> None:
    ds = make_lossy_cr(_lossy_pixels(), JPEG_2000, method="ISO_15444_1")
    ds.LossyImageCompressionRatio = 12.5
    src = save(ds, tmp_path / "lossy.dcm")
    seg = pydicom.dcmread(write_dicom_seg(src, _mask(64, 48), tmp_path / "seg.dcm"))
    assert seg.LossyImageCompressionMethod == "ISO_15444_1" and float(seg.LossyImageCompressionRatio) == 12.5
    assert dciodvfy_errors(tmp_path / "seg.dcm") == []


def test_lossy_flag_on_an_uncompressed_source_without_method_is_a_clear_error(tmp_path) -> None:
    ds = make_dataset(np.zeros((20, 30), np.uint16))
    ds.LossyImageCompression = "01"  # decompressed at some point; nothing says how it was compressed
    src = save(ds, tmp_path / "a.dcm")
    with pytest.raises(ImageReadError, match="LossyImageCompressionMethod") as info:
        write_dicom_seg(src, np.zeros((20, 30), bool), tmp_path / "seg.dcm")
    assert str(info.value).startswith(str(src))
    assert not (tmp_path / "seg.dcm").exists()


def _set(**attributes):
    def apply(ds: pydicom.Dataset) -> None:
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)

    return apply


@pytest.mark.parametrize(
    ("name", "change", "expected"),
    [
        ("zero", _set(PixelSpacing=[0, 0]), None),
        ("one zero", _set(PixelSpacing=[0.1, 0]), None),
        ("negative", _set(PixelSpacing=[-0.1, 0.1]), None),
        ("one value", _set(PixelSpacing="0.1"), None),
        ("text garbage", _set(PixelSpacing=[0.125, 0.125]), None),  # bytes replaced below
        ("imager only", _set(ImagerPixelSpacing=[0.15, 0.2]), [0.15, 0.2]),
        ("imager zero", _set(ImagerPixelSpacing=[0, 0]), None),
        ("zero, valid imager", _set(PixelSpacing=[0, 0], ImagerPixelSpacing=[0.15, 0.15]), [0.15, 0.15]),
        ("aspect ratio only", _set(PixelAspectRatio=[1, 2]), None),
        ("aspect ratio and spacing", _set(PixelAspectRatio=[1, 2], PixelSpacing=[0.1, 0.2]), [0.1, 0.2]),
        ("valid", _set(PixelSpacing=[0.139, 0.139]), [0.139, 0.139]),
    ],
)
def test_any_source_spacing_gives_a_valid_seg(tmp_path, name, change, expected) -> None:
    """A zero, negative, one-valued or non-numeric spacing is dropped (no Pixel Measures), never copied
    (dciodvfy: "Value is zero for value 1 of attribute <Pixel Spacing>") and never a crash; a valid
    ImagerPixelSpacing stands in for a missing or invalid PixelSpacing."""
    ds = make_dataset(np.zeros((20, 30), np.uint16))
    change(ds)
    if name == "text garbage":
        src = save_with_raw_value(ds, tmp_path / "src.dcm", "PixelSpacing", b"abc\\de.f.g")
    else:
        src = save(ds, tmp_path / "src.dcm")
    mask = _mask(20, 30)
    seg = _check_seg(write_dicom_seg(src, mask, tmp_path / "seg.dcm"), ds, mask)
    shared = seg.SharedFunctionalGroupsSequence[0]
    if expected is None:
        assert "PixelMeasuresSequence" not in shared and "PixelSpacing" not in seg
    else:
        assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == expected
    assert dciodvfy_errors(tmp_path / "seg.dcm") == []
