"""Evaluation: on-device ranking metrics (training validation) and ir_measures reports.

* :mod:`jaxir.eval.metrics` -- ``jnp`` metrics over ``[Q, N]`` candidate blocks
  (nDCG@k, RR@k, R@k, P@k, AP) with trec_eval semantics, plus :func:`compute_metrics`
  for dict runs;
* :mod:`jaxir.eval.evaluate` -- :func:`evaluate` (``ir_measures``, the reference for
  reported numbers) and :func:`format_table`.
"""

from jaxir.eval.evaluate import DEFAULT_METRICS, evaluate, format_table
from jaxir.eval.metrics import (
    average_precision,
    compute_metrics,
    mean_over_valid,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    rr_at_k,
)

__all__ = [
    "DEFAULT_METRICS",
    "average_precision",
    "compute_metrics",
    "evaluate",
    "format_table",
    "mean_over_valid",
    "ndcg_at_k",
    "precision_at_k",
    "recall_at_k",
    "rr_at_k",
]
