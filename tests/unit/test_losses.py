"""Segmentation and adversarial losses, and the adversarial weight schedule."""

from __future__ import annotations

import math

import pytest
import torch

from fracseg.losses import (
    AdversarialLoss,
    SegmentationLoss,
    adversarial_weight_at,
    image_score_loss,
    soft_cldice_loss,
)

REAL = [torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0]])]
FAKE = [torch.tensor([[-1.0, 1.0]]), torch.tensor([[0.0]])]


def _bce(x: float, target: float) -> float:
    p = 1 / (1 + math.exp(-x))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def test_lsgan_values() -> None:
    loss = AdversarialLoss("lsgan")
    # scale 0: 0.5 * (mean(1, 1) + mean(1, 1)) = 1; scale 1: 0.5 * (0 + 0) = 0 -> mean 0.5
    assert loss.discriminator_loss(REAL, FAKE).item() == pytest.approx(0.5)
    # scale 0: mean(4, 0) = 2; scale 1: 1 -> mean 1.5
    assert loss.generator_loss(FAKE).item() == pytest.approx(1.5)


def test_hinge_values() -> None:
    loss = AdversarialLoss("hinge")
    # scale 0: mean(relu(-1), relu(1)) + mean(relu(0), relu(2)) = 0.5 + 1 = 1.5; scale 1: 0 + 1 = 1
    assert loss.discriminator_loss(REAL, FAKE).item() == pytest.approx(1.25)
    # -mean(fake): scale 0: 0, scale 1: 0
    assert loss.generator_loss(FAKE).item() == pytest.approx(0.0)
    assert loss.generator_loss([torch.tensor([3.0])]).item() == pytest.approx(-3.0)


def test_bce_values() -> None:
    loss = AdversarialLoss("bce")
    d0 = 0.5 * ((_bce(2, 1) + _bce(0, 1)) / 2 + (_bce(-1, 0) + _bce(1, 0)) / 2)
    d1 = 0.5 * (_bce(1, 1) + _bce(0, 0))
    assert loss.discriminator_loss(REAL, FAKE).item() == pytest.approx((d0 + d1) / 2, rel=1e-5)
    g = ((_bce(-1, 1) + _bce(1, 1)) / 2 + _bce(0, 1)) / 2
    assert loss.generator_loss(FAKE).item() == pytest.approx(g, rel=1e-5)


def test_discriminator_accuracy_uses_the_mode_threshold() -> None:
    real = [torch.tensor([0.6, 0.4, 2.0, -1.0])]
    fake = [torch.tensor([0.3, -0.2, 0.7, 0.0])]
    # hinge/bce threshold 0: real > 0 -> 3/4, fake < 0 -> 1/4
    assert float(AdversarialLoss("hinge").discriminator_accuracy(real, fake)) == pytest.approx(0.5)
    # lsgan threshold 0.5: real > 0.5 -> 2/4, fake < 0.5 -> 3/4
    assert float(AdversarialLoss("lsgan").discriminator_accuracy(real, fake)) == pytest.approx(0.625)


def test_adversarial_loss_rejects_unknown_mode_and_mismatched_scales() -> None:
    with pytest.raises(ValueError):
        AdversarialLoss("wgan")
    with pytest.raises(ValueError):
        AdversarialLoss().discriminator_loss(REAL, FAKE[:1])


def test_adversarial_weight_schedule() -> None:
    weights = [adversarial_weight_at(e, warmup_epochs=2, ramp_epochs=4, weight=0.2) for e in range(1, 9)]
    assert weights == pytest.approx([0.0, 0.0, 0.05, 0.1, 0.15, 0.2, 0.2, 0.2])
    assert adversarial_weight_at(1, 0, 0, 0.3) == 0.3
    assert adversarial_weight_at(3, 3, 0, 0.3) == 0.0
    assert adversarial_weight_at(4, 3, 0, 0.3) == 0.3
    with pytest.raises(ValueError):
        adversarial_weight_at(1, -1, 0, 0.3)


@pytest.mark.parametrize("kind", ["dice_ce", "dice_focal"])
def test_segmentation_loss_prefers_correct_logits(kind: str) -> None:
    label = torch.zeros(2, 1, 16, 16)
    label[:, :, 4:12, 6:9] = 1
    loss = SegmentationLoss(kind, cldice_weight=0.5, cldice_iterations=3)
    good = loss(label * 20 - 10, label)
    bad = loss(10 - label * 20, label)
    assert good.ndim == 0 and good.item() < 0.05 < bad.item()


def test_soft_cldice_is_zero_for_a_perfect_line_and_high_for_a_miss() -> None:
    target = torch.zeros(1, 1, 16, 16)
    target[..., 8, 2:14] = 1
    assert soft_cldice_loss(target, target, iterations=3).item() == pytest.approx(0.0, abs=1e-6)
    shifted = torch.roll(target, 4, dims=2)
    assert soft_cldice_loss(shifted, target, iterations=3).item() > 0.9


def test_image_score_loss_scores_the_top_pixels_against_fracture_presence() -> None:
    """The image term is BCE of each image's mean top-k probability against "has a fracture pixel"."""
    logits = torch.full((2, 1, 8, 8), -6.0)
    logits[0, 0, :2, :2] = 6.0  # fractured image: 4 confident pixels; image 1 is normal bone, all low
    target = torch.zeros(2, 1, 8, 8)
    target[0, 0, 0, 0] = 1.0
    hi, lo = torch.sigmoid(torch.tensor(6.0)).item(), torch.sigmoid(torch.tensor(-6.0)).item()
    expected = 0.5 * (-math.log(hi) - math.log(1 - lo))
    assert image_score_loss(logits, target, top_k=4).item() == pytest.approx(expected, rel=1e-5)
    # the same maps with the labels swapped are a confident mistake on both images
    assert image_score_loss(logits, target.flip(0), top_k=4).item() > 5.0
    # k larger than the image is capped: the score becomes the mean of all 64 pixels
    assert image_score_loss(logits, target, top_k=10_000).item() > image_score_loss(logits, target, 4).item()


def test_image_score_loss_moves_only_the_top_pixels() -> None:
    logits = torch.linspace(-3.0, 3.0, 64).reshape(1, 1, 8, 8).requires_grad_(True)
    image_score_loss(logits, torch.zeros(1, 1, 8, 8), top_k=5).backward()
    moved = logits.grad.flatten().nonzero().flatten().tolist()
    assert moved == [59, 60, 61, 62, 63]  # the five highest logits, pushed down on a normal image
    assert (logits.grad.flatten()[moved] > 0).all()


def test_segmentation_loss_adds_the_weighted_image_term() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 1, 16, 16)
    target = (torch.rand(3, 1, 16, 16) > 0.9).float()
    target[2] = 0.0
    base = SegmentationLoss()(logits, target)
    combined = SegmentationLoss(image_weight=0.5, image_top_k=8)(logits, target)
    term = image_score_loss(logits, target, 8).item()
    assert combined.item() == pytest.approx(base.item() + 0.5 * term, rel=1e-5)
