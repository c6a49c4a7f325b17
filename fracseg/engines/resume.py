"""Checkpoint-based resume for the trainer: RNG state as a checkpointable object, and a handler that
loads the newest periodic checkpoint at start-up.

Together with a ``CheckpointSaver(save_interval=1)`` whose ``save_dict`` holds both networks, both
optimisers, the trainer and :class:`RngState`, a run killed at any moment restarts from the last
completed epoch with the same weights, optimiser moments, epoch counter and random streams.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointLoader, CheckpointSaver

from fracseg.networks import load_generator_state

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


def checkpoints_newest_first(folder: str | Path, pattern: str = "checkpoint_epoch=*.pt") -> list[Path]:
    """Periodic checkpoints in ``folder``, highest epoch first."""
    found = []
    for path in Path(folder).glob(pattern):
        match = _EPOCH_RE.search(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found, reverse=True)]


def latest_checkpoint(folder: str | Path, pattern: str = "checkpoint_epoch=*.pt") -> Path | None:
    """The periodic checkpoint with the highest epoch in ``folder``, or ``None``."""
    ordered = checkpoints_newest_first(folder, pattern)
    return ordered[0] if ordered else None


class ResumeFromLatest:
    """At ``STARTED``, load the newest ``checkpoint_epoch=N.pt`` from ``folder`` into ``load_dict``.

    Args:
        folder: where the periodic ``CheckpointSaver`` writes.
        load_dict: the same objects as the saver's ``save_dict`` (networks, optimisers, ``trainer``,
            :class:`RngState`).
        enabled: ``False`` starts from scratch even if checkpoints exist.
        map_location: passed to ``torch.load``.
        optional_keys: entries of ``load_dict`` a checkpoint may lack (state added after it was written,
            such as the learning curve's clocks); they are left as they are. Any other missing entry fails.
    """

    def __init__(
        self,
        folder: str | Path,
        load_dict: Mapping[str, Any],
        enabled: bool = True,
        map_location: str | torch.device | None = "cpu",
        optional_keys: Sequence[str] = (),
    ) -> None:
        self.folder = Path(folder)
        self.load_dict = dict(load_dict)
        self.enabled = enabled
        self.map_location = map_location
        self.optional_keys = frozenset(optional_keys)
        self.resumed_from: Path | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def _entries_in(self, path: Path) -> dict[str, Any]:
        """``load_dict`` less the optional entries ``path`` does not hold."""
        if not self.optional_keys:
            return self.load_dict
        saved = torch.load(path, map_location="cpu", weights_only=True).keys()
        absent = sorted(self.optional_keys.intersection(self.load_dict).difference(saved))
        if absent:
            logger.info("%s holds no %s: left as initialised", path.name, ", ".join(absent))
        return {k: v for k, v in self.load_dict.items() if k not in absent}

    def __call__(self, engine: Engine) -> None:
        if not self.enabled:
            return
        for path in checkpoints_newest_first(self.folder):
            try:
                loader = CheckpointLoader(
                    load_path=str(path), load_dict=self._entries_in(path), map_location=self.map_location
                )
                loader(engine)
            except (EOFError, RuntimeError, pickle.UnpicklingError) as exc:
                # A checkpoint cut short by a kill (written by a non-atomic saver): keep it aside and use the
                # previous one. torch.load fails before any object is touched, so nothing is half-loaded.
                aside = path.with_name(path.name + ".incomplete")
                path.rename(aside)
                logger.warning(
                    "%s is unreadable (%s); moved to %s, trying the previous checkpoint",
                    path,
                    type(exc).__name__,
                    aside.name,
                )
                continue
            self.resumed_from = path
            logger.info(
                "resumed from %s at epoch %d, iteration %d", path, engine.state.epoch, engine.state.iteration
            )
            return
        logger.info("no usable checkpoint in %s: training from scratch", self.folder)


class InitialWeights:
    """Start a fresh run from existing generator weights (a released ``model.pt``, ``{"model": state}`` or a
    bare state dict): how training continues from the shipped model with another recipe.

    Only the generator is loaded; the critic, optimisers, scheduler and epoch counter start fresh. When
    ``resume`` found a checkpoint of this run, that checkpoint wins and nothing is loaded here, so a killed
    continuation resumes where it stopped instead of starting over from the initial weights.

    Args:
        path: weights file; empty or ``None`` disables the handler.
        network: the generator to load them into (strict: another architecture fails loudly).
        resume: the run's :class:`ResumeFromLatest`, attached before this handler.
    """

    def __init__(
        self, path: str | Path | None, network: torch.nn.Module, resume: ResumeFromLatest | None = None
    ) -> None:
        self.path = Path(path) if path else None
        self.network = network
        self.resume = resume

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        if self.path is None or (self.resume is not None and self.resume.resumed_from is not None):
            return
        if not self.path.is_file():
            raise FileNotFoundError(f"initial weights {self.path}: no such file")
        state = load_generator_state(self.path)
        network = getattr(self.network, "module", self.network)  # DistributedDataParallel wraps the generator
        device = next(network.parameters()).device
        network.load_state_dict({k: v.to(device) for k, v in state.items()})
        logger.info("generator initialised from %s", self.path)


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
        transforms: the training augmentation ``Compose`` (its random transforms are re-seeded), or a
            list of objects with ``set_random_state(seed=...)`` (e.g. the GPU recipe's batch augmentation).
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
        targets = self.transforms if isinstance(self.transforms, list | tuple) else [self.transforms]
        for target in targets:
            if target is not None and hasattr(target, "set_random_state"):
                target.set_random_state(seed=epoch_seed)


class _AtomicDiskSaver(DiskSaver):
    """Ignite ``DiskSaver`` writing to a temporary file and renaming it (``atomic=True``), optionally to a
    fixed file name (as MONAI's key-metric ``model.pt``), with ordinary ``0644`` permissions."""

    def __init__(self, dirname: str | Path, filename: str | None = None) -> None:
        super().__init__(dirname=str(dirname), require_empty=False, atomic=True)
        self.filename = filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        name = self.filename or filename
        super().__call__(checkpoint, name, metadata)
        os.chmod(Path(self.dirname) / name, 0o644)

    def remove(self, filename: str) -> None:
        super().remove(self.filename or filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` whose files are written atomically (temporary file + rename).

    MONAI writes in place (``atomic=False``, to avoid the ``0600`` permissions of Ignite's temporary
    files); a run killed during a save then leaves a truncated checkpoint that cannot be resumed from.
    This subclass keeps MONAI's behaviour and file names and only swaps the writer. Same arguments as
    ``monai.handlers.CheckpointSaver``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                fixed = getattr(checkpoint.save_handler, "filename", None)
                checkpoint.save_handler = _AtomicDiskSaver(self.save_dir, fixed)
