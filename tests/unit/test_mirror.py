"""Test-time mirroring: the averaged probability is exactly mirror-equivariant, clicks are mirrored with the
image, and the CLI predictor takes its default from the bundle (whose rule was calibrated with it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fracseg.inference import Predictor
from fracseg.inference.inferer import GuidedInferer, mirror_averaged
from fracseg.networks import build_generator

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def generator() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_generator(channels=(4, 8), strides=(2,), num_res_units=0).eval()


def test_mirror_averaged_is_the_mean_of_both_views(generator):
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = 0.5 * (torch.sigmoid(generator(x)) + torch.sigmoid(generator(x.flip(-1)).flip(-1)))
        got = torch.sigmoid(mirror_averaged(generator, x))
        plain = generator(x)
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got, torch.sigmoid(plain), atol=1e-3)  # a random generator is not symmetric
    # saturated, opposite answers (logit +200 on one side, -200 on the other) average to 0.5, not NaN
    ramp = torch.tensor([1.0, 0.0, -1.0])
    saturated = mirror_averaged(lambda t: t * ramp, torch.full((1, 1, 1, 3), 200.0))
    assert torch.isfinite(saturated).all()
    assert torch.allclose(torch.sigmoid(saturated), torch.full((1, 1, 1, 3), 0.5))


@pytest.mark.parametrize("guided", [False, True])
def test_mirrored_inferer_commutes_with_flips(generator, guided):
    inferer = GuidedInferer(precision="fp32", mirror=True)
    image = torch.rand(1, 3 if guided else 1, 32, 32)
    if guided:  # one foreground click off-centre: it must follow the image
        image[:, 1] = 0.0
        image[0, 1, 10, 5] = 1.0
    with torch.no_grad():
        out = inferer(image, generator)
        out_of_mirror = inferer(image.flip(-1), generator)
        unmirrored = GuidedInferer(precision="fp32")(image, generator)
    assert torch.allclose(out_of_mirror, out.flip(-1), atol=1e-5)
    assert not torch.allclose(unmirrored.flip(-1), GuidedInferer(precision="fp32")(image.flip(-1), generator))


def test_predictor_reads_mirror_from_the_bundle(tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(REPO / "bundle" / "configs", bundle / "configs")
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    image = torch.rand(1, 1, 64, 64)
    answers = {}
    for mirror in (False, True):
        config["mirror"] = mirror
        (bundle / "configs" / "inference.json").write_text(json.dumps(config))
        predictor = Predictor(weights=None, bundle=bundle, spatial_size=64, precision="fp32")
        assert predictor.mirror is mirror and predictor.settings()["mirror"] is mirror
        answers[mirror] = predictor.infer(image)
    overridden = Predictor(weights=None, bundle=bundle, spatial_size=64, precision="fp32", mirror=False)
    assert overridden.mirror is False
    assert torch.equal(overridden.infer(image), answers[False])
    mirrored = overridden.infer(image.flip(-1)).flip(-1)
    expected = 0.5 * (answers[False] + mirrored)  # probabilities averaged
    np.testing.assert_allclose(answers[True].numpy(), expected.numpy(), atol=1e-5)
