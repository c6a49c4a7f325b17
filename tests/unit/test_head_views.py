"""Head views (bundle 0.10.0): the image head's answer averaged over rotated and scaled copies."""

from __future__ import annotations

import json

import pytest
import torch

from fracseg.inference.bundle import DEFAULT_BUNDLE, inference_config
from fracseg.inference.decision import DecisionRule
from fracseg.inference.inferer import GuidedInferer, affine_view, head_view_averaged, parse_views
from fracseg.networks.image_head import FeatureTap, attach_image_head, has_image_head
from tests.helpers.image_head import letterboxed, random_head, tiny_generator

VIEWS = ((8.0, 1.0), (-8.0, 1.0), (0.0, 0.9), (0.0, 1.1))


def test_affine_view_rotates_about_the_centre_and_scales() -> None:
    image = torch.zeros(1, 1, 33, 33)
    image[0, 0, 16, 28] = 1.0  # right of the centre
    assert affine_view(image, 0.0, 1.0) is image
    quarter = affine_view(image, 90.0, 1.0)
    row, col = divmod(int(quarter.flatten().argmax()), 33)
    assert col == 16 and row in (4, 28)  # a quarter turn puts the pixel above or below the centre
    assert float(quarter.sum()) == pytest.approx(1.0, abs=1e-4)
    block = torch.zeros(1, 1, 64, 64)
    block[..., 16:48, 16:48] = 1.0
    assert float(affine_view(block, 0.0, 0.5).sum()) == pytest.approx(32 * 32 / 4, rel=0.05)
    assert float(affine_view(block, 0.0, 1.1).sum()) == pytest.approx(32 * 32 * 1.21, rel=0.05)
    last = block.contiguous(memory_format=torch.channels_last)
    assert affine_view(last, 8.0, 1.0).is_contiguous(memory_format=torch.channels_last)


def test_only_the_head_channel_is_averaged_as_a_mean_probability() -> None:
    calls = []

    def answer(x: torch.Tensor) -> torch.Tensor:
        calls.append(x)
        level = x.mean(dim=(1, 2, 3), keepdim=True) * 10.0  # an image-level logit that depends on the view
        return torch.cat([x[:, :1] * 3.0, level.expand(-1, 1, *x.shape[2:])], dim=1)

    x = letterboxed((64, 40), seed=3)
    out = head_view_averaged(answer, x, VIEWS)
    assert len(calls) == 1 + len(VIEWS)
    torch.testing.assert_close(out[:, :1], x * 3.0)  # the mask channel is the input's own
    probabilities = [torch.sigmoid(answer(v)[0, 1, 0, 0]) for v in [x] + [affine_view(x, *v) for v in VIEWS]]
    expected = torch.stack(probabilities).mean()
    assert float(torch.sigmoid(out[0, 1, 0, 0])) == pytest.approx(float(expected), abs=1e-6)
    assert torch.all(out[0, 1] == out[0, 1, 0, 0])
    assert float(torch.sigmoid(out[0, 1, 0, 0])) != pytest.approx(float(probabilities[0]), abs=1e-4)
    # no views, or no image-level channel: the answer as it is
    torch.testing.assert_close(head_view_averaged(answer, x, ()), answer(x))
    one_channel = head_view_averaged(lambda t: t[:, :1], x, VIEWS)
    torch.testing.assert_close(one_channel, x[:, :1])


def test_saturated_head_logits_stay_finite() -> None:
    x = torch.ones(1, 1, 16, 16)
    out = head_view_averaged(lambda t: torch.full((1, 2, 16, 16), 80.0) * (1 + t.mean()), x, VIEWS)
    assert torch.isfinite(out).all()


def _network_with_head() -> torch.nn.Module:
    network = tiny_generator()
    tap = FeatureTap(network)
    with torch.no_grad():
        network(torch.cat([letterboxed((64, 50), seed=5), torch.zeros(1, 2, 64, 64)], dim=1))
    tap.remove()
    attach_image_head(network, random_head(tap.collected[0].shape[1]))
    return network


def _counting(network: torch.nn.Module) -> list[int]:
    """Forward passes through the output block (bf16's split forward does not call the UNet itself)."""
    passes: list[int] = []
    network.model[-1].register_forward_pre_hook(lambda m, a: passes.append(a[0].shape[0]))
    return passes


def test_inferer_runs_the_views_for_automatic_answers_with_a_head_only() -> None:
    network = _network_with_head()
    passes = _counting(network)
    x = letterboxed((64, 50), seed=5)
    plain = GuidedInferer(mirror=True)
    viewed = GuidedInferer(mirror=True, head_views=VIEWS)
    with torch.no_grad():
        base = plain(x, network)
        assert len(passes) == 2
        averaged = viewed(x, network)
        assert len(passes) == 2 + 2 * (1 + len(VIEWS))  # each view mirrored
        torch.testing.assert_close(averaged[:, :1], base[:, :1])
        assert float(averaged[0, 1, 0, 0]) != pytest.approx(float(base[0, 1, 0, 0]), abs=1e-5)
        del passes[:]
        viewed(
            torch.cat([x, torch.zeros(1, 2, 64, 64)], dim=1).index_fill(1, torch.tensor([1]), 0.5), network
        )
        assert len(passes) == 2  # click-guided: no views (the head does not decide there)
    bare = tiny_generator()
    assert not has_image_head(bare)
    passes = _counting(bare)
    with torch.no_grad():
        viewed(x, bare)
    assert len(passes) == 2  # no head: nothing to average


