"""The bundle's inferer: the generator's answer to an image batch, composed of one piece per job.

- guidance: all-zero click channels for automatic segmentation
  (:func:`fracseg.networks.generator.with_empty_guidance`);
- precision: the forward pass in bf16 or fp32 (:meth:`fracseg.precision.Precision.answer`);
- mirror: the mean with the left-right mirrored image (:func:`fracseg.inference.views.mirror_averaged`);
- fp32 re-check: borderline bf16 answers computed again in fp32 (:mod:`fracseg.inference.recheck`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from monai.inferers import Inferer

from fracseg.inference.decision import DecisionRule
from fracseg.inference.recheck import Fp32Recheck, display_shapes
from fracseg.inference.views import mirror_averaged
from fracseg.networks.generator import GENERATOR_IN_CHANNELS, with_empty_guidance
from fracseg.precision import Precision, resolve_precision

__all__ = ["GuidedInferer", "mirror_averaged"]

logger = logging.getLogger(__name__)


class GuidedInferer(Inferer):
    """Run ``network`` on an image batch, appending all-zero click guidance when the batch carries only
    the X-ray channel (automatic segmentation). A batch that already has guidance passes unchanged.

    The forward pass runs in ``precision`` (:func:`fracseg.precision.resolve_precision` on the batch's
    device): bf16 autocast and channels_last where the hardware has native bf16. Doing it here rather than
    through the evaluator's ``amp`` flag matters on CPU, where MONAI's ``SupervisedEvaluator`` switches
    autocast off. The logits come back as float32; the generator's full-resolution input block runs in
    fp32 (:meth:`fracseg.precision.Precision.forward`), as in ``fracseg infer``. A bf16 answer of automatic
    segmentation whose image score lies within ``fp32_margin`` of the image threshold is computed again in
    fp32 (:class:`fracseg.inference.recheck.Fp32Recheck`).

    Args:
        in_channels: the generator's input channels (X-ray + guidance).
        precision: ``"auto"``, ``"bf16"`` or ``"fp32"``.
        mirror: average the probabilities with those of the left-right mirrored input
            (:func:`mirror_averaged`).
        rule: the bundle's decision rule (``"rule": "@decision_rule"``): the re-check's band is centred on
            its ``score_threshold`` (on its ``score_top_pixels`` summary); ``None`` turns the fp32 re-check
            off. Configs before bundle 0.10.3 give ``score_threshold`` and ``score_top_pixels`` instead
            (accepted as ``rule_settings``); the image head's settings of 0.10.x and 0.11.0
            (``image_head``, ``weights``, ``image_head_threshold``, ``head_views``, ``fp32_own_view``) are
            ignored, with a warning where one was set.
        fp32_margin: half-width of the band around the image threshold re-computed in fp32 (0: off).
        channels_last: inputs and network in channels_last in fp32 too (bf16 always uses it). The bundle's
            inference sets it: oneDNN's NHWC convolutions give the same fp32 answer for any thread count,
            where the default layout's last bits move with it, so a one-thread Ray worker answers exactly as
            a two-thread process does. Off for training's inferers, whose network it would convert.
    """

    def __init__(
        self,
        in_channels: int = GENERATOR_IN_CHANNELS,
        precision: str = "fp32",
        mirror: bool = False,
        rule: DecisionRule | None = None,
        fp32_margin: float = 0.0,
        channels_last: bool = False,
        **rule_settings: Any,
    ) -> None:
        super().__init__()
        rule_settings.pop("weights", None)  # the image head's check (an app's bundle copy of 0.10-0.11.0)
        gone = ("head_views", "fp32_own_view", "image_head", "image_head_threshold")
        dropped = sorted(k for k in gone if rule_settings.pop(k, None) is not None)
        if dropped:  # an app's kept bundle copy from before 0.11.1: the image head and its views are gone
            logger.warning("GuidedInferer: %s no longer exist (bundle 0.11.1) and are ignored", dropped)
        legacy = {"score_threshold", "score_top_pixels"}
        if rule_settings and (rule is not None or not set(rule_settings) <= legacy):
            raise TypeError(f"GuidedInferer: unexpected arguments {sorted(rule_settings)}")
        self.in_channels = in_channels
        self.precision = precision
        self.mirror = bool(mirror)
        #: the fp32 re-check, with the rule's thresholds and the margin it uses
        self.rule = rule
        gate = (
            {k: getattr(rule, k) for k in ("score_threshold", "score_top_pixels")}
            if rule is not None
            else rule_settings  # configs before bundle 0.10.3 (an app's kept copy) give the thresholds
        )
        self.recheck = Fp32Recheck(fp32_margin, **gate)
        self.channels_last = bool(channels_last)
        self._resolved: dict[str, Precision] = {}

    @property
    def fp32_margin(self) -> float:
        """The re-check's margin (settable: 0 turns it off)."""
        return self.recheck.margin

    @fp32_margin.setter
    def fp32_margin(self, value: float) -> None:
        self.recheck.margin = float(value)

    @property
    def score_threshold(self) -> float | None:
        return self.recheck.score_threshold

    @property
    def score_top_pixels(self) -> int:
        return self.recheck.score_top_pixels

    @property
    def rechecked(self) -> int:
        """How many images the fp32 re-check has re-computed (for benchmarks and the agreement study)."""
        return self.recheck.count

    def resolved(self, device: torch.device) -> Precision:
        """The precision used on ``device`` (resolved once per device type)."""
        if device.type not in self._resolved:
            self._resolved[device.type] = resolve_precision(self.precision, device)
        return self._resolved[device.type]

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Logits for ``inputs``; ``display_shapes`` (a keyword, not passed on to ``network``): each item's
        displayed ``(H, W)`` for the fp32 re-check, where ``inputs`` is not a MetaTensor that has them."""
        shapes = display_shapes(inputs, kwargs.pop("display_shapes", None))
        precision = self.resolved(inputs.device)
        automatic = inputs.shape[1] < self.in_channels
        batch = with_empty_guidance(inputs, self.in_channels)
        if self.channels_last or precision.channels_last:
            if batch.dim() == 4:
                batch = batch.contiguous(memory_format=torch.channels_last)
            if isinstance(network, torch.nn.Module):
                network.to(memory_format=torch.channels_last)  # no-op once converted
        logits = self._mirrored(precision.answer(network, args, kwargs))(batch)
        if precision.amp and automatic and self.recheck.active:
            fp32 = Precision("fp32", batch.device.type, requested="fp32")
            logits = self.recheck(logits, batch, self._mirrored(fp32.answer(network, args, kwargs)), shapes)
        return logits

    def _mirrored(
        self, forward: Callable[[torch.Tensor], torch.Tensor]
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """``forward``, averaged with its answer to the mirrored batch where ``mirror`` is set."""
        return (lambda x: mirror_averaged(forward, x)) if self.mirror else forward
