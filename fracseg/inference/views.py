"""Test-time views: the left-right mirror (both outputs) and the rotated/scaled views of the image head.

Each function takes the network's answer as a callable, so the precision it runs in stays the caller's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch.nn.functional import logsigmoid


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