def test_fp32_recheck_recomputes_every_view() -> None:
    network = _network_with_head()
    x = letterboxed((64, 50), seed=5)
    with torch.no_grad():
        score = float(torch.sigmoid(GuidedInferer(mirror=True, head_views=VIEWS)(x, network)[0, 1, 0, 0]))
    passes = _counting(network)
    bf16 = GuidedInferer(
        precision="bf16",
        mirror=True,
        rule=DecisionRule(image_head_threshold=score),
        fp32_margin=0.05,
        head_views=VIEWS,
    )
    with torch.no_grad():
        rechecked = bf16(x, network)
    assert bf16.rechecked == 1
    assert len(passes) == 2 * 2 * (1 + len(VIEWS))  # bf16 and fp32, every view mirrored
    with torch.no_grad():
        exact = GuidedInferer(mirror=True, head_views=VIEWS)(x, network)
    torch.testing.assert_close(rechecked, exact, atol=1e-4, rtol=1e-4)


def test_views_are_parsed_with_a_clear_error() -> None:
    assert parse_views([[8, 1], (0, 0.9)]) == ((8.0, 1.0), (0.0, 0.9))
    assert parse_views(None) == () == parse_views([])
    for bad in ([[8]], [[8, 1, 2]], [["a", 1]], [[0, 0]], [[0, -1]], [[float("nan"), 1]]):
        with pytest.raises(ValueError, match="head_views"):
            parse_views(bad)


def test_shipped_bundle_declares_the_views_for_its_inferer_and_fracseg_infer() -> None:
    config = json.loads((DEFAULT_BUNDLE / "configs" / "inference.json").read_text())
    assert config["inferer"]["head_views"] == "@head_views"
    inferer = inference_config(DEFAULT_BUNDLE).get_parsed_content("inferer")
    assert inferer.head_views == VIEWS


def test_the_study_scores_the_shipped_views_as_its_all_five_set() -> None:
    """studies/image_head_tta_study.py chose the shipped head_views; its 'all five' set is what ships."""
    import importlib.util

    path = DEFAULT_BUNDLE.parent / "studies" / "image_head_tta_study.py"
    spec = importlib.util.spec_from_file_location("image_head_tta_study", path)
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    extra = [study.VIEWS[name] for name in study.VIEW_SETS["all five (0.10.0)"] if name != "identity"]
    assert study.VIEWS["identity"] == (0.0, 1.0)
    assert tuple(extra) == inference_config(DEFAULT_BUNDLE).get_parsed_content("inferer").head_views
    # the study's views are the inferer's: the same warp, no second implementation
    assert study.affine_view is affine_view


def test_fp32_own_view_gives_the_fp32_mask_and_bf16_only_for_the_extra_views() -> None:
    network = _network_with_head()
    x = letterboxed((64, 50), seed=6)
    with torch.no_grad():
        exact = GuidedInferer(mirror=True, head_views=VIEWS)(x, network)
        plain_bf16 = GuidedInferer(precision="bf16", mirror=True, head_views=VIEWS)(x, network)
        mixed = GuidedInferer(precision="bf16", mirror=True, head_views=VIEWS, fp32_own_view=True)(x, network)
    bf16_mask_error = float((plain_bf16[:, 0] - exact[:, 0]).abs().max())
    assert bf16_mask_error > 1e-3  # bf16 moves the mask's logits ...
    torch.testing.assert_close(mixed[:, :1], exact[:, :1], atol=1e-4, rtol=1e-4)  # ... the fp32 view does not
    # the head's answer: the mean of the fp32 own view and the four bf16 views, so it differs from the
    # all-bf16 answer by a fifth of the own view's fp32-bf16 difference
    with torch.no_grad():
        own = [GuidedInferer(precision=p, mirror=True)(x, network)[0, 1, 0, 0] for p in ("fp32", "bf16")]
    own_fp32, own_bf16 = (float(torch.sigmoid(v)) for v in own)
    mixed_p, bf16_p = (float(torch.sigmoid(t[0, 1, 0, 0])) for t in (mixed, plain_bf16))
    assert mixed_p - bf16_p == pytest.approx((own_fp32 - own_bf16) / (1 + len(VIEWS)), abs=1e-6)


def test_fp32_own_view_without_extra_views_is_fp32_and_needs_no_recheck() -> None:
    network = _network_with_head()
    x = letterboxed((64, 50), seed=7)
    with torch.no_grad():
        exact = GuidedInferer(mirror=True)(x, network)
        score = float(torch.sigmoid(exact[0, 1, 0, 0]))
        inferer = GuidedInferer(
            precision="bf16",
            mirror=True,
            rule=DecisionRule(image_head_threshold=score),
            fp32_margin=0.05,
            fp32_own_view=True,
        )
        out = inferer(x, network)
    assert inferer.rechecked == 0  # nothing came from bf16, so nothing is borderline
    torch.testing.assert_close(out, exact, atol=1e-4, rtol=1e-4)


def test_shipped_bundle_runs_the_own_view_in_fp32() -> None:
    assert inference_config(DEFAULT_BUNDLE).get_parsed_content("inferer").fp32_own_view is True
    config = json.loads((DEFAULT_BUNDLE / "configs" / "inference.json").read_text())
    assert config["inferer"]["fp32_own_view"] == "@fp32_own_view"
