"""scripts/export_model.py: a checkpoint (or the mean of several) becomes a release file that loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from fracseg.inference.predictor import bundle_settings
from fracseg.networks import build_generator, load_generator_state

REPO = Path(__file__).resolve().parents[2]


def _checkpoint(path: Path, seed: int) -> dict[str, torch.Tensor]:
    settings = bundle_settings(REPO / "bundle")
    torch.manual_seed(seed)
    net = build_generator(
        channels=settings["channels"], strides=settings["strides"], num_res_units=settings["num_res_units"]
    )
    state = net.state_dict()
    torch.save({"model": state, "epoch": seed}, path)  # the layout of a training checkpoint
    return state


def _export(*args: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "export_model.py"), *map(str, args)],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def test_single_checkpoint_and_the_mean_of_two(tmp_path: Path) -> None:
    a = _checkpoint(tmp_path / "a.pt", 1)
    b = _checkpoint(tmp_path / "b.pt", 2)
    out = tmp_path / "model.pt"
    assert "sha256" in _export(tmp_path / "a.pt", out)
    single = load_generator_state(out)
    assert all(torch.equal(single[k], a[k]) for k in a)
    _export(tmp_path / "a.pt", tmp_path / "b.pt", out)
    mean = load_generator_state(out)
    key = next(k for k, v in a.items() if v.is_floating_point() and not torch.equal(v, b[k]))
    assert torch.allclose(mean[key], (a[key] + b[key]) / 2)
    assert not torch.allclose(mean[key], a[key])
    assert set(torch.load(out, weights_only=True)) == {"model"}  # nothing but the weights ships
