"""Training engines: the conditional-GAN trainer, DeepEdit-style click simulation and resume support."""

from fracseg.engines.budget import FitCosineToBudget, TimeBudget
from fracseg.engines.clicks import simulate_clicks
from fracseg.engines.curves import BestThresholdDice, LearningCurve
from fracseg.engines.gan_trainer import ConditionalGanTrainer, GanOutputKeys, GanSettings, gan_stats_output
from fracseg.engines.resume import (
    AtomicCheckpointSaver,
    BestMetricState,
    EpochSeed,
    InitialWeights,
    ResumeFromLatest,
    RngState,
    latest_checkpoint,
)

__all__ = [
    "AtomicCheckpointSaver",
    "BestMetricState",
    "BestThresholdDice",
    "ConditionalGanTrainer",
    "EpochSeed",
    "FitCosineToBudget",
    "GanOutputKeys",
    "GanSettings",
    "InitialWeights",
    "LearningCurve",
    "ResumeFromLatest",
    "RngState",
    "TimeBudget",
    "gan_stats_output",
    "latest_checkpoint",
    "simulate_clicks",
]
