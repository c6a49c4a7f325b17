"""Evaluation: metrics (pixel, instance, image level), the split evaluator and its report."""

from fracseg.evaluation.evaluate import evaluate
from fracseg.evaluation.metrics import average_precision, hd95, match_instances, pixel_metrics, roc_auc

__all__ = ["average_precision", "evaluate", "hd95", "match_instances", "pixel_metrics", "roc_auc"]
