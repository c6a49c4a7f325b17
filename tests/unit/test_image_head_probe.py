"""scripts/image_head_probe.py: which features it reads, and its logistic regression on known data."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from fracseg.networks import build_generator

REPO = Path(__file__).resolve().parents[2]


def _probe():
    spec = importlib.util.spec_from_file_location(
        "image_head_probe", REPO / "scripts" / "image_head_probe.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_deepest_module_is_the_innermost_level_of_the_unet() -> None:
    probe = _probe()
    network = build_generator(channels=(8, 16, 32), strides=(2, 2)).eval()
    module = probe.deepest_module(network, 64)
    seen: list[tuple[int, ...]] = []
    module.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    with torch.inference_mode():
        network(torch.zeros(1, 3, 64, 64))
    # two stride-2 levels: 64 / 4 = 16 px; the innermost skip connection concatenates 16 + 32 channels
    assert seen == [(1, 48, 16, 16)]


def test_logistic_fit_ranks_a_separable_feature_first_and_cv_picks_from_the_grid() -> None:
    probe = _probe()
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 60)
    x = np.column_stack([y + rng.normal(0, 0.5, y.size), rng.normal(0, 1, y.size)])  # column 0 informative
    model = probe.fit_logistic(x, y, l2=1e-2)
    weights = model[0]
    assert weights[0] > 5 * abs(weights[1]) and weights[0] > 0
    l2, results = probe.choose_l2(x, y)
    assert l2 in probe.L2_GRID and set(results) == set(probe.L2_GRID)
    assert results[l2] > 0.8  # the informative column alone gives AUROC about 0.92 (d' = 2)
