"""Evaluation: metrics (:mod:`adaptlab.evaluation.metrics`) and statistics (:mod:`adaptlab.evaluation.stats`).

Independent of training code: nothing here imports torch or the model/method packages.
"""

from adaptlab.evaluation.metrics import METRICS, MetricInfo, higher_is_better, metric_info

__all__ = ["METRICS", "MetricInfo", "higher_is_better", "metric_info"]
