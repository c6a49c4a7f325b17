"""The training time budget stops at an epoch boundary, after the epoch's own handlers ran."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events

from fracseg.engines import FitCosineToBudget, TimeBudget
from fracseg.engines import budget as budget_module


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(budget_module.time, "monotonic", fake)
    return fake


def _engine(clock: FakeClock, step_seconds: list[float]) -> tuple[Engine, list[int]]:
    """An engine whose epoch ``e`` (1-based, one iteration) takes ``step_seconds[e - 1]`` seconds, with a
    stand-in validation handler attached first, as the trainer's own handlers are."""

    def step(engine: Engine, batch: int) -> None:
        clock.now += step_seconds[engine.state.epoch - 1]

    engine = Engine(step)
    validated: list[int] = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: validated.append(e.state.epoch))
    return engine, validated


def test_stops_before_an_epoch_that_would_overrun(clock: FakeClock) -> None:
    engine, validated = _engine(clock, [1.0] * 10)
    budget = TimeBudget(3.5)
    budget.attach(engine)
    engine.run([0], max_epochs=10)
    # after epoch 3, 3 s are used and the next epoch (1 s) would end at 4 s > 3.5 s
    assert engine.state.epoch == 3
    assert budget.stopped_at_epoch == 3
    assert validated == [1, 2, 3]


def test_longest_epoch_is_the_estimate(clock: FakeClock) -> None:
    engine, _ = _engine(clock, [1.0, 4.0, 1.0, 1.0, 1.0, 1.0])
    budget = TimeBudget(9.5)
    budget.attach(engine)
    engine.run([0], max_epochs=6)
    # after epoch 2, 5 s are used: one more 1-s epoch would fit, but the longest epoch (4 s) is the
    # estimate, so epoch 3 runs (5 + 4 <= 9.5) and the run stops after it (6 + 4 > 9.5)
    assert budget.stopped_at_epoch == 3


def test_zero_disables_and_a_generous_budget_runs_to_the_end(clock: FakeClock) -> None:
    for seconds in (0.0, 1000.0):
        engine, validated = _engine(clock, [1.0] * 5)
        budget = TimeBudget(seconds)
        budget.attach(engine)
        engine.run([0], max_epochs=5)
        assert engine.state.epoch == 5
        assert budget.stopped_at_epoch is None
        assert validated == [1, 2, 3, 4, 5]


def test_cosine_is_fitted_to_the_epochs_the_budget_affords(clock: FakeClock) -> None:
    """After the timed epochs, T_max = budget * (1 - margin) / seconds per epoch, capped at max_epochs."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=400)
    engine, _ = _engine(clock, [10.0] * 400)
    fit = FitCosineToBudget(100.0, scheduler, fit_after_epochs=2, margin=0.1)
    fit.attach(engine)
    TimeBudget(100.0).attach(engine)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: scheduler.step())
    engine.run([0], max_epochs=400)
    assert fit.fitted_epochs == 9 and scheduler.T_max == 9  # 90 s of budget at 10 s per epoch
    assert engine.state.epoch == 10  # the budget runs one epoch more: the margin keeps the lr near 0 there


def test_cosine_fit_is_off_without_a_budget_and_kept_on_resume(clock: FakeClock) -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(torch.optim.SGD([param], lr=1.0), T_max=5)
    engine, _ = _engine(clock, [10.0] * 5)
    FitCosineToBudget(0.0, scheduler).attach(engine)
    engine.run([0], max_epochs=5)
    assert scheduler.T_max == 5
    resumed, _ = _engine(clock, [10.0] * 10)
    # ResumeFromLatest restores the engine's state at STARTED, before the handlers attached after it run
    resumed.add_event_handler(Events.STARTED, lambda e: setattr(e.state, "epoch", 5))
    fit = FitCosineToBudget(30.0, scheduler)
    fit.attach(resumed)
    resumed.run([0], max_epochs=7)
    assert fit.fitted_epochs is None and scheduler.T_max == 5
