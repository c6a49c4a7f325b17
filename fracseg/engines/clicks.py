"""DeepEdit-style click simulation for 2D batches: turn a prediction's errors into guidance heat maps.

A simulated annotator looks at where the prediction is wrong and clicks in the middle of the biggest
mistake: a *foreground* click inside the largest missed-fracture region (false negative), a *background*
click inside the largest false-alarm region (false positive). "Middle" is the pixel farthest from the
region's boundary (maximal Euclidean distance transform), as in MONAI's DeepEdit/DeepGrow click transforms.
Each click is rendered as a Gaussian bump with peak 1; the generator receives them as its guidance
channels (see :mod:`fracseg.networks.generator`).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from scipy import ndimage

logger = logging.getLogger(__name__)

#: Guidance channel of foreground (fracture) clicks.
FOREGROUND_CHANNEL = 0
#: Guidance channel of background clicks.
BACKGROUND_CHANNEL = 1
#: Standard deviation (pixels, in the network's input frame) of a click's Gaussian; the trainer's default.
CLICK_SIGMA = 3.0


def _click_points(
    error: np.ndarray, num_clicks: int, generator: torch.Generator | None
) -> list[tuple[int, int]]:
    """Up to ``num_clicks`` click positions, one per error component, largest components first.

    Within a component the click goes to the pixel with maximal distance to the component's boundary
    (the image border counts as boundary); ties are broken at random with ``generator``.
    """
    labels, n = ndimage.label(error)
    if n == 0:
        return []
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(-sizes, kind="stable")[:num_clicks]
    boxes = ndimage.find_objects(labels)
    points: list[tuple[int, int]] = []
    for idx in order:
        # The distance transform runs on the component's bounding box plus a one-pixel ring, which is
        # all background: the nearest boundary pixel always lies inside it, so distances (and the
        # row-major order of tied candidates) equal those over the whole image at a fraction of the cost.
        rows, cols = boxes[idx]
        component = np.pad(labels[rows, cols] == idx + 1, 1)
        dist = ndimage.distance_transform_edt(component)[1:-1, 1:-1]
        candidates = np.argwhere(dist == dist.max())
        pick = 0
        if len(candidates) > 1:
            pick = int(torch.randint(len(candidates), (1,), generator=generator).item())
        y, x = candidates[pick]
        points.append((int(y) + rows.start, int(x) + cols.start))
    return points


def _render(points: list[tuple[int, int]], shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Max of unit-peak Gaussians centred on ``points`` over an ``(H, W)`` grid (zeros when no point).

    Each bump is evaluated only within the radius beyond which it rounds to 0 in float32 (below half the
    smallest subnormal), so the result equals evaluating it over the whole grid.
    """
    heat = np.zeros(shape, dtype=np.float32)
    if not points:
        return heat
    # exp(-r^2 / (2 sigma^2)) < 2**-150 (rounds to float32 zero) when r^2 > 2 sigma^2 * 150 ln 2
    radius = int(np.ceil(sigma * np.sqrt(2.0 * 150.0 * np.log(2.0)))) + 1
    for y, x in points:
        y0, y1 = max(0, y - radius), min(shape[0], y + radius + 1)
        x0, x1 = max(0, x - radius), min(shape[1], x + radius + 1)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        bump = np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2.0 * sigma**2)).astype(np.float32)
        np.maximum(heat[y0:y1, x0:x1], bump, out=heat[y0:y1, x0:x1])
    return heat


def render_clicks(
    points: list[tuple[int, int]], shape: tuple[int, int], sigma: float = CLICK_SIGMA
) -> np.ndarray:
    """One guidance channel for clicks a user placed: unit-peak Gaussians at ``points`` (``(row, col)``
    in the network's input frame) over an ``(H, W)`` grid, float32 in [0, 1]; zeros when no point.

    The same rendering as the simulated clicks of training (:func:`simulate_clicks`).
    """
    return _render([(int(r), int(c)) for r, c in points], shape, sigma)


def simulate_clicks(
    pred_mask: torch.Tensor,
    label: torch.Tensor,
    num_clicks: int = 1,
    sigma: float = CLICK_SIGMA,
    generator: torch.Generator | None = None,
    threshold: float = 0.5,
) -> torch.Tensor:
    """Simulate corrective clicks from the discrepancy between a prediction and the ground truth.

    Args:
        pred_mask: ``(B, 1, H, W)`` or ``(B, H, W)`` prediction, binary or probabilities (thresholded at
            ``threshold``); any device.
        label: ground truth of the same shape, values in {0, 1}.
        num_clicks: clicks per channel per image; successive clicks go to the next-largest error
            components (fewer clicks when there are fewer components).
        sigma: standard deviation of each click's Gaussian, in pixels.
        generator: random generator breaking ties between equally central pixels; the result is
            deterministic given its state.
        threshold: binarisation threshold of ``pred_mask`` (and of ``label``).

    Returns:
        ``(B, 2, H, W)`` float32 guidance on ``label``'s device: channel 0 = foreground clicks in false
        negatives, channel 1 = background clicks in false positives; each in [0, 1] with peak 1 at a click,
        all zeros where the prediction has no error of that kind.
    """
    if pred_mask.shape != label.shape:
        raise ValueError(f"pred_mask {tuple(pred_mask.shape)} and label {tuple(label.shape)} differ.")
    if pred_mask.ndim == 4:
        if pred_mask.shape[1] != 1:
            raise ValueError("simulate_clicks expects one channel.")
        pred_mask, label = pred_mask[:, 0], label[:, 0]
    if pred_mask.ndim != 3:
        raise ValueError(f"Expected (B, 1, H, W) or (B, H, W), got {tuple(pred_mask.shape)}.")
    pred = (pred_mask.detach().float().cpu() > threshold).numpy()
    truth = (label.detach().float().cpu() > threshold).numpy()
    shape = (int(pred.shape[1]), int(pred.shape[2]))
    guidance = np.zeros((pred.shape[0], 2, *shape), dtype=np.float32)
    for b in range(pred.shape[0]):
        false_neg = truth[b] & ~pred[b]
        false_pos = pred[b] & ~truth[b]
        guidance[b, FOREGROUND_CHANNEL] = _render(
            _click_points(false_neg, num_clicks, generator), shape, sigma
        )
        guidance[b, BACKGROUND_CHANNEL] = _render(
            _click_points(false_pos, num_clicks, generator), shape, sigma
        )
    return torch.from_numpy(guidance).to(label.device)
