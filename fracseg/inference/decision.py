"""From a fracture probability map to the reported answer: mask, regions, image score, yes/no.

One rule, used by ``fracseg infer``, ``fracseg evaluate`` and the bundle's inference config:

1. ``candidate = probability >= threshold`` (pixel threshold);
2. connected regions (8-connectivity) smaller than ``min_region_pixels`` are dropped;
3. ``fracture_score`` = the image-level head's probability where the model has one
   (:mod:`fracseg.networks.image_head`, the network's second output channel) and the rule has a
   threshold for it (``image_head_threshold``); else the mean of the ``score_top_pixels`` highest
   probabilities in the image (1 gives the maximum; a larger value ignores isolated hot pixels);
4. ``fracture_present = fracture_score >= image_head_threshold`` (head) or ``>= score_threshold`` (top
   pixels); when it is false the mask is emptied, so an image judged fracture-free never shows a
   fracture region. Both thresholds are kept, so weights the head was not fitted for (a continued
   training run, the MONAI Label app's fine-tuned copy) still get the rule calibrated for their score.
5. ``head_decides`` (head only): the head's "yes" stands without a region: ``fracture_present`` follows
   the head's probability alone, and where no region survives steps 1-2 the answer is "fracture
   suspected, not localised" (present, empty mask). The head judges the whole image, so the pixel
   threshold does not veto it (many fractured images have no region above it); no substitute region is
   drawn. A "yes" from the top-pixel score still needs a region of its own: there the region is the
   evidence.

The settings live in ``bundle/configs/inference.json``, whose ``decision_rule`` builds the one
:class:`DecisionRule` that the bundle's post-processing
(:class:`fracseg.inference.transforms.FractureDecisiond`), ``fracseg infer``/``evaluate`` and the MONAI
Label app apply; the thresholds and sizes are chosen on the
validation split by ``fracseg evaluate --calibrate`` (never on test), ``head_decides`` is a choice of
rule (the calibration keeps it). ``guided_threshold`` is the pixel threshold of a click-guided
prediction (:meth:`DecisionRule.guided`), chosen on the same split by ``studies/click_study.py``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
from scipy import ndimage

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
    #: Image threshold on the image head's probability; ``None``: the head's score is not used.
    image_head_threshold: float | None = None
    #: The head's "yes" needs no region (step 5 of the module docstring).
    head_decides: bool = False

    def __post_init__(self) -> None:
        # config values arrive as JSON numbers (``1`` for ``1.0``) or CLI strings: store one type each
        for name, cast in (("threshold", float), ("score_threshold", float), ("score_top_pixels", int)):
            object.__setattr__(self, name, cast(getattr(self, name)))
        object.__setattr__(self, "min_region_pixels", int(self.min_region_pixels))
        object.__setattr__(self, "guided_threshold", _optional_float(self.guided_threshold))
        object.__setattr__(self, "image_head_threshold", _optional_float(self.image_head_threshold))
        object.__setattr__(self, "head_decides", bool(self.head_decides))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DecisionRule:
        """The rule from a mapping of its settings (an ``inference.json``'s top-level keys; other keys are
        ignored, missing ones keep the defaults)."""
        names = {f.name for f in fields(cls)}
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
        head = None if self.image_head_threshold is None else 0.0
        return replace(
            self,
            threshold=threshold,
            score_threshold=0.0,
            min_region_pixels=0,
            image_head_threshold=head,
            head_decides=False,
        )

    def uses_head(self, image_score: float | None) -> bool:
        """Whether the image head's probability is the score: the model gave one and the rule has a
        threshold for it."""
        return image_score is not None and self.image_head_threshold is not None

    def decides_alone(self, image_score: float | None) -> bool:
        """Whether the head's probability alone decides ``fracture_present`` (step 5, module docstring)."""
        return self.uses_head(image_score) and self.head_decides

    def image_threshold(self, image_score: float | None = None) -> float:
        """The image threshold that applies to an answer with (or without) the head's ``image_score``."""
        if self.uses_head(image_score):
            assert self.image_head_threshold is not None
            return self.image_head_threshold
        return self.score_threshold


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
    ``labels > 0``. ``fracture_present`` is true when the score passes and the mask is not empty, or, with
    :attr:`DecisionRule.head_decides`, when the head's score passes (the mask may then be empty).
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


def image_score_of(channels: np.ndarray) -> float | None:
    """The image-level head's probability: the mean of the second channel (constant over the image, see
    :mod:`fracseg.networks.image_head`) of a ``(C, H, W)`` probability map; ``None`` for one channel."""
    channels = np.asarray(channels)
    return float(channels[1].mean()) if channels.ndim == 3 and channels.shape[0] > 1 else None


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
    index = np.arange(1, count + 1)
    sizes = np.bincount(raw.ravel(), minlength=count + 1)[1:]
    means = np.atleast_1d(ndimage.mean(probability, raw, index))
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


def decide(probability: np.ndarray, rule: DecisionRule, image_score: float | None = None) -> Decision:
    """Apply ``rule`` to a ``(H, W)`` probability map; ``image_score``: the image-level head's probability
    where the model has one (with the rule's ``image_head_threshold`` it replaces the top-pixel summary as
    ``fracture_score``)."""
    prob = np.asarray(probability, dtype=np.float32)
    head = rule.uses_head(image_score)
    score = (
        float(image_score)
        if head and image_score is not None
        else fracture_score(prob, rule.score_top_pixels)
    )
    if score < rule.image_threshold(image_score):
        empty = np.zeros(prob.shape, dtype=np.int32)
        return Decision(mask=empty > 0, labels=empty, fracture_score=score, fracture_present=False)
    labels, regions = find_regions(prob >= rule.threshold, prob, rule.min_region_pixels)
    return Decision(
        mask=labels > 0,
        labels=labels,
        fracture_score=score,
        fracture_present=bool(regions) or rule.decides_alone(image_score),
        regions=regions,
    )
