"""studies/image_head_probe.py: which features it reads, and its head (the shipped fit) on known data."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from fracseg.engines.image_head_fit import L2_GRID
from fracseg.evaluation.metrics import roc_auc
from fracseg.networks import build_generator
from fracseg.networks.image_head import deepest_module

REPO = Path(__file__).resolve().parents[2]


def _probe():
    spec = importlib.util.spec_from_file_location(
        "image_head_probe", REPO / "studies" / "image_head_probe.py"
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


def test_head_ranks_by_the_informative_feature_with_the_shipped_fit() -> None:
    probe = _probe()
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 60)
    x = np.column_stack([y + rng.normal(0, 0.5, y.size), rng.normal(0, 1, y.size)])  # column 0 informative
    l2, scores = probe.fitted_scores(x, y, x)
    assert l2 in L2_GRID
    assert scores.shape == (120,) and scores[y == 1].mean() > scores[y == 0].mean()
    assert roc_auc(scores, y) > 0.85  # the informative column alone gives AUROC about 0.92 (d' = 2)
