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
from monai.losses import DiceCELoss

logger = logging.getLogger(__name__)


class AdversarialMode(StrEnum):
    """GAN objective of :class:`AdversarialLoss`."""

    LSGAN = "lsgan"
    HINGE = "hinge"
    BCE = "bce"


class SegmentationLoss(torch.nn.Module):
    """Dice + cross-entropy on logits with a sigmoid (MONAI ``DiceCELoss``), Dice over the whole batch.

    Batch Dice is stabler than per-image Dice when many images of a batch have no fracture pixel.
    (clDice, focal and an image-level multiple-instance term were options here until 0.11.1; none was
    used by a shipped recipe, and the image-level term did not pay across the five folds:
    ``bundle/docs/studies/0.11.1-cv-image-level-term.md``.)

    Args:
        lambda_dice: weight of the Dice term.
        lambda_ce: weight of the cross-entropy term.
        smooth: Dice smoothing added to numerator and denominator.
        batch: compute Dice over the whole batch rather than per image.
    """

    def __init__(
        self, lambda_dice: float = 1.0, lambda_ce: float = 1.0, smooth: float = 1e-5, batch: bool = True
    ) -> None:
        super().__init__()
        self.base = DiceCELoss(
            sigmoid=True,
            smooth_nr=smooth,
            smooth_dr=smooth,
            batch=batch,
            lambda_dice=lambda_dice,
            lambda_ce=lambda_ce,
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar loss of ``(B, 1, H, W)`` logits against a ``(B, 1, H, W)`` target in {0, 1}."""
        return self.base(logits, target.to(logits.dtype))


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
