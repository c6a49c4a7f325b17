"""Task config of the ``fracture`` model: the app's bundle copy, and the tasks built on it."""

from __future__ import annotations

import logging
from typing import Any

from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.random import Random

import lib.activelearning
import lib.infers
import lib.scoring
import lib.trainers

logger = logging.getLogger(__name__)


class Fracture(TaskConfig):
    """``init(name, model_dir, conf, planner, bundle=PATH)``: ``bundle`` is the app's own bundle copy
    (configs, ``models/model.pt``); every task reads and trains that copy."""

    def init(self, name: str, model_dir: str, conf: dict[str, str], planner: Any, **kwargs: Any) -> None:
        super().init(name, model_dir, conf, planner, **kwargs)
        self.bundle_path = str(kwargs["bundle"])
        self._scoring = lib.scoring.FractureUncertainty(self.bundle_path)

    def infer(self) -> dict[str, InferTask]:
        return {
            self.name: lib.infers.Fracture(self.bundle_path, self.conf),
            f"{self.name}_interactive": lib.infers.FractureInteractive(self.bundle_path, self.conf),
        }

    def trainer(self) -> TrainTask | None:
        return lib.trainers.Fracture(self.bundle_path, self.conf)

    def strategy(self) -> dict[str, Strategy]:
        return {"least_sure": lib.activelearning.LeastSure(self._scoring), "random": Random()}

    def scoring_method(self) -> dict[str, ScoringMethod]:
        return {"fracture_uncertainty": self._scoring}
