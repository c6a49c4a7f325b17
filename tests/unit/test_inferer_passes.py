"""The bundle's inferer: how many network passes an image costs, and the fp32 re-check of bf16 answers."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from fracseg.inference.bundle import DEFAULT_BUNDLE, inference_config
from fracseg.inference.decision import DecisionRule
from fracseg.inference.inferer import GuidedInferer
from tests.helpers.tiny_network import letterboxed, tiny_generator


def _counting(network: torch.nn.Module) -> list[int]:
    """Forward passes through the output block (bf16's split forward does not call the UNet itself)."""
    passes: list[int] = []
    network.model[-1].register_forward_pre_hook(lambda m, a: passes.append(a[0].shape[0]))
    return passes


def test_an_image_costs_two_passes_with_the_mirror_and_one_without() -> None:
    network = tiny_generator()
    passes = _counting(network)
    x = letterboxed((64, 50), seed=5)
    with torch.no_grad():
        GuidedInferer(mirror=True)(x, network)
        assert len(passes) == 2
        GuidedInferer(mirror=False)(x, network)
        assert len(passes) == 3
        clicked = torch.cat([x, torch.zeros(1, 2, 64, 64)], dim=1).index_fill(1, torch.tensor([1]), 0.5)
        GuidedInferer(mirror=True)(clicked, network)
        assert len(passes) == 5


def test_fp32_recheck_recomputes_a_borderline_bf16_answer_in_fp32() -> None:
    network = tiny_generator()
    x = letterboxed((64, 50), seed=5)
    with torch.no_grad():
        exact = GuidedInferer(mirror=True)(x, network)
    score = float(torch.sigmoid(exact[0, 0]).max())
    passes = _counting(network)
    bf16 = GuidedInferer(
        precision="bf16", mirror=True, rule=DecisionRule(score_threshold=score), fp32_margin=0.05
    )
    with torch.no_grad():
        rechecked = bf16(x, network)
    assert bf16.rechecked == 1
    assert len(passes) == 4  # bf16 then fp32, both mirrored
    torch.testing.assert_close(rechecked, exact, atol=1e-4, rtol=1e-4)
    far = GuidedInferer(
        precision="bf16",
        mirror=True,
        rule=DecisionRule(score_threshold=min(1.0, score + 0.5)),
        fp32_margin=0.05,
    )
    with torch.no_grad():
        far(x, network)
    assert far.rechecked == 0 and len(passes) == 6


def test_settings_of_an_older_app_copy_are_ignored_with_a_warning(caplog) -> None:
    """A MONAI Label app's kept bundle copy of 0.10.x-0.11.0 names the image head, its views and the
    weights it was fitted for: the inferer builds, ignores them and says so."""
    with caplog.at_level(logging.WARNING):
        inferer = GuidedInferer(
            mirror=True, head_views=[[8.0, 1.0]], fp32_own_view=True, image_head="models/h.pt", weights="x"
        )
    for name in ("head_views", "fp32_own_view", "image_head"):
        assert name in caplog.text
        assert not hasattr(inferer, name)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        GuidedInferer(mirror=True, image_head=None, weights="models/model.pt")  # 0.11.0: no head named
    assert not caplog.text
    with pytest.raises(TypeError, match="unexpected"):
        GuidedInferer(mirror=True, views=[[8.0, 1.0]])


def test_shipped_bundle_runs_two_fp32_passes_per_image() -> None:
    """Issue 26's budget: at most four network passes per image; the shipped bundle needs two (image and
    mirror), in fp32, so there is no bf16 answer to re-check."""
    config = json.loads((DEFAULT_BUNDLE / "configs" / "inference.json").read_text())
    gone = {"head_views", "fp32_own_view", "image_head", "image_head_path"}
    assert not gone & (set(config) | set(config["inferer"]) | set(config["decision_rule"]))
    inferer = inference_config(DEFAULT_BUNDLE).get_parsed_content("inferer")
    assert inferer.mirror is True and inferer.precision == "fp32"
    assert inferer.channels_last  # thread-count invariant fp32 answers
    network = tiny_generator()
    passes = _counting(network)
    with torch.no_grad():
        inferer(letterboxed((64, 50), seed=5), network)
    assert len(passes) == 2


def test_channels_last_fp32_answers_the_same_on_one_thread_as_on_two() -> None:
    """The bundle's inferer (channels_last) gives a one-CPU Ray worker the two-thread process's answer."""
    network = tiny_generator()
    x = letterboxed((64, 50), seed=5)
    threads = torch.get_num_threads()
    answers = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            with torch.no_grad():
                answers.append(GuidedInferer(mirror=True, channels_last=True)(x, network))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(answers[0], answers[1])
    assert _conv_weight(network).is_contiguous(memory_format=torch.channels_last)
    trained = tiny_generator()
    with torch.no_grad():
        GuidedInferer(mirror=True)(x, trained)  # training's inferers (fp32) leave the layout alone
    assert not _conv_weight(trained).is_contiguous(memory_format=torch.channels_last)


def _conv_weight(network: torch.nn.Module) -> torch.Tensor:
    return next(p for p in network.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[-1] > 1)
