"""Training augmentation of a whole batch on its device (the GPU recipe).

The per-sample MONAI random transforms of ``train.json`` cost about 7 ms per 512² image in Python and
kernel launches whatever the device; with the dataset cached on a GPU that caps training near 150
images/s. :class:`BatchAugment` draws the same kinds of random parameters per sample but applies them
to the batch in a handful of tensor operations. Its distributions follow the MONAI transforms it
replaces (``RandFlipd``, ``RandAffined``, ``RandAdjustContrastd``, ``RandGaussianNoised`` with the
bundle's settings). It is training-only: the deterministic pre-processing shared with inference is not
touched.

:class:`AugmentingPrepareBatch` plugs it into a MONAI engine as its ``prepare_batch``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional alias)
from monai.engines.utils import default_prepare_batch

#: MONAI ``AdjustContrast``'s epsilon.
_CONTRAST_EPS = 1e-7


class BatchAugment:
    """Random per-sample flip, rotation + scaling, gamma contrast and Gaussian noise of a batch.

    Args:
        flip_prob: probability of a horizontal flip (``RandFlipd(spatial_axis=1)``).
        affine_prob: probability of a rotation by U(-rotate_range, rotate_range) radians and a scaling by
            1 + U(-scale_range, scale_range) per axis about the image centre (``RandAffined``); bilinear
            for the image, nearest for the label, zeros outside.
        rotate_range: see ``affine_prob``.
        scale_range: see ``affine_prob``.
        contrast_prob: probability of ``((x - min) / range) ** gamma * range + min`` with gamma from
            U(gamma[0], gamma[1]) (``RandAdjustContrastd``).
        gamma: see ``contrast_prob``.
        noise_prob: probability of adding N(0, s²) noise with s from U(0, noise_std)
            (``RandGaussianNoised``, whose ``sample_std`` is on by default).
        noise_std: see ``noise_prob``.
        seed: seed of this object's own generators (one per device); :meth:`set_random_state` re-seeds
            them, which :class:`fracseg.engines.EpochSeed` does at every epoch.
    """

    def __init__(
        self,
        flip_prob: float = 0.5,
        affine_prob: float = 0.3,
        rotate_range: float = 0.26,
        scale_range: float = 0.1,
        contrast_prob: float = 0.3,
        gamma: Sequence[float] = (0.7, 1.5),
        noise_prob: float = 0.2,
        noise_std: float = 0.02,
        seed: int = 0,
    ) -> None:
        self.flip_prob = float(flip_prob)
        self.affine_prob = float(affine_prob)
        self.rotate_range = float(rotate_range)
        self.scale_range = float(scale_range)
        self.contrast_prob = float(contrast_prob)
        self.gamma = (float(gamma[0]), float(gamma[1]))
        self.noise_prob = float(noise_prob)
        self.noise_std = float(noise_std)
        self.set_random_state(seed)

    def set_random_state(self, seed: int) -> BatchAugment:
        self.seed = int(seed)
        self._generators: dict[torch.device, torch.Generator] = {}
        return self

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def _uniform(self, n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
        u = torch.rand(n, generator=self._generator(device), device=device, dtype=torch.float32)
        return low + (high - low) * u

    def __call__(self, image: torch.Tensor, label: torch.Tensor | None = None) -> tuple[torch.Tensor, Any]:
        """Augment ``image`` ``(B, C, H, W)`` and ``label`` ``(B, 1, H, W)`` (or ``None``) together."""
        if image.ndim != 4:
            raise ValueError(f"BatchAugment expects (B, C, H, W) images, got {tuple(image.shape)}")
        b, _, h, w = image.shape
        device = image.device
        draws = {
            name: self._uniform(b, 0.0, 1.0, device) < p
            for name, p in (
                ("flip", self.flip_prob),
                ("affine", self.affine_prob),
                ("contrast", self.contrast_prob),
                ("noise", self.noise_prob),
            )
        }
        angle = self._uniform(b, -self.rotate_range, self.rotate_range, device)
        scale_x = 1.0 + self._uniform(b, -self.scale_range, self.scale_range, device)
        scale_y = 1.0 + self._uniform(b, -self.scale_range, self.scale_range, device)
        gamma = self._uniform(b, self.gamma[0], self.gamma[1], device)
        noise_std = self._uniform(b, 0.0, self.noise_std, device)
        noise = torch.randn(image.shape, generator=self._generator(device), device=device, dtype=image.dtype)

        def per_sample(mask: torch.Tensor) -> torch.Tensor:
            return mask.view(b, 1, 1, 1)

        flip = per_sample(draws["flip"])
        image = torch.where(flip, image.flip(-1), image)
        if label is not None:
            label = torch.where(flip, label.flip(-1), label)

        if bool(draws["affine"].any()):
            theta = self._theta(angle, scale_x, scale_y, h, w, draws["affine"]).to(image.dtype)
            grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
            affine = per_sample(draws["affine"])
            warped = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            image = torch.where(affine, warped, image)
            if label is not None:
                warped = F.grid_sample(
                    label.to(grid.dtype), grid, mode="nearest", padding_mode="zeros", align_corners=False
                ).to(label.dtype)
                label = torch.where(affine, warped, label)

        flat = image.reshape(b, -1)
        low = flat.amin(dim=1).view(b, 1, 1, 1)
        span = flat.amax(dim=1).view(b, 1, 1, 1) - low
        unit = ((image - low) / (span + _CONTRAST_EPS)).clamp_min(0.0)
        adjusted = unit ** gamma.view(b, 1, 1, 1).to(image.dtype) * span + low
        image = torch.where(per_sample(draws["contrast"]), adjusted, image)

        image = torch.where(per_sample(draws["noise"]), image + noise * noise_std.view(b, 1, 1, 1), image)
        return image, label

    @staticmethod
    def _theta(
        angle: torch.Tensor,
        scale_x: torch.Tensor,
        scale_y: torch.Tensor,
        h: int,
        w: int,
        active: torch.Tensor,
    ) -> torch.Tensor:
        """``(B, 2, 3)`` ``affine_grid`` matrices: rotation + scaling about the centre in pixel units,
        expressed in normalised coordinates (``D⁻¹ R S D`` with ``D = diag(W/2, H/2)``); identity where
        ``active`` is false."""
        cos, sin = torch.cos(angle), torch.sin(angle)
        aspect = w / h  # x_norm = x_px / (W/2), y_norm = y_px / (H/2)
        theta = torch.zeros(angle.shape[0], 2, 3, device=angle.device, dtype=torch.float32)
        theta[:, 0, 0] = cos * scale_x
        theta[:, 0, 1] = -sin * scale_y / aspect
        theta[:, 1, 0] = sin * scale_x * aspect
        theta[:, 1, 1] = cos * scale_y
        identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], device=angle.device)
        return torch.where(active.view(-1, 1, 1), theta, identity)


class AugmentingPrepareBatch:
    """A MONAI engine ``prepare_batch`` that moves the batch to the device, then runs :class:`BatchAugment`
    on ``(image, label)``."""

    def __init__(self, augment: BatchAugment) -> None:
        self.augment = augment

    def set_random_state(self, seed: int) -> AugmentingPrepareBatch:
        self.augment.set_random_state(seed)
        return self

    def __call__(
        self,
        batchdata: Mapping[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> Any:
        image, label = default_prepare_batch(batchdata, device, non_blocking, **kwargs)
        return self.augment(image, label)
