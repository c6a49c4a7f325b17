"""Test-time view: the left-right mirror.

It takes the network's answer as a callable, so the precision it runs in stays the caller's.
"""

from __future__ import annotations

from collections.abc import Callable

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
