"""Segmentation and adversarial losses, and the adversarial weight schedule."""

from __future__ import annotations

import math

import pytest
import torch

from fracseg.losses import AdversarialLoss, SegmentationLoss, adversarial_weight_at

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


def test_segmentation_loss_prefers_correct_logits() -> None:
    label = torch.zeros(2, 1, 16, 16)
    label[:, :, 4:12, 6:9] = 1
    loss = SegmentationLoss()
    good = loss(label * 20 - 10, label)
    bad = loss(10 - label * 20, label)
    assert good.ndim == 0 and good.item() < 0.05 < bad.item()
