"""Loss functions: the supervised segmentation loss, the adversarial (GAN) losses and their schedule.

Shapes: segmentation logits and labels are ``(B, 1, H, W)``; the critic's outputs are lists of
``(B, 1, h_s, w_s)`` patch-logit maps, one per scale (see :func:`fracseg.networks.discriminator_logits`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from enum import StrEnum

import torch
import torch.nn.functional as F  # noqa: N812
from monai.losses import DiceCELoss, DiceFocalLoss

logger = logging.getLogger(__name__)


class SegmentationLossKind(StrEnum):
    """Which MONAI compound loss :class:`SegmentationLoss` uses."""

    DICE_CE = "dice_ce"
    DICE_FOCAL = "dice_focal"


class AdversarialMode(StrEnum):
    """GAN objective of :class:`AdversarialLoss`."""

    LSGAN = "lsgan"
    HINGE = "hinge"
    BCE = "bce"


def _soft_erode(x: torch.Tensor) -> torch.Tensor:
    """Grey-level erosion with a 3x3 cross (min over the 4-neighbourhood)."""
    p1 = -F.max_pool2d(-x, (3, 1), (1, 1), (1, 0))
    p2 = -F.max_pool2d(-x, (1, 3), (1, 1), (0, 1))
    return torch.min(p1, p2)


def _soft_dilate(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, (3, 3), (1, 1), (1, 1))


def soft_skeleton(x: torch.Tensor, iterations: int = 10) -> torch.Tensor:
    """Differentiable morphological skeleton of a ``(B, C, H, W)`` probability map.

    Soft skeletonisation of Shit et al., "clDice", CVPR 2021: iterated soft erosion and opening
    by min/max pooling.
    """
    opened = _soft_dilate(_soft_erode(x))
    skel = F.relu(x - opened)
    for _ in range(iterations):
        x = _soft_erode(x)
        opened = _soft_dilate(_soft_erode(x))
        delta = F.relu(x - opened)
        skel = skel + F.relu(delta - skel * delta)
    return skel


def soft_cldice_loss(
    prob: torch.Tensor, target: torch.Tensor, iterations: int = 10, smooth: float = 1.0
) -> torch.Tensor:
    """Soft clDice loss ``1 - clDice`` between probabilities and a binary target, both ``(B, 1, H, W)``.

    Topology precision is the fraction of the predicted skeleton inside the target; topology sensitivity
    the fraction of the target skeleton inside the prediction. Suited to thin structures like fracture lines.
    """
    skel_pred = soft_skeleton(prob, iterations)
    skel_true = soft_skeleton(target, iterations)
    t_prec = ((skel_pred * target).sum() + smooth) / (skel_pred.sum() + smooth)
    t_sens = ((skel_true * prob).sum() + smooth) / (skel_true.sum() + smooth)
    return 1.0 - 2.0 * t_prec * t_sens / (t_prec + t_sens)


def image_score_loss(logits: torch.Tensor, target: torch.Tensor, top_k: int = 256) -> torch.Tensor:
    """Image-level (multiple-instance) loss: BCE of each image's top-k mean probability vs fracture presence.

    The image's score is the mean of its ``top_k`` highest pixel probabilities, as the shipped
    ``fracture_score`` is computed (:mod:`fracseg.inference.decision`); the label is 1 when the target
    has any fracture pixel. Dice and cross-entropy spread their gradient over all pixels; this term
    acts on the few pixels that decide the image-level answer: it lifts the strongest response of a
    fractured image that the pixel losses left near 0 and pushes down the strongest response on normal
    bone, which is what the image-level AUROC measures.

    Args:
        logits: ``(B, 1, H, W)`` logits.
        target: ``(B, 1, H, W)`` ground truth in {0, 1}.
        top_k: pixels averaged per image (capped at the image's pixel count).

    Returns:
        Scalar mean BCE over the batch, computed in fp32.
    """
    prob = torch.sigmoid(logits.float()).flatten(1)
    k = max(1, min(int(top_k), prob.shape[1]))
    score = prob.topk(k, dim=1).values.mean(dim=1)
    present = (target.flatten(1).amax(dim=1) > 0).to(score.dtype)
    eps = 1e-6
    return F.binary_cross_entropy(score.clamp(eps, 1.0 - eps), present)


class SegmentationLoss(torch.nn.Module):
    """Dice + cross-entropy (or Dice + focal) on logits with a sigmoid, plus an optional soft clDice term.

    Args:
        kind: ``"dice_ce"`` (MONAI ``DiceCELoss``) or ``"dice_focal"`` (MONAI ``DiceFocalLoss``).
        lambda_dice: weight of the Dice term.
        lambda_other: weight of the cross-entropy (or focal) term.
        cldice_weight: weight of the soft clDice term on ``sigmoid(logits)``; 0 disables it.
        cldice_iterations: skeletonisation iterations (about half the thickest structure's width in pixels).
        smooth: Dice smoothing added to numerator and denominator.
        batch: compute Dice over the whole batch rather than per image (stabler when many images have
            no fracture).
        image_weight: weight of :func:`image_score_loss` (image-level BCE on the top-k mean probability);
            0 disables it.
        image_top_k: pixels in that score.
    """

    def __init__(
        self,
        kind: SegmentationLossKind | str = SegmentationLossKind.DICE_CE,
        lambda_dice: float = 1.0,
        lambda_other: float = 1.0,
        cldice_weight: float = 0.0,
        cldice_iterations: int = 10,
        smooth: float = 1e-5,
        batch: bool = True,
        image_weight: float = 0.0,
        image_top_k: int = 256,
    ) -> None:
        super().__init__()
        self.kind = SegmentationLossKind(kind)
        common = {
            "sigmoid": True,
            "smooth_nr": smooth,
            "smooth_dr": smooth,
            "batch": batch,
            "lambda_dice": lambda_dice,
        }
        self.base: torch.nn.Module
        if self.kind is SegmentationLossKind.DICE_CE:
            self.base = DiceCELoss(lambda_ce=lambda_other, **common)
        else:
            self.base = DiceFocalLoss(lambda_focal=lambda_other, **common)
        self.cldice_weight = cldice_weight
        self.cldice_iterations = cldice_iterations
        self.image_weight = float(image_weight)
        self.image_top_k = int(image_top_k)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar loss of ``(B, 1, H, W)`` logits against a ``(B, 1, H, W)`` target in {0, 1}."""
        target = target.to(logits.dtype)
        loss = self.base(logits, target)
        if self.cldice_weight > 0:
            loss = loss + self.cldice_weight * soft_cldice_loss(
                torch.sigmoid(logits), target, self.cldice_iterations
            )
        if self.image_weight > 0:
            loss = loss + self.image_weight * image_score_loss(logits, target, self.image_top_k)
        return loss


class AdversarialLoss(torch.nn.Module):
    """GAN objectives over lists of critic patch maps (one per scale); every value is averaged over scales.

    Per scale, with ``r`` the critic's logits on real pairs and ``f`` on generated pairs:

    - ``"lsgan"`` (least squares, pix2pix convention): D = 0.5 * (mean((r - 1)^2) + mean(f^2)),
      G = mean((f - 1)^2). Decision threshold 0.5.
    - ``"hinge"``: D = mean(relu(1 - r)) + mean(relu(1 + f)), G = -mean(f). Decision threshold 0.
    - ``"bce"`` (non-saturating): D = 0.5 * (BCE(r, 1) + BCE(f, 0)), G = BCE(f, 1), on logits.
      Decision threshold 0.

    Args:
        mode: ``"lsgan"``, ``"hinge"`` or ``"bce"``.
    """

    def __init__(self, mode: AdversarialMode | str = AdversarialMode.LSGAN) -> None:
        super().__init__()
        self.mode = AdversarialMode(mode)

    @property
    def decision_threshold(self) -> float:
        """Critic output above which a patch counts as "real" (0.5 for LSGAN's 0/1 targets, else 0)."""
        return 0.5 if self.mode is AdversarialMode.LSGAN else 0.0

    def _real_term(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode is AdversarialMode.LSGAN:
            return ((x - 1.0) ** 2).mean()
        if self.mode is AdversarialMode.HINGE:
            return F.relu(1.0 - x).mean()
        return F.binary_cross_entropy_with_logits(x, torch.ones_like(x))

    def _fake_term(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode is AdversarialMode.LSGAN:
            return (x**2).mean()
        if self.mode is AdversarialMode.HINGE:
            return F.relu(1.0 + x).mean()
        return F.binary_cross_entropy_with_logits(x, torch.zeros_like(x))

    def generator_loss(self, fake_logits: Sequence[torch.Tensor]) -> torch.Tensor:
        """Generator loss: make the critic score generated pairs as real."""
        terms = []
        for f in fake_logits:
            terms.append(-f.mean() if self.mode is AdversarialMode.HINGE else self._real_term(f))
        return torch.stack(terms).mean()

    def discriminator_loss(
        self, real_logits: Sequence[torch.Tensor], fake_logits: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """Critic loss: score real pairs as real and generated pairs as fake."""
        if len(real_logits) != len(fake_logits):
            raise ValueError(f"{len(real_logits)} real vs {len(fake_logits)} fake scales.")
        scale = 1.0 if self.mode is AdversarialMode.HINGE else 0.5
        pairs = zip(real_logits, fake_logits, strict=True)
        terms = [scale * (self._real_term(r) + self._fake_term(f)) for r, f in pairs]
        return torch.stack(terms).mean()

    @torch.no_grad()
    def discriminator_accuracy(
        self, real_logits: Sequence[torch.Tensor], fake_logits: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """Balanced patch accuracy of the critic, in [0, 1], as a 0-dim tensor on the logits' device.

        Kept as a tensor so a training step never waits for the GPU; it becomes a number only when a
        handler logs it.

        The mean of (fraction of real patches scored above :attr:`decision_threshold`) and (fraction of
        fake patches scored below it), pooled over all scales' patches. 0.5 is chance; near 1 the critic
        wins outright (its gradient to the generator may be vanishing), near 0 it is fooled.
        """
        t = self.decision_threshold
        real = torch.cat([r.detach().flatten() for r in real_logits])
        fake = torch.cat([f.detach().flatten() for f in fake_logits])
        return 0.5 * ((real > t).float().mean() + (fake < t).float().mean())


def adversarial_weight_at(epoch: int, warmup_epochs: int, ramp_epochs: int, weight: float) -> float:
    """Adversarial loss weight for an epoch: 0 during warm-up, then a linear ramp, then ``weight``.

    Args:
        epoch: 1-based epoch (Ignite's ``engine.state.epoch`` while an epoch runs).
        warmup_epochs: epochs ``1..warmup_epochs`` train with the segmentation loss only (weight 0).
        ramp_epochs: the following ``ramp_epochs`` epochs ramp linearly, reaching ``weight`` on the last;
            epoch ``warmup_epochs + k`` gets ``weight * k / ramp_epochs``. 0 jumps straight to ``weight``.
        weight: the final adversarial weight.

    Returns:
        The weight, in ``[0, weight]``.
    """
    if warmup_epochs < 0 or ramp_epochs < 0:
        raise ValueError("warmup_epochs and ramp_epochs must be non-negative.")
    k = epoch - warmup_epochs
    if k <= 0:
        return 0.0
    if ramp_epochs == 0 or k >= ramp_epochs:
        return float(weight)
    return float(weight) * k / ramp_epochs
