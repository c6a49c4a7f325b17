"""Resume support: RNG state round trip, atomic checkpoint saver, fallback past a truncated checkpoint."""

from __future__ import annotations

import random
import stat

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events

from fracseg.engines.resume import (
    AtomicCheckpointSaver,
    InitialWeights,
    ResumeFromLatest,
    RngState,
    latest_checkpoint,
)


def test_rng_state_round_trip_restores_every_stream(tmp_path) -> None:
    rng = RngState()
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    torch.save(rng.state_dict(), tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    rng.load_state_dict(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def _engine(net: torch.nn.Module) -> Engine:
    def step(engine, _):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(1.0)

    return Engine(step)


def test_atomic_saver_writes_complete_readable_files(tmp_path) -> None:
    net = torch.nn.Linear(2, 2)
    engine = _engine(net)
    AtomicCheckpointSaver(
        save_dir=str(tmp_path), save_dict={"model": net, "trainer": engine}, save_interval=1, n_saved=2
    ).attach(engine)
    engine.run([0, 1], max_epochs=3)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["checkpoint_epoch=2.pt", "checkpoint_epoch=3.pt"]  # no temporary files left
    state = torch.load(tmp_path / "checkpoint_epoch=3.pt", weights_only=True)
    assert torch.equal(state["model"]["weight"], net.weight.detach())
    assert stat.S_IMODE((tmp_path / "checkpoint_epoch=3.pt").stat().st_mode) == 0o644


def test_resume_skips_a_truncated_newest_checkpoint(tmp_path) -> None:
    net = torch.nn.Linear(2, 2)
    engine = _engine(net)
    AtomicCheckpointSaver(
        save_dir=str(tmp_path), save_dict={"model": net, "trainer": engine}, save_interval=1, n_saved=2
    ).attach(engine)
    engine.run([0, 1], max_epochs=2)
    epoch1 = torch.load(tmp_path / "checkpoint_epoch=1.pt", weights_only=True)
    newest = tmp_path / "checkpoint_epoch=2.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # what a kill during a non-atomic write leaves

    fresh = torch.nn.Linear(2, 2)
    resumed = _engine(fresh)
    handler = ResumeFromLatest(tmp_path, {"model": fresh, "trainer": resumed})
    seen = []
    resumed.add_event_handler(Events.STARTED, handler)
    resumed.add_event_handler(Events.STARTED, lambda e: seen.append(e.state.epoch))
    resumed.run([0, 1], max_epochs=4)
    assert handler.resumed_from == tmp_path / "checkpoint_epoch=1.pt"
    assert seen == [1]
    assert (tmp_path / "checkpoint_epoch=2.pt.incomplete").exists()
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint_epoch=1.pt"
    # Epoch-1 weights + 3 more epochs of 2 iterations adding 1.0 each.
    assert torch.allclose(fresh.weight.detach(), epoch1["model"]["weight"] + 6.0)


def test_initial_weights_start_a_fresh_run_but_yield_to_its_own_checkpoint(tmp_path) -> None:
    source = torch.nn.Linear(2, 2)
    torch.save({"model": {k: v.half() for k, v in source.state_dict().items()}}, tmp_path / "release.pt")
    expected = source.weight.detach().half().float()  # a release exported in fp16 loads as fp32
    run_dir = tmp_path / "ckpt"

    net = torch.nn.Linear(2, 2)
    engine = _engine(net)
    resume = ResumeFromLatest(run_dir, {"model": net, "trainer": engine})
    resume.attach(engine)
    InitialWeights(tmp_path / "release.pt", net, resume).attach(engine)
    AtomicCheckpointSaver(
        save_dir=str(run_dir), save_dict={"model": net, "trainer": engine}, save_interval=1, n_saved=2
    ).attach(engine)
    engine.run([0, 1], max_epochs=1)
    assert net.weight.dtype == torch.float32
    assert torch.allclose(net.weight.detach(), expected + 2.0)  # initial weights + one epoch of 2 steps

    # A killed continuation restarts from its own checkpoint, not from the release weights again.
    again = torch.nn.Linear(2, 2)
    engine2 = _engine(again)
    resume2 = ResumeFromLatest(run_dir, {"model": again, "trainer": engine2})
    resume2.attach(engine2)
    InitialWeights(tmp_path / "release.pt", again, resume2).attach(engine2)
    engine2.run([0, 1], max_epochs=2)
    assert resume2.resumed_from == run_dir / "checkpoint_epoch=1.pt"
    assert torch.allclose(again.weight.detach(), expected + 4.0)


def test_initial_weights_name_a_missing_file_and_refuse_another_network(tmp_path) -> None:
    net = torch.nn.Linear(2, 2)
    missing = InitialWeights(tmp_path / "nope.pt", net)
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        missing(_engine(net))
    torch.save(torch.nn.Linear(3, 2).state_dict(), tmp_path / "other.pt")
    with pytest.raises(RuntimeError, match="size mismatch"):
        InitialWeights(tmp_path / "other.pt", net)(_engine(net))
    before = net.weight.detach().clone()
    InitialWeights("", net)(_engine(net))  # disabled: nothing loaded
    assert torch.equal(net.weight.detach(), before)
