"""Resume support: RNG state round trip, atomic checkpoint saver, fallback past a truncated checkpoint."""

from __future__ import annotations

import random
import stat

import numpy as np
import torch
from ignite.engine import Engine, Events

from fracseg.engines.resume import AtomicCheckpointSaver, ResumeFromLatest, RngState, latest_checkpoint


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
