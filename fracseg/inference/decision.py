"""From a fracture probability map to the reported answer: mask, regions, image score, yes/no.

One rule, used by ``fracseg infer``, ``fracseg evaluate`` and the bundle's inference config:

1. ``candidate = probability >= threshold`` (pixel threshold);
2. connected regions (8-connectivity) smaller than ``min_region_pixels`` are dropped;
3. ``fracture_score`` = the mean of the ``score_top_pixels`` highest probabilities in the image (1 gives
   the maximum; a larger value ignores isolated hot pixels);
4. ``fracture_present = fracture_score >= score_threshold`` and a region survives steps 1-2; when the
   score fails the mask is emptied, so an image judged fracture-free never shows a fracture region.

The settings live in ``bundle/configs/inference.json``, whose ``decision_rule`` builds the one
:class:`DecisionRule` that the bundle's post-processing
(:class:`fracseg.inference.transforms.FractureDecisiond`), ``fracseg infer``/``evaluate`` and the MONAI
Label app apply; the thresholds and sizes are chosen on the validation split by ``fracseg evaluate
--calibrate`` (never on test). ``guided_threshold`` is the pixel threshold of a click-guided prediction
(:meth:`DecisionRule.guided`), chosen on the same split by ``studies/click_study.py``.
"""

from __future__ import annotations

import logging
from dataclasses import InitVar, asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

#: 8-connectivity: diagonal neighbours belong to the same region (thin oblique fracture lines).
CONNECTIVITY = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class DecisionRule:
    """Settings of the probability -> answer rule (see the module docstring)."""

    threshold: float = 0.5
    score_threshold: float = 0.5
    score_top_pixels: int = 1
    min_region_pixels: int = 0
    #: Pixel threshold once the annotator has placed a foreground click; ``None``: ``threshold``.
    guided_threshold: float | None = None
    #: Settings of the image-level head, removed in bundle 0.11.1 (an app's kept bundle copy of 0.10.x
    #: may still give them): accepted and ignored with a warning.
    image_head_threshold: InitVar[float | None] = None
    head_decides: InitVar[bool] = False

    def __post_init__(self, image_head_threshold: float | None, head_decides: bool) -> None:
        if image_head_threshold is not None or head_decides:
            logger.warning("DecisionRule: the image head's settings are gone (bundle 0.11.1) and ignored")
        # config values arrive as JSON numbers (``1`` for ``1.0``) or CLI strings: store one type each
        for name, cast in (("threshold", float), ("score_threshold", float), ("score_top_pixels", int)):
            object.__setattr__(self, name, cast(getattr(self, name)))
        object.__setattr__(self, "min_region_pixels", int(self.min_region_pixels))
        object.__setattr__(self, "guided_threshold", _optional_float(self.guided_threshold))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DecisionRule:
        """The rule from a mapping of its settings (an ``inference.json``'s top-level keys; other keys are
        ignored, missing ones keep the defaults)."""
        names = {f.name for f in fields(cls)} | {"image_head_threshold", "head_decides"}
        return cls(**{k: v for k, v in config.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def guided(self, foreground_clicks: bool) -> DecisionRule:
        """The rule for a click-guided prediction: once the annotator has placed a foreground click, a
        fracture is there by their word, so the filters that suppress false alarms of the automatic answer
        are off: the image-level gate (``score_threshold``) and the minimum region size (a clicked
        fracture can be smaller than ``min_region_pixels``). The pixel threshold becomes
        ``guided_threshold`` where set: the automatic answer's threshold is calibrated low to find
        fractures at all, which would make a clicked fracture's mask too wide. Used by the MONAI Label
        app's ``fracture_interactive`` and by ``studies/click_study.py``."""
        if not foreground_clicks:
            return self
        threshold = self.threshold if self.guided_threshold is None else self.guided_threshold
        return replace(self, threshold=threshold, score_threshold=0.0, min_region_pixels=0)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass
class Region:
    """One connected predicted region: its value in :attr:`Decision.labels`, size and confidence."""

    label: int
    pixels: int
    confidence: float  # mean probability inside the region
    bbox: tuple[slice, slice]


@dataclass
class Decision:
    """What the rule makes of one probability map.

    ``labels`` numbers the kept regions 1..n in the order of ``regions`` (0 elsewhere); ``mask`` is
    ``labels > 0``. ``fracture_present`` is true when the score passes and the mask is not empty.
    """

    mask: np.ndarray
    labels: np.ndarray
    fracture_score: float
    fracture_present: bool
    regions: list[Region] = field(default_factory=list)


def fracture_score(probability: np.ndarray, top_pixels: int = 1) -> float:
    """Mean of the ``top_pixels`` highest probabilities (the maximum for 1); 0 for an empty map."""
    flat = np.asarray(probability, dtype=np.float32).ravel()
    if flat.size == 0:
        return 0.0
    k = max(1, min(int(top_pixels), flat.size))
    if k == 1:
        return float(flat.max())
    return float(np.partition(flat, flat.size - k)[flat.size - k :].mean())


def find_regions(
    mask: np.ndarray, probability: np.ndarray, min_pixels: int = 0
) -> tuple[np.ndarray, list[Region]]:
    """Label the connected regions of ``mask`` with at least ``min_pixels`` pixels.

    Returns ``(labels, regions)``: regions are ordered by confidence (highest first) and numbered 1..n
    in that order in ``labels``.
    """
    raw, count = ndimage.label(np.asarray(mask, dtype=bool), structure=CONNECTIVITY)
    labels = np.zeros(raw.shape, dtype=np.int32)
    if count == 0:
        return labels, []
    # Sizes and mean probabilities from the labelled pixels only (ndimage.mean bins every pixel of the
    # image); the same float64 sums in the same order, so the same means.
    inside = raw > 0
    region_of = raw[inside]
    sizes = np.bincount(region_of, minlength=count + 1)[1:]
    sums = np.bincount(region_of, weights=np.asarray(probability)[inside], minlength=count + 1)[1:]
    means = sums / sizes
    boxes = ndimage.find_objects(raw)
    keep = np.flatnonzero(sizes >= max(1, min_pixels))
    keep = keep[np.lexsort((keep, -means[keep]))]  # confidence descending, then raw label
    lookup = np.zeros(count + 1, dtype=np.int32)
    lookup[keep + 1] = np.arange(1, len(keep) + 1, dtype=np.int32)
    regions = [
        Region(label=new, pixels=int(sizes[i]), confidence=float(means[i]), bbox=boxes[i])
        for new, i in enumerate(keep.tolist(), start=1)
    ]
    labels = lookup[raw]
    return labels, regions


def decide(probability: np.ndarray, rule: DecisionRule) -> Decision:
    """Apply ``rule`` to a ``(H, W)`` probability map (the module docstring's steps)."""
    prob = np.asarray(probability, dtype=np.float32)
    score = fracture_score(prob, rule.score_top_pixels)
    if score < rule.score_threshold:
        empty = np.zeros(prob.shape, dtype=np.int32)
        return Decision(mask=empty > 0, labels=empty, fracture_score=score, fracture_present=False)
    labels, regions = find_regions(prob >= rule.threshold, prob, rule.min_region_pixels)
    return Decision(
        mask=labels > 0,
        labels=labels,
        fracture_score=score,
        fracture_present=bool(regions),
        regions=regions,
    )
