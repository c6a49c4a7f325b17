"""Intensity normalisation, MONAI dictionary transforms and the shared pre-processing pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Invertd
from PIL import Image

from fracseg.errors import ImageReadError, find_fracseg_error
from fracseg.transforms import (
    LoadMaskd,
    LoadXrayd,
    NormalizeXrayd,
    loading_transforms,
    normalize_intensity,
    preprocessing,
)


def test_normalize_maps_percentiles_to_unit_range_and_clips() -> None:
    rng = np.random.default_rng(1)
    image = rng.normal(1000, 200, size=(64, 80)).astype(np.float32)
    out = normalize_intensity(image)
    lo, hi = np.percentile(image, [0.5, 99.5])
    expected = np.clip((image - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1.0


def test_normalize_is_invariant_to_affine_intensity_changes() -> None:
    """8-bit JPEG and 12-bit DICOM of the same content normalise identically."""
    rng = np.random.default_rng(2)
    image = rng.uniform(0, 255, size=(50, 40)).astype(np.float32)
    np.testing.assert_allclose(normalize_intensity(image), normalize_intensity(image * 16 + 100), atol=1e-5)


def test_normalize_torch_keeps_metatensor_and_handles_constant_images() -> None:
    t = MetaTensor(torch.arange(100, dtype=torch.float32).reshape(1, 10, 10), meta={"source": "x"})
    out = normalize_intensity(t)
    assert isinstance(out, MetaTensor) and out.meta["source"] == "x"
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0
    np.testing.assert_array_equal(normalize_intensity(np.full((4, 4), 7.0)), np.zeros((4, 4)))


def test_normalize_large_image_uses_subsampled_percentiles_close_to_exact() -> None:
    rng = np.random.default_rng(3)
    image = rng.gamma(2.0, 100.0, size=(1500, 1400)).astype(np.float32)
    out = normalize_intensity(image)
    lo, hi = np.percentile(image, [0.5, 99.5])
    exact = np.clip((image - lo) / (hi - lo), 0, 1)
    assert np.abs(out - exact).max() < 0.02


def test_load_xrayd_gives_channel_first_metatensor_with_reader_metadata(shared_data) -> None:
    path = shared_data / "fracatlas/images/Fractured/IMG0002628.jpg"
    d = LoadXrayd(keys="image")({"image": str(path), "other": 1})
    img = d["image"]
    assert isinstance(img, MetaTensor) and img.shape == (1, 373, 454) and img.dtype == torch.float32
    assert img.meta["exif_orientation"] == 8 and img.meta["filename_or_obj"] == str(path)
    assert d["other"] == 1


def test_load_maskd_binarises(tmp_path) -> None:
    mask = np.zeros((20, 30), np.uint8)
    mask[2:5, 3:9] = 1
    Image.fromarray(mask).save(tmp_path / "m.png")
    out = LoadMaskd(keys="label")({"label": str(tmp_path / "m.png")})["label"]
    assert out.shape == (1, 20, 30) and out.sum() == 18 and set(out.unique().tolist()) == {0.0, 1.0}


def test_normalize_xrayd_matches_function() -> None:
    x = np.random.default_rng(4).uniform(0, 4095, size=(1, 30, 30)).astype(np.float32)
    out = NormalizeXrayd(keys="image")({"image": x})["image"]
    np.testing.assert_allclose(out, normalize_intensity(x))


@pytest.mark.parametrize("size", [64, 128])
def test_preprocessing_letterboxes_and_inverts_to_original_size(shared_data, size) -> None:
    path = shared_data / "fracatlas/images/Fractured/IMG0002628.jpg"  # displayed 373 x 454
    pre = preprocessing(spatial_size=size)
    d = pre({"image": str(path)})
    img = d["image"]
    assert img.shape == (1, size, size)
    assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0
    # Longest side (width 454) fills the square; rows are padded symmetrically with zeros.
    rows_with_content = torch.nonzero(img[0].abs().sum(dim=1) > 0).flatten()
    expected_rows = round(373 * size / 454)
    assert abs(len(rows_with_content) - expected_rows) <= 1
    top_pad = int(rows_with_content.min())
    bottom_pad = size - 1 - int(rows_with_content.max())
    assert abs(top_pad - bottom_pad) <= 1
    d["pred"] = img.clone()
    restored = Invertd(keys="pred", transform=pre, orig_keys="image")(d)["pred"]
    assert restored.shape == (1, 373, 454)


def test_preprocessing_label_stays_aligned_with_image(tmp_path) -> None:
    image = np.zeros((90, 60), np.uint8)
    image[30:50, 20:40] = 255
    Image.fromarray(image).save(tmp_path / "x.png")
    Image.fromarray((image > 0).astype(np.uint8)).save(tmp_path / "y.png")
    d = preprocessing(label_key="label", spatial_size=45)(
        {"image": str(tmp_path / "x.png"), "label": str(tmp_path / "y.png")}
    )
    img, lab = d["image"][0], d["label"][0]
    assert lab.shape == img.shape == (45, 45)
    assert set(lab.unique().tolist()) == {0.0, 1.0}
    inside = lab > 0
    assert float(img[inside].mean()) > 0.9 and float(img[~inside].mean()) < 0.1


def test_training_and_inference_share_the_loading_chain() -> None:
    names = [type(t).__name__ for t in loading_transforms("image", "label")]
    assert names == ["LoadXrayd", "LoadMaskd", "NormalizeXrayd"]
    assert [type(t).__name__ for t in preprocessing().transforms][:2] == ["LoadXrayd", "NormalizeXrayd"]


def test_monai_wrapped_reader_errors_are_recoverable(tmp_path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(RuntimeError) as info:
        preprocessing()({"image": str(bad)})
    err = find_fracseg_error(info.value)
    assert isinstance(err, ImageReadError) and err.path == str(bad) and "bad.jpg" in str(err)


def test_jpeg_and_dicom_metadata_collate_into_one_batch(shared_data) -> None:
    from monai.data import list_data_collate

    pre = preprocessing(spatial_size=32)
    files = [
        shared_data / "fracatlas/images/Fractured/IMG0002628.jpg",
        shared_data / "dicom/CR-MONO1-10-chest.dcm",
        shared_data / "dicom/CR-ModalitySequenceLUT.dcm",
    ]
    batch = list_data_collate([pre({"image": str(f)}) for f in files])
    assert batch["image"].shape == (3, 1, 32, 32)
    assert batch["image"].meta["modality"] == ["", "CR", "CR"]
    row_spacing = batch["image"].meta["pixel_spacing"][0]
    assert torch.isnan(row_spacing[0]) and float(row_spacing[2]) == pytest.approx(0.15)
