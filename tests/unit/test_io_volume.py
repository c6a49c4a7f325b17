"""NIfTI/NRRD reading (2D images and single-slice volumes) through :func:`fracseg.io.read_xray`."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813

from fracseg.errors import ImageReadError
from fracseg.io import ImageFormat, read_volume, read_xray

# sitk spacing is (x, y) = (column, row); the reader reports (row, column).
SPACING_XY = (0.25, 0.5)


@pytest.fixture(scope="module")
def image_5x7() -> np.ndarray:
    """Non-square (H=5, W=7) with all-distinct values: any transpose or flip shows."""
    return (np.arange(35, dtype=np.int16).reshape(5, 7) * 3 - 40).astype(np.int16)


def write_sitk(array: np.ndarray, path: Path, spacing: tuple[float, ...] | None = None) -> Path:
    image = sitk.GetImageFromArray(array)
    if spacing is not None:
        image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("image.nii", ImageFormat.NIFTI),
        ("image.nii.gz", ImageFormat.NIFTI),
        ("image.nrrd", ImageFormat.NRRD),
        ("image.nhdr", ImageFormat.NRRD),
    ],
)
def test_2d_image_round_trip(tmp_path: Path, image_5x7: np.ndarray, name: str, fmt: ImageFormat) -> None:
    path = write_sitk(image_5x7, tmp_path / name, SPACING_XY)
    written = sitk.ReadImage(str(path))
    assert written.GetSize() == (7, 5)  # ITK size is (W, H)

    img = read_xray(path)

    assert img.array.dtype == np.float32
    assert img.array.shape == (5, 7)
    assert np.array_equal(img.array, image_5x7.astype(np.float32))
    assert img.meta.format is fmt
    assert img.meta.original_size == (5, 7)
    assert img.meta.pixel_spacing == pytest.approx((SPACING_XY[1], SPACING_XY[0]))
    assert img.meta.transposed is False
    assert img.meta.channels_folded == 1
    assert img.meta.bits_stored == 16
    assert img.meta.source == str(path)


def test_float_nifti_values_preserved(tmp_path: Path) -> None:
    values = np.random.default_rng(21).normal(size=(4, 9)).astype(np.float32)
    img = read_xray(write_sitk(values, tmp_path / "float.nii.gz"))
    assert np.array_equal(img.array, values)
    assert img.meta.bits_stored == 32


@pytest.mark.parametrize("name", ["slice.nii.gz", "slice.nrrd"])
def test_single_slice_volume_like_monai_label(tmp_path: Path, image_5x7: np.ndarray, name: str) -> None:
    # MONAI Label's DICOMweb datastore writes a single-frame X-ray as ITK size (W, H, 1).
    path = write_sitk(image_5x7[np.newaxis], tmp_path / name, (*SPACING_XY, 2.0))
    assert sitk.ReadImage(str(path)).GetSize() == (7, 5, 1)

    img = read_xray(path)

    assert img.array.shape == (5, 7)
    assert np.array_equal(img.array, image_5x7.astype(np.float32))
    assert img.meta.pixel_spacing == pytest.approx((SPACING_XY[1], SPACING_XY[0]))


def test_nibabel_single_slice_volume(tmp_path: Path, image_5x7: np.ndarray) -> None:
    # nibabel indexes voxels data[x, y, z]: the image pixel at row y, column x is data[x, y, 0].
    data = np.zeros((7, 5, 1), dtype=np.int16)
    for y in range(5):
        for x in range(7):
            data[x, y, 0] = image_5x7[y, x]
    affine = np.diag([0.3, 0.6, 1.0, 1.0])
    path = tmp_path / "nib.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(path))

    img = read_xray(path)

    assert img.array.shape == (5, 7)
    assert np.array_equal(img.array, image_5x7.astype(np.float32))
    assert img.meta.pixel_spacing == pytest.approx((0.6, 0.3))  # (row = y, column = x)


def test_nibabel_2d_image(tmp_path: Path, image_5x7: np.ndarray) -> None:
    path = tmp_path / "nib2d.nii"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(image_5x7.T), np.eye(4)), str(path))
    img = read_xray(path)
    assert np.array_equal(img.array, image_5x7.astype(np.float32))


def test_rgb_vector_image_folded(tmp_path: Path) -> None:
    rgb = np.random.default_rng(22).integers(0, 256, size=(5, 7, 3)).astype(np.uint8)
    image = sitk.GetImageFromArray(rgb, isVector=True)
    assert image.GetNumberOfComponentsPerPixel() == 3 and image.GetSize() == (7, 5)
    path = tmp_path / "rgb.nrrd"
    sitk.WriteImage(image, str(path))

    img = read_xray(path)

    expected = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    assert img.array.shape == (5, 7)
    np.testing.assert_allclose(img.array, expected, atol=1e-3)
    assert img.meta.channels_folded == 3


def test_volume_with_three_slices_refused(tmp_path: Path, image_5x7: np.ndarray) -> None:
    path = write_sitk(np.stack([image_5x7] * 3), tmp_path / "stack.nii.gz")
    assert sitk.ReadImage(str(path)).GetSize() == (7, 5, 3)
    with pytest.raises(ImageReadError) as info:
        read_xray(path)
    assert str(path) in str(info.value)
    assert "(7, 5, 3)" in info.value.reason
    assert "not a single 2D image" in info.value.reason


def test_nibabel_volume_with_three_slices_refused(tmp_path: Path) -> None:
    path = tmp_path / "stack_nib.nii"
    nib.save(nib.Nifti1Image(np.zeros((7, 5, 3), dtype=np.int16), np.eye(4)), str(path))
    with pytest.raises(ImageReadError, match="not a single 2D image"):
        read_xray(path)


def test_image_outside_first_two_axes_refused(tmp_path: Path, image_5x7: np.ndarray) -> None:
    path = write_sitk(image_5x7[:, np.newaxis, :], tmp_path / "sideways.nrrd")  # ITK size (7, 1, 5)
    with pytest.raises(ImageReadError) as info:
        read_xray(path)
    assert "outside the first two axes" in info.value.reason


def test_oversize_volume_refused_before_decoding(
    tmp_path: Path, image_5x7: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_sitk(image_5x7, tmp_path / "big.nii")
    assert read_volume(path, max_pixels=35).array.shape == (5, 7)

    def refuse(self):
        raise AssertionError("voxels decoded before the size check")

    monkeypatch.setattr(sitk.ImageFileReader, "Execute", refuse)
    with pytest.raises(ImageReadError) as info:
        read_xray(path, max_pixels=34)
    assert "limit" in info.value.reason and "34" in info.value.reason


@pytest.mark.parametrize("name", ["garbage.nii", "garbage.nii.gz", "garbage.nrrd"])
def test_garbage_volume_files_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"definitely not a medical image " * 20)
    with pytest.raises(ImageReadError) as info:
        read_xray(path)
    assert str(info.value).startswith(str(path))


@pytest.mark.parametrize("name", ["cut.nii", "cut.nii.gz", "cut.nrrd"])
@pytest.mark.parametrize("keep", [0.5, 0.1])
def test_truncated_file_refused(tmp_path: Path, name: str, keep: float) -> None:
    # ITK zero-fills the missing voxels of a truncated NIfTI file without an error; the reader must
    # refuse it (as it refuses truncated JPEG/PNG) rather than return a partly black image.
    values = np.random.default_rng(23).integers(1, 1000, size=(64, 64)).astype(np.int16)
    whole = write_sitk(values, tmp_path / name.replace("cut", "whole"))
    assert np.array_equal(read_xray(whole).array, values.astype(np.float32))
    data = whole.read_bytes()
    cut = tmp_path / name
    cut.write_bytes(data[: max(400, int(len(data) * keep))])

    with pytest.raises(ImageReadError) as info:
        read_xray(cut)

    assert str(info.value).startswith(str(cut))
    if name.endswith((".nii", ".nii.gz")):
        assert "truncated" in info.value.reason


def test_nifti_with_trailing_bytes_is_accepted(tmp_path: Path, image_5x7: np.ndarray) -> None:
    path = write_sitk(image_5x7, tmp_path / "padded.nii")
    path.write_bytes(path.read_bytes() + b"\0" * 16)
    assert np.array_equal(read_xray(path).array, image_5x7.astype(np.float32))


def test_big_endian_nifti_read_and_truncation_detected(tmp_path: Path, image_5x7: np.ndarray) -> None:
    data = np.ascontiguousarray(image_5x7.T[:, :, np.newaxis]).astype(">i2")
    header = nib.Nifti1Header(endianness=">")
    path = tmp_path / "big_endian.nii"
    nib.save(nib.Nifti1Image(data, np.eye(4), header=header), str(path))
    raw = path.read_bytes()
    assert raw[:4] == b"\x00\x00\x01\x5c"  # sizeof_hdr 348, big endian

    assert np.array_equal(read_xray(path).array, image_5x7.astype(np.float32))

    cut = tmp_path / "big_endian_cut.nii"
    cut.write_bytes(raw[:-10])
    with pytest.raises(ImageReadError, match="truncated"):
        read_xray(cut)
