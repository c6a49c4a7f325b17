"""Inferer that feeds the generator its guidance channels, in the configured precision."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.inferers import Inferer
from torch.nn.functional import logsigmoid

from fracseg.networks.generator import GENERATOR_IN_CHANNELS, with_empty_guidance
from fracseg.precision import Precision, resolve_precision


def mirror_averaged(forward: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
    """Logits whose sigmoid is the mean probability of ``batch`` and of its left-right mirror, mirrored back
    (test-time augmentation).

    Left and right limbs both occur in X-rays and training flips half its crops, so the mirrored image is
    as plausible an input as the original; averaging the two answers removes part of the model's
    variance. On the 0.5.0 weights (valid, cross-fitted rule) it raised mean Dice from 0.295 to 0.331 at
    twice the network time (``bundle/docs/README.md``, "Test-time mirroring"); averaging the logits instead
    gave 0.323. The result stays a logit, as every caller expects (the bundle's post-processing applies the
    sigmoid): ``logit((sigmoid(a) + sigmoid(b)) / 2)``, computed in log space so that saturated logits stay
    finite. Guidance channels are mirrored with the image, so clicks stay where they were placed.
    """
    a = forward(batch)
    b = forward(batch.flip(-1)).flip(-1)
    log_p = torch.logaddexp(logsigmoid(a), logsigmoid(b))
    log_q = torch.logaddexp(logsigmoid(-a), logsigmoid(-b))
    return log_p - log_q


class GuidedInferer(Inferer):
    """Run ``network`` on an image batch, appending all-zero click guidance when the batch carries only
    the X-ray channel (automatic segmentation). A batch that already has guidance passes unchanged.

    The forward pass runs in ``precision`` (:func:`fracseg.precision.resolve_precision` on the batch's
    device): bf16 autocast and channels_last where the hardware has native bf16. Doing it here rather than
    through the evaluator's ``amp`` flag matters on CPU, where MONAI's ``SupervisedEvaluator`` switches
    autocast off. The logits come back as float32; the generator's full-resolution input block runs in
    fp32 (:meth:`fracseg.precision.Precision.forward`), as in ``fracseg infer``.

    Args:
        in_channels: the generator's input channels (X-ray + guidance).
        precision: ``"auto"``, ``"bf16"`` or ``"fp32"``.
        mirror: average the probabilities with those of the left-right mirrored input
            (:func:`mirror_averaged`).
    """

    def __init__(
        self, in_channels: int = GENERATOR_IN_CHANNELS, precision: str = "fp32", mirror: bool = False
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.precision = precision
        self.mirror = bool(mirror)
        self._resolved: dict[str, Precision] = {}

    def resolved(self, device: torch.device) -> Precision:
        """The precision used on ``device`` (resolved once per device type)."""
        if device.type not in self._resolved:
            self._resolved[device.type] = resolve_precision(self.precision, device)
        return self._resolved[device.type]

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        precision = self.resolved(inputs.device)
        batch = precision.prepare_input(with_empty_guidance(inputs, self.in_channels))
        if precision.channels_last and isinstance(network, torch.nn.Module):
            precision.prepare_module(network)  # no-op once converted
        if args or kwargs or not isinstance(network, torch.nn.Module):

            def forward(x: torch.Tensor) -> torch.Tensor:
                with precision.autocast():
                    out = network(x, *args, **kwargs)
                return out.float() if precision.amp else out

        else:

            def forward(x: torch.Tensor) -> torch.Tensor:
                return precision.forward(network, x)

        return mirror_averaged(forward, batch) if self.mirror else forward(batch)
