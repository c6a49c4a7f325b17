"""The fp32 re-check: a bf16 answer whose image score lies near the image threshold is computed again in fp32.

bf16 moves scores by up to a few hundredths, so near the threshold it can flip the yes/no answer, while
re-running the few borderline images (about 2 %) keeps the decision the same as fp32's at a small share of
the time bf16 saves. The score is taken on the letterboxed map with the number of top pixels scaled by the
letterbox's area ratio, where the input's displayed size is known (a MetaTensor's ``spatial_shape``, or
the caller's ``display_shapes``): close to the displayed-size score the rule uses, and the margin covers
the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from fracseg.inference.decision import fracture_score

logger = logging.getLogger(__name__)


@dataclass
class Fp32Recheck:
    """Which items of a batch lie within ``margin`` of the decision rule's image threshold, and their fp32
    answers in place of the bf16 ones.

    Args:
        margin: half-width of the band around the threshold re-computed in fp32 (0: off).
        score_threshold: the rule's image threshold on the top-pixel score; ``None`` turns the re-check
            off.
        score_top_pixels: the rule's score summary (:func:`fracseg.inference.decision.fracture_score`).
    """

    margin: float = 0.0
    score_threshold: float | None = None
    score_top_pixels: int = 1
    #: How many images have been re-computed (for benchmarks and the agreement study).
    count: int = 0

    def __post_init__(self) -> None:
        self.margin = float(self.margin)
        self.score_threshold = None if self.score_threshold is None else float(self.score_threshold)
        self.score_top_pixels = int(self.score_top_pixels)

    @property
    def active(self) -> bool:
        """A margin and a threshold to centre it on."""
        return self.score_threshold is not None and self.margin > 0

    def top_pixels(self, side: int, shape: tuple[int, int] | None) -> int:
        """``score_top_pixels`` at letterbox scale: the displayed image's top k pixels cover about
        ``k * scale**2`` letterbox pixels (the longest side is resized to ``side``)."""
        if shape is None or min(shape) <= 0:
            return self.score_top_pixels
        scale = side / max(shape)
        return max(1, round(self.score_top_pixels * scale * scale))

    def distance(self, probability: np.ndarray, side: int, shape: tuple[int, int] | None) -> float:
        """How far one item's image score lies from the image threshold, from its ``(1, S, S)`` letterboxed
        probabilities: the top-pixel summary against ``score_threshold``."""
        if self.score_threshold is None:
            return float("inf")
        return abs(fracture_score(probability[0], self.top_pixels(side, shape)) - self.score_threshold)

    def __call__(
        self,
        logits: torch.Tensor,
        batch: torch.Tensor,
        fp32_answer: Callable[[torch.Tensor], torch.Tensor],
        shapes: list[tuple[int, int] | None],
    ) -> torch.Tensor:
        """``logits`` of ``batch`` with the items whose score is within ``margin`` of the threshold replaced
        by ``fp32_answer`` of them; ``shapes``: each item's displayed ``(H, W)`` or ``None``."""
        probability = torch.sigmoid(logits.detach().float()).cpu().numpy()
        side = int(probability.shape[-1])
        near = [
            i
            for i in range(probability.shape[0])
            if self.distance(probability[i], side, shapes[i]) < self.margin
        ]
        if not near:
            return logits
        exact = fp32_answer(batch[near].contiguous())
        logits = logits.clone()
        logits[near] = exact.to(logits.dtype)
        self.count += len(near)
        logger.debug("%d of %d images near the image threshold re-computed in fp32", len(near), len(batch))
        return logits


def display_shapes(inputs: torch.Tensor, given: Any) -> list[tuple[int, int] | None]:
    """Each item's displayed size: ``given``, else a MetaTensor's (batched) ``spatial_shape``, else unknown
    (``None``). Only the longest side is used (:meth:`Fp32Recheck.top_pixels`), so the axis order does
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
