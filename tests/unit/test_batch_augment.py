"""Batch augmentation of the GPU recipe: identity when off, the same geometry for image and label,
MONAI's contrast formula, deterministic per seed."""

from __future__ import annotations

import pytest
import torch
from monai.transforms import AdjustContrast

from fracseg.transforms import AugmentingPrepareBatch, BatchAugment

OFF = {"flip_prob": 0.0, "affine_prob": 0.0, "contrast_prob": 0.0, "noise_prob": 0.0}


def _batch(b: int = 6, h: int = 48, w: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(b, 1, h, w, generator=g)
    label = torch.zeros(b, 1, h, w)
    label[:, :, 10:30, 8:20] = 1.0
    return image, label


def test_all_off_is_the_identity() -> None:
    image, label = _batch()
    out_image, out_label = BatchAugment(**OFF)(image, label)
    assert torch.equal(out_image, image) and torch.equal(out_label, label)


def test_flip_mirrors_image_and_label_together() -> None:
    image, label = _batch()
    out_image, out_label = BatchAugment(**{**OFF, "flip_prob": 1.0})(image, label)
    assert torch.equal(out_image, image.flip(-1)) and torch.equal(out_label, label.flip(-1))


def test_affine_with_zero_ranges_is_the_identity() -> None:
    image, label = _batch()
    augment = BatchAugment(**{**OFF, "affine_prob": 1.0, "rotate_range": 0.0, "scale_range": 0.0})
    out_image, out_label = augment(image, label)
    torch.testing.assert_close(out_image, image, atol=1e-5, rtol=0)
    assert torch.equal(out_label, label)


def test_affine_moves_image_and_label_with_one_grid() -> None:
    _, label = _batch(b=16, h=64, w=64)
    augment = BatchAugment(**{**OFF, "affine_prob": 1.0, "rotate_range": 0.5, "scale_range": 0.2})
    out_image, out_label = augment(label.clone(), label)  # the image is the mask itself
    assert set(out_label.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(out_label, label)  # something moved
    agree = ((out_image > 0.5) == (out_label > 0.5)).float().mean()
    assert agree > 0.99
    # rotation and scaling about the centre keep the blob near where it was, at about its area
    area = out_label.sum(dim=(1, 2, 3)) / label.sum(dim=(1, 2, 3))
    assert bool(((area > 0.6) & (area < 1.6)).all())


def test_contrast_follows_monai_adjust_contrast() -> None:
    image, label = _batch()
    augment = BatchAugment(**{**OFF, "contrast_prob": 1.0, "gamma": (2.0, 2.0)})
    out_image, _ = augment(image, label)
    expected = torch.stack([torch.as_tensor(AdjustContrast(gamma=2.0)(x)) for x in image])
    torch.testing.assert_close(out_image, expected, atol=1e-5, rtol=1e-5)


def test_noise_is_bounded_by_its_std() -> None:
    image, label = _batch(b=8, h=128, w=128)
    out_image, out_label = BatchAugment(**{**OFF, "noise_prob": 1.0, "noise_std": 0.02})(image, label)
    residual_std = (out_image - image).std(dim=(1, 2, 3))
    assert bool((residual_std > 0).all()) and bool((residual_std < 0.025).all())
    assert torch.equal(out_label, label)


def test_same_seed_same_result_and_reseeding_repeats() -> None:
    image, label = _batch()
    a = BatchAugment(seed=3)
    first = a(image, label)
    second = a(image, label)
    assert not torch.equal(first[0], second[0])  # the stream moves on
    a.set_random_state(3)
    again = a(image, label)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    other = BatchAugment(seed=4)(image, label)
    assert not torch.equal(first[0], other[0])


def test_prepare_batch_moves_then_augments() -> None:
    image, label = _batch()
    prepare = AugmentingPrepareBatch(BatchAugment(**{**OFF, "flip_prob": 1.0}))
    out_image, out_label = prepare({"image": image, "label": label}, torch.device("cpu"))
    assert torch.equal(out_image, image.flip(-1)) and torch.equal(out_label, label.flip(-1))


def test_rejects_non_batched_input() -> None:
    with pytest.raises(ValueError, match="B, C, H, W"):
        BatchAugment()(torch.zeros(1, 8, 8))
