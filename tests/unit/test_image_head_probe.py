"""scripts/image_head_probe.py: which features it reads, and its logistic regression on known data."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from fracseg.networks import build_generator
from fracseg.networks.image_head import deepest_module

REPO = Path(__file__).resolve().parents[2]


def _probe():
    spec = importlib.util.spec_from_file_location(
        "image_head_probe", REPO / "scripts" / "image_head_probe.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_deepest_module_is_the_innermost_level_of_the_unet() -> None:
    network = build_generator(channels=(8, 16, 32), strides=(2, 2)).eval()
    module = deepest_module(network, 64)
    seen: list[tuple[int, ...]] = []
    module.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    with torch.inference_mode():
        network(torch.zeros(1, 3, 64, 64))
    # two stride-2 levels: 64 / 4 = 16 px; the innermost skip connection concatenates 16 + 32 channels
    assert seen == [(1, 48, 16, 16)]


def test_content_mask_covers_the_image_inside_the_letterbox() -> None:
    probe = _probe()
    # 454 x 373 (H x W): resized to 512 x 421, padded 45/46 columns each side; 32 cells of 16 px
    mask = probe.content_mask((454, 373), 512, 32)
    assert mask.shape == (32, 32) and mask.all(dim=1).sum() == 0 and mask.all(dim=0).sum() == 26
    assert not mask[:, :2].any() and not mask[:, -2:].any()
    assert probe.content_mask((300, 300), 512, 32).all()


def test_head_ranks_by_the_informative_feature_and_cv_picks_from_the_grid() -> None:
    probe = _probe()
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 60)
    x = np.column_stack([y + rng.normal(0, 0.5, y.size), rng.normal(0, 1, y.size)])  # column 0 informative
    weights = probe.head(1e-2, len(y)).fit(x, y)[-1].coef_[0]
    assert weights[0] > 5 * abs(weights[1]) and weights[0] > 0
    l2, results = probe.choose_l2(x, y)
    assert l2 in probe.L2_GRID and set(results) == set(probe.L2_GRID)
    assert results[l2] > 0.8  # the informative column alone gives AUROC about 0.92 (d' = 2)
    _, scores = probe.fitted_scores(x, y, x[:, :])
    assert scores.shape == (120,) and scores[y == 1].mean() > scores[y == 0].mean()
