"""Wall-clock budget for a training run: stop at an epoch boundary before the budget runs out.

A lent GPU is held for minutes, not hours, so a release or ablation run there must end by itself with
its best checkpoint saved and its last epoch validated. Stopping only at epoch boundaries keeps the
checkpoints, the validation and a later ``--resume`` consistent (ignite's own ``TimeLimit`` stops
mid-epoch, skipping the epoch's validation and checkpoint).
"""

from __future__ import annotations

import logging
import time

from ignite.engine import Engine, Events

logger = logging.getLogger(__name__)


class TimeBudget:
    """Terminate ``engine`` once another epoch would end past ``seconds`` after training started.

    The next epoch's duration is estimated as the longest epoch so far (validation included, since
    this handler is attached after the trainer's own epoch handlers). ``seconds <= 0`` disables it.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)
        self.started: float | None = None
        self.epoch_started: float | None = None
        self.longest_epoch = 0.0
        self.stopped_at_epoch: int | None = None

    def attach(self, engine: Engine) -> None:
        if self.seconds <= 0:
            return
        engine.add_event_handler(Events.STARTED, self._on_started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._on_epoch_started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._on_epoch_completed)

    def _on_started(self, engine: Engine) -> None:
        self.started = time.monotonic()

    def _on_epoch_started(self, engine: Engine) -> None:
        self.epoch_started = time.monotonic()

    def _on_epoch_completed(self, engine: Engine) -> None:
        now = time.monotonic()
        assert self.started is not None and self.epoch_started is not None
        self.longest_epoch = max(self.longest_epoch, now - self.epoch_started)
        elapsed = now - self.started
        if elapsed + self.longest_epoch > self.seconds and engine.state.epoch < engine.state.max_epochs:
            self.stopped_at_epoch = int(engine.state.epoch)
            logger.warning(
                "time budget: stop after epoch %d of %d (%.0f s used of %.0f s; epochs take up to %.1f s)",
                engine.state.epoch,
                engine.state.max_epochs,
                elapsed,
                self.seconds,
                self.longest_epoch,
            )
            engine.terminate()


class FitCosineToBudget:
    """Fit a cosine learning-rate schedule to a wall-clock budget instead of to ``max_epochs``.

    With ``time_budget_s`` the run ends when the time is spent, usually long before ``max_epochs``, and a
    cosine over ``max_epochs`` would stop while the learning rate is still high. After the first epoch
    (validation included, so attach after the trainer's other handlers) this sets the scheduler's
    ``T_max`` to the number of epochs the budget affords at that pace, at most ``max_epochs``; ``T_max``
    is part of the scheduler's state dict, so a resumed run keeps it. ``seconds <= 0`` disables it.

    Args:
        seconds: the run's ``time_budget_s``.
        scheduler: a ``torch.optim.lr_scheduler.CosineAnnealingLR`` stepped once per epoch.
        fit_after_epochs: epochs to time before fitting: ``val_interval``, so that the validation's share
            of an epoch is included.
        margin: fraction of the budget assumed lost to slower later epochs (the critic joins later).
    """

    def __init__(
        self, seconds: float, scheduler: object, fit_after_epochs: int = 1, margin: float = 0.1
    ) -> None:
        self.seconds = float(seconds)
        self.fit_after_epochs = max(1, int(fit_after_epochs))
        self.scheduler = scheduler
        self.margin = float(margin)
        self.started: float | None = None
        self.fitted_epochs: int | None = None

    def attach(self, engine: Engine) -> None:
        if self.seconds <= 0 or not hasattr(self.scheduler, "T_max"):
            return
        engine.add_event_handler(Events.STARTED, self._on_started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._on_epoch_completed)

    def _on_started(self, engine: Engine) -> None:
        self.started = time.monotonic()
        self.start_epoch = int(engine.state.epoch)

    def _on_epoch_completed(self, engine: Engine) -> None:
        if self.fitted_epochs is not None or self.started is None or self.start_epoch > 0:
            return  # fitted once, early in a fresh run (a resumed run keeps its checkpointed T_max)
        if engine.state.epoch < self.fit_after_epochs:
            return
        epoch_seconds = (time.monotonic() - self.started) / engine.state.epoch
        affordable = int(self.seconds * (1.0 - self.margin) // max(epoch_seconds, 1e-6))
        self.fitted_epochs = max(1, min(int(engine.state.max_epochs), affordable))
        self.scheduler.T_max = self.fitted_epochs
        logger.info(
            "learning-rate cosine fitted to the time budget: %d epochs (%.1f s per epoch, budget %.0f s)",
            self.fitted_epochs,
            epoch_seconds,
            self.seconds,
        )
