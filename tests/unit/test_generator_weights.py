"""``load_generator_state``: the file layouts training, export and continuation read."""

from __future__ import annotations

import pytest
import torch

from fracseg.networks import build_generator, load_generator_state


@pytest.fixture()
def generator() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_generator(channels=(4, 8), strides=(2,), num_res_units=0)


@pytest.mark.parametrize("layout", ["release_fp16", "checkpoint", "bare"])
def test_layouts_load_as_fp32(tmp_path, generator, layout):
    state = generator.state_dict()
    if layout == "release_fp16":
        payload = {"model": {k: v.half() for k, v in state.items()}}
    elif layout == "checkpoint":
        payload = {"model": state, "optimizer": {"lr": 1.0}}
    else:
        payload = state
    path = tmp_path / "model.pt"
    torch.save(payload, path)
    loaded = load_generator_state(path)
    assert set(loaded) == set(state)
    assert all(v.dtype == torch.float32 for v in loaded.values())
    tolerance = 1e-3 if layout == "release_fp16" else 0.0
    for key, value in state.items():
        assert torch.allclose(loaded[key], value, atol=tolerance, rtol=tolerance), key
    fresh = build_generator(channels=(4, 8), strides=(2,), num_res_units=0)
    fresh.load_state_dict(loaded)  # strict


def test_not_a_state_dict_is_named(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match=r"weights\.pt: not a generator state dict"):
        load_generator_state(path)
