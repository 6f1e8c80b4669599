"""CC-ReID evaluation: ranking metrics, per-dataset protocols, re-ranking and the run evaluator.

* :mod:`.metrics` — ``evaluate_ranking`` (CMC, mAP) under the general / clothes-changing / same-clothes rules;
* :mod:`.protocols` — which query and gallery splits each dataset is evaluated on (PRCC single-shot included);
* :mod:`.rerank` — k-reciprocal re-ranking;
* :mod:`.runner` — ``evaluate_run`` / ``evaluate_checkpoint``: features, metrics files and pictures of a run.

``from differ_core.evaluation.metrics import evaluate_ranking`` is the public entry point of the metrics; names load lazily.
"""

from __future__ import annotations

from differ_common.lazy import lazy_getattr

_EXPORTS = {
    "evaluate_ranking": "differ_core.evaluation.metrics",
    "pairwise_distance": "differ_core.evaluation.metrics",
    "FeatureDistance": "differ_core.evaluation.metrics",
    "RankingResult": "differ_core.evaluation.metrics",
    "evaluate_run": "differ_core.evaluation.runner",
    "evaluate_checkpoint": "differ_core.evaluation.runner",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
