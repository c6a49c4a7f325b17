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
