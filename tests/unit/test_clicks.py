"""DeepEdit-style click simulation: clicks land inside the errors, in their middle, deterministically."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy import ndimage

from fracseg.engines.clicks import simulate_clicks


def _argmax_yx(heat: torch.Tensor) -> tuple[int, int]:
    idx = int(heat.flatten().argmax())
    return idx // heat.shape[-1], idx % heat.shape[-1]


def _case() -> tuple[torch.Tensor, torch.Tensor]:
    """Image 0: label has a missed 9x9 block (FN) and a small missed 3x3 block; pred has a 5x7 false alarm."""
    label = torch.zeros(2, 1, 32, 32)
    pred = torch.zeros(2, 1, 32, 32)
    label[0, 0, 2:11, 2:11] = 1  # large FN, centre (6, 6)
    label[0, 0, 28:31, 28:31] = 1  # small FN
    pred[0, 0, 20:25, 10:17] = 1  # FP, centre (22, 13)
    # image 1: perfect prediction
    label[1, 0, 5:15, 5:8] = 1
    pred[1, 0, 5:15, 5:8] = 1
    return pred, label


def test_clicks_land_in_the_middle_of_the_largest_error_regions() -> None:
    pred, label = _case()
    guidance = simulate_clicks(pred, label, sigma=2.0, generator=torch.Generator().manual_seed(0))
    assert guidance.shape == (2, 2, 32, 32) and guidance.dtype == torch.float32
    fn = (label > 0) & (pred == 0)
    fp = (pred > 0) & (label == 0)
    y, x = _argmax_yx(guidance[0, 0])
    assert fn[0, 0, y, x] and (y, x) == (6, 6)
    y, x = _argmax_yx(guidance[0, 1])
    assert fp[0, 0, y, x] and y == 22 and 12 <= x <= 14
    assert guidance[0].amax(dim=(1, 2)).tolist() == pytest.approx([1.0, 1.0])
    # one click only: nothing near the small FN block
    assert guidance[0, 0, 28:31, 28:31].max() < 1e-3


def test_no_error_gives_all_zero_guidance() -> None:
    pred, label = _case()
    guidance = simulate_clicks(pred, label)
    assert guidance[1].abs().sum() == 0
    same = simulate_clicks(label, label)
    assert torch.count_nonzero(same) == 0


def test_second_click_goes_to_the_next_largest_component() -> None:
    pred, label = _case()
    guidance = simulate_clicks(pred, label, num_clicks=2, sigma=1.0)
    assert guidance[0, 0, 29, 29] == pytest.approx(1.0)
    assert guidance[0, 0, 6, 6] == pytest.approx(1.0)


def test_probabilities_are_thresholded_and_results_deterministic() -> None:
    label = torch.zeros(1, 1, 16, 16)
    label[0, 0, 4:12, 4:12] = 1
    prob = torch.full_like(label, 0.3)  # everything below 0.5: the whole square is missed
    g1 = simulate_clicks(prob, label, generator=torch.Generator().manual_seed(3))
    g2 = simulate_clicks(prob, label, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(g1, g2)
    y, x = _argmax_yx(g1[0, 0])
    assert 7 <= y <= 8 and 7 <= x <= 8  # one of the 4 central pixels of the even-sized square
    assert g1[0, 1].max() == 0
    meta = simulate_clicks(MetaTensor(prob), MetaTensor(label), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(torch.as_tensor(meta), g1)


def test_shape_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError):
        simulate_clicks(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9))


def _reference_clicks(
    pred: np.ndarray, truth: np.ndarray, num_clicks: int, sigma: float, seed: int
) -> np.ndarray:
    """The straightforward whole-image formulation (distance transform and Gaussians over the full grid),
    against which the bounding-box/window implementation must agree exactly."""
    generator = torch.Generator().manual_seed(seed)
    shape = pred.shape[1:]
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    out = np.zeros((pred.shape[0], 2, *shape), dtype=np.float32)
    for b in range(pred.shape[0]):
        for channel, error in enumerate((truth[b] & ~pred[b], pred[b] & ~truth[b])):
            labels, n = ndimage.label(error)
            if n == 0:
                continue
            sizes = np.bincount(labels.ravel())[1:]
            for idx in np.argsort(-sizes, kind="stable")[:num_clicks]:
                dist = ndimage.distance_transform_edt(np.pad(labels == idx + 1, 1))[1:-1, 1:-1]
                candidates = np.argwhere(dist == dist.max())
                pick = 0
                if len(candidates) > 1:
                    pick = int(torch.randint(len(candidates), (1,), generator=generator).item())
                y, x = candidates[pick]
                bump = np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2.0 * sigma**2)).astype(np.float32)
                np.maximum(out[b, channel], bump, out=out[b, channel])
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cropped_computation_equals_the_whole_image_formulation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    size = (4, 96, 80)
    # blobs of random rectangles, some touching the border, many with tied centres
    pred = np.zeros(size, dtype=bool)
    truth = np.zeros(size, dtype=bool)
    for mask in (pred, truth):
        for b in range(size[0]):
            for _ in range(rng.integers(0, 6)):
                y, x = rng.integers(-5, size[1]), rng.integers(-5, size[2])
                h, w = rng.integers(1, 30), rng.integers(1, 30)
                mask[b, max(0, y) : y + h, max(0, x) : x + w] = True
    sigma = float(rng.choice([1.5, 3.0, 8.0]))
    got = simulate_clicks(
        torch.from_numpy(pred.astype(np.float32)),
        torch.from_numpy(truth.astype(np.float32)),
        num_clicks=2,
        sigma=sigma,
        generator=torch.Generator().manual_seed(seed),
    ).numpy()
    np.testing.assert_array_equal(got, _reference_clicks(pred, truth, 2, sigma, seed))
