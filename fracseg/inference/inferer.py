"""Inferer that feeds the generator its guidance channels, in the configured precision."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.networks.nets import UNet
from torch.nn.functional import logsigmoid

from fracseg.inference.decision import fracture_score, image_score_of
from fracseg.io import file_sha256
from fracseg.networks.generator import GENERATOR_IN_CHANNELS, with_empty_guidance
from fracseg.networks.image_head import attach_image_head_file, has_image_head
from fracseg.precision import Precision, resolve_precision

logger = logging.getLogger(__name__)


def mirror_averaged(forward: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
    """Logits whose sigmoid is the mean probability of ``batch`` and of its left-right mirror, mirrored back
    (test-time augmentation).

    Left and right limbs both occur in X-rays and training flips half its crops, so the mirrored image is
    as plausible an input as the original; averaging the two probabilities (not the logits) removes part
    of the model's variance at twice the network time (``bundle/docs/studies/``). The result stays a
    logit, as every caller expects (the bundle's post-processing applies the sigmoid):
    ``logit((sigmoid(a) + sigmoid(b)) / 2)``, computed in log space so that saturated logits stay finite.
    Guidance channels are mirrored with the image, so clicks stay where they were placed.
    """
    a = forward(batch)
    b = forward(batch.flip(-1)).flip(-1)
    log_p = torch.logaddexp(logsigmoid(a), logsigmoid(b))
    log_q = torch.logaddexp(logsigmoid(-a), logsigmoid(-b))
    return log_p - log_q


def affine_view(batch: torch.Tensor, degrees: float, scale: float) -> torch.Tensor:
    """``batch`` ``(B, C, H, W)`` rotated by ``degrees`` about its centre and scaled by ``scale`` (bilinear,
    zero outside: the letterbox's padding value); the identity view is ``batch`` itself."""
    if degrees == 0.0 and scale == 1.0:
        return batch
    angle = math.radians(degrees)
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=torch.float32, device=batch.device)
    theta = theta.expand(batch.shape[0], 2, 3)
    grid = torch.nn.functional.affine_grid(theta, list(batch.shape), align_corners=False)
    out = torch.nn.functional.grid_sample(
        batch.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return out.to(batch.dtype).contiguous(memory_format=_memory_format(batch))


def _memory_format(tensor: torch.Tensor) -> torch.memory_format:
    if tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def head_view_averaged(
    answer: Callable[[torch.Tensor], torch.Tensor],
    batch: torch.Tensor,
    views: Sequence[tuple[float, float]],
    view_answer: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``answer(batch)`` with its image-level channel (1, the image head's) replaced by the logit of the mean
    head probability over ``batch`` and its ``views`` (``(degrees, scale)`` pairs, :func:`affine_view`).

    Only the image-level answer is averaged: the mask channel stays the unwarped view's, so masks, regions
    and Dice are those of ``answer`` alone. The head sees the image whole, so small rotations and scalings
    within the training augmentation's ranges are equally plausible inputs whose answers vary; their mean
    ranks images better, at one network pass per view (``studies/image_head_tta_study.py``).
    ``view_answer`` answers the extra views (default: ``answer``; the inferer passes a bf16 one where the
    image's own view runs in fp32)."""
    view_answer = view_answer or answer
    logits = answer(batch)
    if not views or logits.shape[1] < 2:
        return logits
    log_p = [logsigmoid(logits[:, 1:2])]
    log_q = [logsigmoid(-logits[:, 1:2])]
    for degrees, scale in views:
        extra = view_answer(affine_view(batch, float(degrees), float(scale)))[:, 1:2]
        log_p.append(logsigmoid(extra))
        log_q.append(logsigmoid(-extra))
    # logit of the mean probability, in log space (the count cancels between numerator and denominator)
    head = torch.logsumexp(torch.stack(log_p), dim=0) - torch.logsumexp(torch.stack(log_q), dim=0)
    logits = logits.clone()
    logits[:, 1:2] = head.to(logits.dtype)
    return logits


class GuidedInferer(Inferer):
    """Run ``network`` on an image batch, appending all-zero click guidance when the batch carries only
    the X-ray channel (automatic segmentation). A batch that already has guidance passes unchanged.

    The forward pass runs in ``precision`` (:func:`fracseg.precision.resolve_precision` on the batch's
    device): bf16 autocast and channels_last where the hardware has native bf16. Doing it here rather than
    through the evaluator's ``amp`` flag matters on CPU, where MONAI's ``SupervisedEvaluator`` switches
    autocast off. The logits come back as float32; the generator's full-resolution input block runs in
    fp32 (:meth:`fracseg.precision.Precision.forward`), as in ``fracseg infer``.

    A bf16 answer whose image-level fracture score lies within ``fp32_margin`` of ``score_threshold``
    (automatic segmentation only) is computed again in fp32: bf16 moves scores by up to a few hundredths,
    so near the threshold it can flip the yes/no answer, while re-running the few borderline images
    (about 2 %) keeps the decision the same as fp32's at a small share of the time bf16 saves. With the
    image head (:mod:`fracseg.networks.image_head`) the score is its channel; without it, the score is
    taken on the letterboxed map with the number of top pixels scaled by the letterbox's area ratio, where
    the input's displayed size is known (a MetaTensor's ``spatial_shape``, or ``display_shapes``): close to
    the displayed-size score the rule uses, and the margin covers the rest.

    Args:
        in_channels: the generator's input channels (X-ray + guidance).
        precision: ``"auto"``, ``"bf16"`` or ``"fp32"``.
        mirror: average the probabilities with those of the left-right mirrored input
            (:func:`mirror_averaged`).
        score_threshold: the decision rule's image threshold on the top-pixel score; ``None`` (and no
            ``image_head_threshold``) turns the fp32 re-check off.
        score_top_pixels: the decision rule's score summary
            (:func:`fracseg.inference.decision.fracture_score`).
        fp32_margin: half-width of the band around ``score_threshold`` re-computed in fp32 (0: off).
        image_head: the image-level head file (:mod:`fracseg.networks.image_head`): attached to the network
            on its first call when it was fitted for ``weights``; the logits then get a second channel,
            the image's fracture logit, which the decision rule uses as ``fracture_score``.
        weights: the generator weights file the network holds (for the head's check); ``None``: no check.
        image_head_threshold: the rule's image threshold on the head's probability (the re-check's band
            is centred on it when the head answers).
        head_views: extra ``(degrees, scale)`` views whose head probabilities are averaged with the
            input's (:func:`head_view_averaged`; automatic segmentation with the head only, each view
            mirrored when ``mirror``); empty: none.
        fp32_own_view: with bf16, compute the input's own view (the mask, and its share of the head's
            answer) in fp32 and only the extra ``head_views`` in bf16: bf16's rounding moves the boundary
            pixels of small masks, while the head's five-view mean barely notices it. Without head views
            the whole answer is then fp32.
    """

    def __init__(
        self,
        in_channels: int = GENERATOR_IN_CHANNELS,
        precision: str = "fp32",
        mirror: bool = False,
        score_threshold: float | None = None,
        score_top_pixels: int = 1,
        fp32_margin: float = 0.0,
        image_head: str | os.PathLike[str] | None = None,
        weights: str | os.PathLike[str] | None = None,
        image_head_threshold: float | None = None,
        head_views: Sequence[Sequence[float]] = (),
        fp32_own_view: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.precision = precision
        self.mirror = bool(mirror)
        self.score_threshold = None if score_threshold is None else float(score_threshold)
        self.score_top_pixels = int(score_top_pixels)
        self.fp32_margin = float(fp32_margin)
        self.image_head = None if image_head is None else Path(image_head)
        self.weights = None if weights is None else Path(weights)
        self.image_head_threshold = None if image_head_threshold is None else float(image_head_threshold)
        self.head_views = parse_views(head_views)
        self.fp32_own_view = bool(fp32_own_view)
        self._head_tried: set[int] = set()
        self._resolved: dict[str, Precision] = {}
        #: How many images the fp32 re-check has re-computed (for benchmarks and the agreement study).
        self.rechecked = 0

    def resolved(self, device: torch.device) -> Precision:
        """The precision used on ``device`` (resolved once per device type)."""
        if device.type not in self._resolved:
            self._resolved[device.type] = resolve_precision(self.precision, device)
        return self._resolved[device.type]

    def attach_head(self, network: Any) -> bool:
        """Give ``network`` the image head (once per network; see ``image_head``); whether it has one."""
        if not isinstance(network, UNet):
            return False
        if self.image_head is not None and id(network) not in self._head_tried:
            self._head_tried.add(id(network))
            sha = None
            if self.weights is not None:
                sha = file_sha256(self.weights) if self.weights.is_file() else "untrained"
            attach_image_head_file(network, self.image_head, sha)
        return has_image_head(network)

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Logits for ``inputs``; ``display_shapes`` (a keyword, not passed on to ``network``): each item's
        displayed ``(H, W)`` for the fp32 re-check, where ``inputs`` is not a MetaTensor that has them."""
        shapes = _display_shapes(inputs, kwargs.pop("display_shapes", None))
        self.attach_head(network)
        precision = self.resolved(inputs.device)
        automatic = inputs.shape[1] < self.in_channels
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

        views = self.head_views if automatic and has_image_head(network) else ()
        own_in_fp32 = precision.amp and self.fp32_own_view
        own = self._fp32_forward(network, batch, args, kwargs) if own_in_fp32 else forward
        logits = self._answer(own, batch, views, forward)
        gated = self.score_threshold is not None or self.image_head_threshold is not None
        in_bf16 = precision.amp and (bool(views) or not own_in_fp32)  # some of the answer came from bf16
        if in_bf16 and automatic and gated and self.fp32_margin > 0:
            logits = self._recheck_borderline(logits, batch, network, args, kwargs, shapes, views)
        return logits

    def _fp32_forward(
        self, network: Any, batch: torch.Tensor, args: tuple, kwargs: dict
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """The network's forward pass in fp32 (on a module bf16 may have made channels_last)."""
        fp32 = Precision("fp32", batch.device.type, requested="fp32")

        def forward(x: torch.Tensor) -> torch.Tensor:
            return network(x, *args, **kwargs) if args or kwargs else fp32.forward(network, x)

        return forward

    def _answer(
        self,
        forward: Callable[[torch.Tensor], torch.Tensor],
        batch: torch.Tensor,
        views: Sequence[tuple[float, float]],
        view_forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The logits of ``batch``: mirrored where set, with the head's channel averaged over ``views``
        (answered by ``view_forward``, default ``forward``)."""

        def mirrored(f: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
            return (lambda x: mirror_averaged(f, x)) if self.mirror else f

        view_answer = mirrored(view_forward) if view_forward is not None else None
        return head_view_averaged(mirrored(forward), batch, views, view_answer)

    def _top_pixels(self, side: int, shape: tuple[int, int] | None) -> int:
        """``score_top_pixels`` at letterbox scale: the displayed image's top k pixels cover about
        ``k * scale**2`` letterbox pixels (the longest side is resized to ``side``)."""
        if shape is None or min(shape) <= 0:
            return self.score_top_pixels
        scale = side / max(shape)
        return max(1, round(self.score_top_pixels * scale * scale))

    def _distance(self, probability: np.ndarray, side: int, shape: tuple[int, int] | None) -> float:
        """How far one item's image score lies from the threshold that applies to it, from its ``(C, S, S)``
        letterboxed probabilities: the head's channel against ``image_head_threshold`` where both exist
        (as :meth:`fracseg.inference.decision.DecisionRule.uses_head`), else the mask channel's top-pixel
        summary against ``score_threshold``."""
        head = image_score_of(probability)
        if head is not None and self.image_head_threshold is not None:
            return abs(head - self.image_head_threshold)
        if self.score_threshold is None:
            return float("inf")
        return abs(fracture_score(probability[0], self._top_pixels(side, shape)) - self.score_threshold)

    def _recheck_borderline(
        self,
        logits: torch.Tensor,
        batch: torch.Tensor,
        network: Any,
        args: tuple,
        kwargs: dict,
        shapes: list[tuple[int, int] | None],
        views: Sequence[tuple[float, float]] = (),
    ) -> torch.Tensor:
        """``logits`` with the items whose score is within ``fp32_margin`` of the threshold redone in fp32
        (every view of them)."""
        probability = torch.sigmoid(logits.detach().float()).cpu().numpy()
        side = int(probability.shape[-1])
        near = [
            i
            for i in range(probability.shape[0])
            if self._distance(probability[i], side, shapes[i]) < self.fp32_margin
        ]
        if not near:
            return logits
        subset = batch[near].contiguous()
        exact = self._answer(self._fp32_forward(network, batch, args, kwargs), subset, views)
        logits = logits.clone()
        logits[near] = exact.to(logits.dtype)
        self.rechecked += len(near)
        logger.debug("%d of %d images near the image threshold re-computed in fp32", len(near), len(batch))
        return logits


def parse_views(views: Sequence[Sequence[float]] | None) -> tuple[tuple[float, float], ...]:
    """``head_views`` as ``((degrees, scale), ...)``; a clear error for anything else."""
    parsed = []
    for view in views or ():
        try:
            degrees, scale = (float(v) for v in view)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"head_views: each view is [degrees, scale], got {view!r}") from exc
        if not (math.isfinite(degrees) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"head_views: each view is [degrees, scale > 0], got {view!r}")
        parsed.append((degrees, scale))
    return tuple(parsed)


def _display_shapes(inputs: torch.Tensor, given: Any) -> list[tuple[int, int] | None]:
    """Each item's displayed size: ``given``, else a MetaTensor's (batched) ``spatial_shape``, else unknown
    (``None``). Only the longest side is used (:meth:`GuidedInferer._top_pixels`), so the axis order does
    not matter."""
    count = int(inputs.shape[0])
    if given is None and isinstance(inputs, MetaTensor):
        given = inputs.meta.get("spatial_shape")
    if given is None:
        return [None] * count
    try:
        values = np.asarray([np.asarray(v, dtype=np.int64) for v in given], dtype=np.int64).reshape(-1, 2)
    except (TypeError, ValueError):
        return [None] * count
    if len(values) != count:
        return [None] * count
    return [(int(h), int(w)) for h, w in values]
