"""scripts/export_model.py: a checkpoint (or the mean of several) becomes a release file that loads."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from fracseg.inference.bundle import inference_config
from fracseg.networks import load_generator_state

REPO = Path(__file__).resolve().parents[2]


def _checkpoint(path: Path, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = inference_config(REPO / "bundle").get_parsed_content("network_def")
    state = net.state_dict()
    torch.save({"model": state, "epoch": seed}, path)  # the layout of a training checkpoint
    return state


def _export(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: Path) -> str:
    """Run the script's ``main`` in this process (two interpreter start-ups cost 14 s)."""
    spec = importlib.util.spec_from_file_location("export_model", REPO / "scripts" / "export_model.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", ["export_model.py", *map(str, args)])
    assert module.main() == 0
    return capsys.readouterr().out


def test_single_checkpoint_and_the_mean_of_two(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _checkpoint(tmp_path / "a.pt", 1)
    b = _checkpoint(tmp_path / "b.pt", 2)
    out = tmp_path / "model.pt"
    assert "sha256" in _export(monkeypatch, capsys, tmp_path / "a.pt", out)
    single = load_generator_state(out)
    assert all(torch.equal(single[k], a[k]) for k in a)
    _export(monkeypatch, capsys, tmp_path / "a.pt", tmp_path / "b.pt", out)
    mean = load_generator_state(out)
    key = next(k for k, v in a.items() if v.is_floating_point() and not torch.equal(v, b[k]))
    assert torch.allclose(mean[key], (a[key] + b[key]) / 2)
    assert not torch.allclose(mean[key], a[key])
    assert set(torch.load(out, weights_only=True)) == {"model"}  # nothing but the weights ships
