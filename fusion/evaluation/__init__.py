"""Evaluation: metrics (:mod:`.metrics`), patient-bootstrap intervals
(:mod:`.intervals`), calibration and operating points (:mod:`.calibration`), subgroups
(:mod:`.subgroups`) and the model card (:mod:`.card`)."""

from fusion.evaluation.intervals import bootstrap_interval, macro_auroc, metric_intervals, rank_auroc
from fusion.evaluation.metrics import (
    balanced_accuracy,
    classification_metrics,
    expected_calibration_error,
    format_metrics,
    macro_f1,
)

__all__ = [
    "balanced_accuracy",
    "bootstrap_interval",
    "classification_metrics",
    "expected_calibration_error",
    "format_metrics",
    "macro_auroc",
    "macro_f1",
    "metric_intervals",
    "rank_auroc",
]
