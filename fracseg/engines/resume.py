"""Checkpoint-based resume for the trainer: RNG state as a checkpointable object, and a handler that
loads the newest periodic checkpoint at start-up.

Together with a ``CheckpointSaver(save_interval=1)`` whose ``save_dict`` holds both networks, both
optimisers, the trainer and :class:`RngState`, a run killed at any moment restarts from the last
completed epoch with the same weights, optimiser moments, epoch counter and random streams.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader

logger = logging.getLogger(__name__)

_EPOCH_RE = re.compile(r"epoch=(\d+)")


class RngState:
    """Python, numpy and torch (CPU and CUDA) random states, stored as tensors so checkpoints load with
    ``torch.load(..., weights_only=True)``."""

    def state_dict(self) -> dict[str, Any]:
        version, mt_state, gauss = random.getstate()
        _name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
        state: dict[str, Any] = {
            "python": torch.tensor([version, *mt_state], dtype=torch.int64),
            "python_gauss": torch.tensor([] if gauss is None else [gauss], dtype=torch.float64),
            "numpy_keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "numpy_extra": torch.tensor([np_pos, np_has_gauss], dtype=torch.int64),
            "numpy_gauss": torch.tensor([np_gauss], dtype=torch.float64),
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        py = state["python"].tolist()
        gauss = state["python_gauss"].tolist()
        random.setstate((int(py[0]), tuple(int(v) for v in py[1:]), gauss[0] if gauss else None))
        pos, has_gauss = (int(v) for v in state["numpy_extra"].tolist())
        np.random.set_state(
            (
                "MT19937",
                state["numpy_keys"].numpy().astype(np.uint32),
                pos,
                has_gauss,
                float(state["numpy_gauss"][0]),
            )
        )
        torch.set_rng_state(state["torch"].cpu())
        if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(list(state["cuda"].cpu()))


def latest_checkpoint(folder: str | Path, pattern: str = "checkpoint_epoch=*.pt") -> Path | None:
    """The periodic checkpoint with the highest epoch in ``folder``, or ``None``."""
    best: tuple[int, Path] | None = None
    for path in Path(folder).glob(pattern):
        match = _EPOCH_RE.search(path.name)
        if match and (best is None or int(match.group(1)) > best[0]):
            best = (int(match.group(1)), path)
    return best[1] if best else None


class ResumeFromLatest:
    """At ``STARTED``, load the newest ``checkpoint_epoch=N.pt`` from ``folder`` into ``load_dict``.

    Args:
        folder: where the periodic ``CheckpointSaver`` writes.
        load_dict: the same objects as the saver's ``save_dict`` (networks, optimisers, ``trainer``,
            :class:`RngState`).
        enabled: ``False`` starts from scratch even if checkpoints exist.
        map_location: passed to ``torch.load``.
    """

    def __init__(
        self,
        folder: str | Path,
        load_dict: Mapping[str, Any],
        enabled: bool = True,
        map_location: str | torch.device | None = "cpu",
    ) -> None:
        self.folder = Path(folder)
        self.load_dict = dict(load_dict)
        self.enabled = enabled
        self.map_location = map_location
        self.resumed_from: Path | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        if not self.enabled:
            return
        path = latest_checkpoint(self.folder)
        if path is None:
            logger.info("no checkpoint in %s: training from scratch", self.folder)
            return
        CheckpointLoader(load_path=str(path), load_dict=self.load_dict, map_location=self.map_location)(
            engine
        )
        self.resumed_from = path
        logger.info(
            "resumed from %s at epoch %d, iteration %d", path, engine.state.epoch, engine.state.iteration
        )


class BestMetricState:
    """Checkpointable view of "the best validation score so far": the evaluator's ``best_metric`` /
    ``best_metric_epoch`` and the key-metric ``CheckpointSaver``'s tracking list (which decides whether
    ``model.pt`` is overwritten). Without it, the first validation after a resume would replace the best
    model with whatever the resumed epoch scores.

    Args:
        evaluator: the MONAI evaluator whose key metric selects the best model.
        saver: the ``CheckpointSaver(save_key_metric=True)`` attached to it.
    """

    def __init__(self, evaluator: Engine, saver: Any) -> None:
        self.evaluator = evaluator
        self.saver = saver

    def state_dict(self) -> dict[str, Any]:
        state = self.evaluator.state
        tracker = getattr(self.saver, "_key_metric_checkpoint", None)  # MONAI exposes only the loader side
        return {
            "best_metric": float(getattr(state, "best_metric", -1.0)),
            "best_metric_epoch": int(getattr(state, "best_metric_epoch", -1)),
            "saver": tracker.state_dict() if tracker is not None else {},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.evaluator.state.best_metric = float(state["best_metric"])
        self.evaluator.state.best_metric_epoch = int(state["best_metric_epoch"])
        if state.get("saver"):
            self.saver.load_state_dict(state["saver"])


class EpochSeed:
    """Re-seed every random stream at the start of each epoch from ``seed + epoch``.

    Global RNGs (Python, numpy, torch: shuffling, worker seeds, clicks, real-mask noise) and the
    augmentation transforms' own ``RandomState``s then depend only on the epoch number, so a run
    resumed at an epoch boundary draws exactly the numbers the uninterrupted run would have drawn.

    Args:
        seed: base seed.
        transforms: the training augmentation ``Compose`` (its random transforms are re-seeded).
    """

    def __init__(self, seed: int, transforms: Any | None = None) -> None:
        self.seed = int(seed)
        self.transforms = transforms

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        from monai.utils import set_determinism

        epoch_seed = self.seed + int(engine.state.epoch)
        set_determinism(seed=epoch_seed)
        if self.transforms is not None and hasattr(self.transforms, "set_random_state"):
            self.transforms.set_random_state(seed=epoch_seed)
