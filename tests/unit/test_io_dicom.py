"""DICOM reading through :func:`fracseg.io.read_xray` / :func:`read_dicom`.

Real CR files from the shared data plus synthetic datasets built with pydicom 2.4. Reference pixel values
come from pydicom's own decoders and LUT functions, or from numpy formulas, computed in the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import openjpeg
import pydicom
import pytest
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filewriter import dcmwrite
from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut

from fracseg.errors import ImageReadError
from fracseg.io import ImageFormat, read_dicom, read_xray
from tests.helpers.dicom_factory import (
    CR_IMAGE_STORAGE,
    CT_IMAGE_STORAGE,
    DX_FOR_PRESENTATION,
    DX_FOR_PROCESSING,
    FOR_UID,
    SECONDARY_CAPTURE,
    SERIES_UID,
    SOP_UID,
    STUDY_UID,
    make_dataset,
    save,
)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel())[0, 1])


@pytest.fixture(scope="module")
def pixels16() -> np.ndarray:
    """12-bit values in uint16, non-square, with the extremes present."""
    values = np.random.default_rng(12).integers(0, 4096, size=(5, 7)).astype(np.uint16)
    values[0, 0], values[4, 6] = 0, 4095
    return values


@pytest.fixture(scope="module")
def pixels8() -> np.ndarray:
    values = np.random.default_rng(8).integers(0, 256, size=(6, 4)).astype(np.uint8)
    values[0, 0], values[5, 3] = 0, 255
    return values


@pytest.fixture(scope="module")
def dicom_dir(shared_data: Path) -> Path:
    folder = shared_data / "dicom"
    assert folder.is_dir(), f"missing {folder}"
    return folder


# ---------------------------------------------------------------------------------------------------
# Real CR files
# ---------------------------------------------------------------------------------------------------


def test_real_cr_without_file_meta(dicom_dir: Path) -> None:
    path = dicom_dir / "CR-MONO1-10-chest.dcm"
    assert path.read_bytes()[128:132] != b"DICM"  # really a raw dataset, no preamble/file meta

    img = read_xray(path)

    # Reference: pydicom, with the transfer syntax the README prescribes, then modality + VOI LUT.
    ds = pydicom.dcmread(path, force=True)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid.ImplicitVRLittleEndian
    stored = ds.pixel_array
    reference = apply_voi_lut(apply_modality_lut(stored, ds), ds, index=0)

    assert img.array.shape == (440, 440) == stored.shape
    assert img.array.dtype == np.float32
    assert img.meta.format is ImageFormat.DICOM
    assert img.meta.photometric == "MONOCHROME1"
    assert img.meta.inverted is True
    assert img.meta.voi_applied is True
    assert img.meta.modality == "CR"
    assert img.meta.bits_stored == 10
    assert img.meta.pixel_spacing is None  # the file states none
    assert img.meta.dicom["SOPInstanceUID"] == str(ds.SOPInstanceUID)
    assert img.meta.dicom["StudyInstanceUID"] == str(ds.StudyInstanceUID)
    assert img.meta.dicom["SeriesInstanceUID"] == str(ds.SeriesInstanceUID)
    assert img.meta.dicom["SOPClassUID"] == CR_IMAGE_STORAGE
    # MONOCHROME1: the output is the windowed image reflected, i.e. perfectly anti-correlated.
    assert correlation(img.array, reference) == pytest.approx(-1.0, abs=1e-6)
    np.testing.assert_allclose(img.array, reference.max() + reference.min() - reference, atol=1e-3)
    assert img.array.min() == pytest.approx(reference.min()) and img.array.max() == pytest.approx(
        reference.max()
    )


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # the file's UIDs are not valid UIDs
def test_real_cr_jpeg_lossless_with_modality_lut_sequence(dicom_dir: Path) -> None:
    path = dicom_dir / "CR-ModalitySequenceLUT.dcm"

    img = read_xray(path)

    ds = pydicom.dcmread(path)
    stored = ds.pixel_array
    assert ds.file_meta.TransferSyntaxUID == uid.JPEGLosslessSV1
    assert "ModalityLUTSequence" in ds
    reference = apply_modality_lut(stored, ds)  # LUT sequence; the file has no window
    assert "WindowCenter" not in ds and "VOILUTSequence" not in ds

    assert img.array.shape == (1576, 1976) == stored.shape
    assert img.meta.photometric == "MONOCHROME1"
    assert img.meta.inverted is True
    assert img.meta.voi_applied is False
    assert img.meta.modality == "CR"
    assert img.meta.bits_stored == 10
    assert img.meta.pixel_spacing == pytest.approx((float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1])))
    assert img.meta.pixel_spacing == pytest.approx((0.15, 0.15))
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID", "SOPClassUID"):
        assert img.meta.dicom[keyword] == str(ds.get(keyword)), keyword
    assert correlation(img.array, reference) == pytest.approx(-1.0, abs=1e-6)
    np.testing.assert_array_equal(
        img.array, (reference.max() + reference.min() - reference).astype(np.float32)
    )


# ---------------------------------------------------------------------------------------------------
# Synthetic datasets: pixel pipeline
# ---------------------------------------------------------------------------------------------------


def test_monochrome2_16bit_pixels_preserved(tmp_path: Path, pixels16: np.ndarray) -> None:
    path = save(make_dataset(pixels16, bits_stored=12), tmp_path / "m2.dcm")

    img = read_xray(path)

    assert img.array.dtype == np.float32
    assert img.array.shape == (5, 7)
    assert np.array_equal(img.array, pixels16.astype(np.float32))
    meta = img.meta
    assert meta.format is ImageFormat.DICOM
    assert meta.inverted is False
    assert meta.photometric == "MONOCHROME2"
    assert meta.bits_stored == 12
    assert meta.original_size == (5, 7)
    assert meta.voi_applied is False
    assert meta.modality == "CR"
    assert meta.dicom == {
        "SOPInstanceUID": SOP_UID,
        "SOPClassUID": CR_IMAGE_STORAGE,
        "StudyInstanceUID": STUDY_UID,
        "SeriesInstanceUID": SERIES_UID,
        "FrameOfReferenceUID": FOR_UID,
        "PatientID": "FRACSEG-TEST",
        "PatientName": "Test^Patient",
    }


def test_monochrome2_8bit_pixels_preserved(tmp_path: Path, pixels8: np.ndarray) -> None:
    path = save(make_dataset(pixels8), tmp_path / "m2_8.dcm")

    img = read_xray(path)

    assert img.array.shape == (6, 4)
    assert np.array_equal(img.array, pixels8.astype(np.float32))
    assert img.meta.bits_stored == 8


@pytest.mark.parametrize("fixture_name", ["pixels8", "pixels16"])
def test_monochrome1_is_reflection_of_monochrome2(
    tmp_path: Path, request: pytest.FixtureRequest, fixture_name: str
) -> None:
    pixels = request.getfixturevalue(fixture_name)
    mono2 = read_xray(save(make_dataset(pixels, photometric="MONOCHROME2"), tmp_path / "m2.dcm"))
    mono1 = read_xray(save(make_dataset(pixels, photometric="MONOCHROME1"), tmp_path / "m1.dcm"))

    assert mono1.meta.inverted is True and mono2.meta.inverted is False
    assert mono1.meta.photometric == "MONOCHROME1"
    stored = pixels.astype(np.float64)
    # Reflection within the observed range: sum is constant, extremes swap places.
    sums = mono1.array.astype(np.float64) + mono2.array.astype(np.float64)
    assert np.all(sums == stored.max() + stored.min())
    assert np.unravel_index(np.argmax(mono1.array), pixels.shape) == np.unravel_index(
        np.argmin(pixels), pixels.shape
    )
    assert correlation(mono1.array, pixels) == pytest.approx(-1.0, abs=1e-9)
    assert (mono1.array.min(), mono1.array.max()) == (stored.min(), stored.max())


def test_rescale_slope_and_intercept_are_applied(tmp_path: Path, pixels16: np.ndarray) -> None:
    ds = make_dataset(pixels16, bits_stored=12)
    ds.RescaleSlope = "0.5"
    ds.RescaleIntercept = "-100"
    path = save(ds, tmp_path / "rescale.dcm")

    img = read_xray(path)

    expected = 0.5 * pixels16.astype(np.float64) - 100.0
    np.testing.assert_allclose(img.array, expected, rtol=0, atol=1e-4)
    assert img.array.min() == -100.0


def test_rescale_then_monochrome1_inversion(tmp_path: Path, pixels16: np.ndarray) -> None:
    ds = make_dataset(pixels16, photometric="MONOCHROME1", bits_stored=12)
    ds.RescaleSlope = "2"
    ds.RescaleIntercept = "10"
    img = read_xray(save(ds, tmp_path / "rescale_m1.dcm"))

    rescaled = 2.0 * pixels16.astype(np.float64) + 10.0
    np.testing.assert_allclose(img.array, rescaled.max() + rescaled.min() - rescaled, atol=1e-4)


def test_window_center_width_are_applied(tmp_path: Path, pixels16: np.ndarray) -> None:
    ds = make_dataset(pixels16, bits_stored=12)
    ds.WindowCenter = "2000"
    ds.WindowWidth = "1001"
    path = save(ds, tmp_path / "window.dcm")

    img = read_xray(path)

    reference_ds = pydicom.dcmread(path)
    reference = apply_voi_lut(
        apply_modality_lut(reference_ds.pixel_array, reference_ds), reference_ds, index=0
    )
    np.testing.assert_allclose(img.array, reference, atol=1e-3)
    assert img.meta.voi_applied is True
    # The DICOM LINEAR window (PS3.3 C.11.2.1.2.1), written out here: output range 0..4095.
    c, w = 2000 - 0.5, 1001 - 1
    x = pixels16.astype(np.float64)
    linear = np.clip(((x - c) / w + 0.5) * 4095, 0, 4095)
    np.testing.assert_allclose(img.array, linear, atol=1e-3)
    assert img.array[0, 0] == 0.0 and img.array[4, 6] == 4095.0  # saturated at both ends


def test_multi_valued_window_uses_the_first(tmp_path: Path, pixels16: np.ndarray) -> None:
    ds = make_dataset(pixels16, bits_stored=12)
    ds.WindowCenter = ["1000", "3000"]
    ds.WindowWidth = ["500", "4000"]
    path = save(ds, tmp_path / "windows.dcm")

    img = read_xray(path)

    reference_ds = pydicom.dcmread(path)
    first = apply_voi_lut(reference_ds.pixel_array, reference_ds, index=0)
    second = apply_voi_lut(reference_ds.pixel_array, reference_ds, index=1)
    np.testing.assert_allclose(img.array, first, atol=1e-3)
    assert not np.allclose(img.array, second, atol=1.0)


def test_window_on_monochrome1_is_applied_before_inversion(tmp_path: Path, pixels16: np.ndarray) -> None:
    ds = make_dataset(pixels16, photometric="MONOCHROME1", bits_stored=12)
    ds.WindowCenter = "2048"
    ds.WindowWidth = "2048"
    path = save(ds, tmp_path / "window_m1.dcm")

    img = read_xray(path)

    reference_ds = pydicom.dcmread(path)
    windowed = apply_voi_lut(reference_ds.pixel_array, reference_ds, index=0)
    np.testing.assert_allclose(img.array, windowed.max() + windowed.min() - windowed, atol=1e-3)
    assert correlation(img.array, windowed) == pytest.approx(-1.0, abs=1e-9)


@pytest.mark.parametrize(
    ("intent", "sop_class"),
    [("FOR PROCESSING", DX_FOR_PROCESSING), ("FOR PRESENTATION", DX_FOR_PRESENTATION)],
)
def test_dx_for_processing_and_presentation(
    tmp_path: Path, pixels16: np.ndarray, intent: str, sop_class: str
) -> None:
    ds = make_dataset(pixels16, modality="DX", sop_class=sop_class, bits_stored=12)
    ds.PresentationIntentType = intent
    ds.ImagerPixelSpacing = ["0.139", "0.143"]
    path = save(ds, tmp_path / "dx.dcm")

    img = read_xray(path)

    assert img.meta.modality == "DX"
    assert img.meta.dicom["SOPClassUID"] == sop_class
    assert np.array_equal(img.array, pixels16.astype(np.float32))
    assert img.meta.pixel_spacing == pytest.approx((0.139, 0.143))


def test_pixel_spacing_preferred_over_imager_pixel_spacing(tmp_path: Path, pixels16: np.ndarray) -> None:
    ds = make_dataset(pixels16, modality="DX", sop_class=DX_FOR_PRESENTATION, bits_stored=12)
    ds.PixelSpacing = ["0.2", "0.3"]
    ds.ImagerPixelSpacing = ["0.1", "0.1"]
    img = read_xray(save(ds, tmp_path / "spacing.dcm"))
    assert img.meta.pixel_spacing == pytest.approx((0.2, 0.3))


def test_rg_modality_accepted(tmp_path: Path, pixels8: np.ndarray) -> None:
    img = read_xray(save(make_dataset(pixels8, modality="RG"), tmp_path / "rg.dcm"))
    assert img.meta.modality == "RG"


def test_secondary_capture_with_modality_ot_accepted(tmp_path: Path, pixels8: np.ndarray) -> None:
    ds = make_dataset(pixels8, modality="OT", sop_class=SECONDARY_CAPTURE)
    img = read_xray(save(ds, tmp_path / "sc.dcm"))
    assert img.meta.modality == "OT"
    assert img.meta.dicom["SOPClassUID"] == SECONDARY_CAPTURE
    assert np.array_equal(img.array, pixels8.astype(np.float32))


def test_rgb_secondary_capture_folded_to_grey(tmp_path: Path) -> None:
    rgb = np.random.default_rng(3).integers(0, 256, size=(5, 7, 3)).astype(np.uint8)
    ds = make_dataset(rgb, modality="OT", sop_class=SECONDARY_CAPTURE)
    path = save(ds, tmp_path / "sc_rgb.dcm")
    assert np.array_equal(pydicom.dcmread(path).pixel_array, rgb)  # the file holds what we think

    img = read_xray(path)

    expected = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    assert img.array.shape == (5, 7)
    np.testing.assert_allclose(img.array, expected, atol=1e-3)
    assert img.meta.channels_folded == 3
    assert img.meta.photometric == "RGB"
    assert img.meta.inverted is False


def test_missing_modality_is_tolerated(tmp_path: Path, pixels8: np.ndarray) -> None:
    img = read_xray(save(make_dataset(pixels8, modality=None), tmp_path / "nomod.dcm"))
    assert img.meta.modality is None
    assert np.array_equal(img.array, pixels8.astype(np.float32))


# ---------------------------------------------------------------------------------------------------
# Transfer syntaxes and file layouts
# ---------------------------------------------------------------------------------------------------


def test_rle_lossless(tmp_path: Path, pixels16: np.ndarray) -> None:
    ds = make_dataset(pixels16, photometric="MONOCHROME2", bits_stored=12)
    ds.compress(uid.RLELossless)
    path = save(ds, tmp_path / "rle.dcm")
    reread = pydicom.dcmread(path)
    assert reread.file_meta.TransferSyntaxUID == uid.RLELossless
    assert reread.PixelData != pixels16.tobytes()  # really compressed

    img = read_xray(path)

    assert np.array_equal(img.array, pixels16.astype(np.float32))


def test_jpeg2000_lossless(tmp_path: Path) -> None:
    # OpenJPEG needs a few tens of pixels per side for its default decomposition levels.
    pixels = np.random.default_rng(2000).integers(0, 4096, size=(40, 56)).astype(np.uint16)
    codestream = openjpeg.encode(pixels, bits_stored=12, photometric_interpretation=0, use_mct=False)
    assert codestream[:2] == b"\xff\x4f"  # J2K codestream (SOC marker), as DICOM requires
    ds = make_dataset(pixels, bits_stored=12)
    ds.file_meta.TransferSyntaxUID = uid.JPEG2000Lossless
    ds.PixelData = encapsulate([codestream])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    path = save(ds, tmp_path / "j2k.dcm")

    img = read_xray(path)

    assert img.array.shape == (40, 56)
    assert np.array_equal(img.array, pixels.astype(np.float32))


def _raw_dataset(pixels: np.ndarray, *, implicit: bool) -> Dataset:
    """The dataset of :func:`make_dataset` as a plain Dataset, ready to be written without file meta."""
    source = make_dataset(pixels, bits_stored=12)
    ds = Dataset()
    ds.update(source)
    ds.is_little_endian = True
    ds.is_implicit_VR = implicit
    return ds


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit-vr", "explicit-vr"])
@pytest.mark.parametrize("name", ["raw.dcm", "rawfile"])
def test_dataset_without_file_meta_or_preamble(
    tmp_path: Path, pixels16: np.ndarray, implicit: bool, name: str
) -> None:
    path = tmp_path / name
    dcmwrite(path, _raw_dataset(pixels16, implicit=implicit), write_like_original=True)
    data = path.read_bytes()
    assert data[128:132] != b"DICM"
    assert data[:2] == b"\x08\x00"  # starts directly with group 0008

    img = read_xray(path)

    assert np.array_equal(img.array, pixels16.astype(np.float32))
    assert img.meta.dicom["SOPInstanceUID"] == SOP_UID


def test_dicom_with_misleading_suffix_is_found_by_content(tmp_path: Path, pixels8: np.ndarray) -> None:
    path = save(make_dataset(pixels8), tmp_path / "image.png")
    img = read_xray(path)
    assert img.meta.format is ImageFormat.DICOM
    assert np.array_equal(img.array, pixels8.astype(np.float32))


# ---------------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------------


def _expect_refusal(path: Path, *fragments: str, reader: Callable[..., object] = read_xray, **kwargs) -> str:
    with pytest.raises(ImageReadError) as info:
        reader(path, **kwargs)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert info.value.path == str(path)
    for fragment in fragments:
        assert fragment in info.value.reason, message
    return info.value.reason


def test_multi_frame_refused(tmp_path: Path, pixels8: np.ndarray) -> None:
    frames = np.stack([pixels8, pixels8[::-1], pixels8[:, ::-1]])
    ds = make_dataset(pixels8)
    ds.NumberOfFrames = 3
    ds.PixelData = frames.tobytes()
    path = save(ds, tmp_path / "multi.dcm")
    assert pydicom.dcmread(path).pixel_array.shape == (3, 6, 4)  # a valid multi-frame file

    _expect_refusal(path, "multi-frame", "3 frames")


def test_no_pixel_data_refused(tmp_path: Path, pixels8: np.ndarray) -> None:
    ds = make_dataset(pixels8)
    del ds.PixelData
    _expect_refusal(save(ds, tmp_path / "nopix.dcm"), "no pixel data")


def test_ct_modality_refused(tmp_path: Path, pixels16: np.ndarray) -> None:
    ds = make_dataset(pixels16, modality="CT", sop_class=CT_IMAGE_STORAGE, bits_stored=12)
    _expect_refusal(save(ds, tmp_path / "ct.dcm"), "unsupported modality", "CT")


def test_oversize_refused_before_decoding(
    tmp_path: Path, pixels16: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save(make_dataset(pixels16, bits_stored=12), tmp_path / "big.dcm")
    assert read_xray(path, max_pixels=35).array.shape == (5, 7)  # exactly at the limit: fine

    def refuse(self):
        raise AssertionError("pixel data decoded before the size check")

    monkeypatch.setattr(Dataset, "pixel_array", property(refuse))
    reason = _expect_refusal(path, "limit", max_pixels=34)
    assert "34" in reason and "35" in reason


def test_oversize_refused_by_read_dicom(tmp_path: Path, pixels16: np.ndarray) -> None:
    path = save(make_dataset(pixels16, bits_stored=12), tmp_path / "big.dcm")
    _expect_refusal(path, "limit", reader=read_dicom, max_pixels=10)


def test_pixel_data_too_short_refused(tmp_path: Path, pixels16: np.ndarray) -> None:
    ds = make_dataset(pixels16, bits_stored=12)
    ds.PixelData = pixels16.tobytes()[:20]  # 20 of the 70 bytes
    _expect_refusal(save(ds, tmp_path / "short.dcm"), "truncated", "20 of the 70 bytes")


def test_corrupt_compressed_pixel_data_refused(tmp_path: Path) -> None:
    pixels = np.random.default_rng(1).integers(0, 4096, size=(40, 56)).astype(np.uint16)
    codestream = openjpeg.encode(pixels, bits_stored=12, photometric_interpretation=0, use_mct=False)
    ds = make_dataset(pixels, bits_stored=12)
    ds.file_meta.TransferSyntaxUID = uid.JPEG2000Lossless
    ds.PixelData = encapsulate([codestream[: len(codestream) // 8]])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    path = save(ds, tmp_path / "j2k_cut.dcm")

    _expect_refusal(path, "cannot decode pixel data", "JPEG 2000")


def test_zero_rows_refused(tmp_path: Path, pixels8: np.ndarray) -> None:
    ds = make_dataset(pixels8)
    ds.Rows = 0
    _expect_refusal(save(ds, tmp_path / "zero.dcm"), "invalid image size")


def test_random_bytes_with_dcm_suffix_refused(tmp_path: Path) -> None:
    for seed in range(5):
        path = tmp_path / f"noise{seed}.dcm"
        path.write_bytes(np.random.default_rng(seed).integers(0, 256, 2048, dtype=np.uint8).tobytes())
        _expect_refusal(path, "not a recognised image file")


def test_random_bytes_after_dicm_preamble_refused(tmp_path: Path) -> None:
    path = tmp_path / "fake.dcm"
    noise = np.random.default_rng(11).integers(0, 256, 2048, dtype=np.uint8).tobytes()
    path.write_bytes(b"\0" * 128 + b"DICM" + noise)
    _expect_refusal(path)


def test_text_with_dcm_suffix_refused(tmp_path: Path) -> None:
    path = tmp_path / "report.dcm"
    path.write_text("Patient: none\nFinding: no fracture\n")
    _expect_refusal(path, "not a recognised image file")


def test_truncated_real_file_refused(tmp_path: Path, dicom_dir: Path) -> None:
    data = (dicom_dir / "CR-MONO1-10-chest.dcm").read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: len(data) - 50_000])
    _expect_refusal(path, "truncated DICOM file", "337,200 of the 387,200 bytes")


def test_truncated_real_jpeg_lossless_file_refused(tmp_path: Path, dicom_dir: Path) -> None:
    data = (dicom_dir / "CR-ModalitySequenceLUT.dcm").read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: len(data) // 2])
    _expect_refusal(path, "truncated")


@pytest.mark.parametrize("signed", [False, True])
def test_bits_above_bits_stored_are_masked_not_taken_as_value(tmp_path: Path, signed: bool) -> None:
    """BitsStored 12 in 16 allocated bits: junk in the 4 high bits (old overlay planes) is not value."""
    rng = np.random.default_rng(5)
    values = rng.integers(-2048 if signed else 0, 2048 if signed else 4096, size=(10, 7))
    stored = (values & 0x0FFF).astype(np.uint16)  # two's complement in 12 bits when signed
    junk = stored | (rng.integers(1, 16, size=values.shape).astype(np.uint16) << 12)
    ds = make_dataset(junk, bits_stored=12)
    if signed:
        ds.PixelRepresentation = 1
    image = read_dicom(save(ds, tmp_path / "junk.dcm"))
    np.testing.assert_array_equal(image.array, values.astype(np.float32))


@pytest.mark.parametrize("keep", [140, 300])
def test_dicom_cut_inside_its_header_is_called_truncated(tmp_path: Path, dicom_dir: Path, keep: int) -> None:
    data = (dicom_dir / "CR-ModalitySequenceLUT.dcm").read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[:keep])
    _expect_refusal(path, "truncated")
