"""Retrieval metrics as pure functions over plain dicts; they know nothing about models.

``run``: ``{query_id: {doc_id: score}}`` (higher is better); ``qrels``: ``{query_id: {doc_id:
relevance}}``. Definitions follow trec_eval (and so pytrec_eval), including its ranking order:
score descending, then document id descending. A document is relevant when its relevance is
``>= 1``; nDCG uses the relevance itself as gain and ``log2(rank + 1)`` as discount.

Averages are over the queries of ``qrels`` that have a relevant document; a query missing
from ``run`` scores 0 (trec_eval would silently skip it, which inflates the mean).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]


def rank(scores: Mapping[str, float], k: int | None = None) -> list[str]:
    """Document ids in trec_eval order (score desc, then doc id desc), cut at ``k``."""
    ranked = [doc for doc, _ in sorted(scores.items(), key=lambda x: (x[1], x[0]), reverse=True)]
    return ranked if k is None else ranked[:k]


def ndcg_at_k(ranked: list[str], relevance: Mapping[str, int], k: int) -> float:
    """nDCG@k of one ranked list (linear gain, as trec_eval's ``ndcg_cut``)."""
    dcg = sum(max(relevance.get(doc, 0), 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sorted((r for r in relevance.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranked: list[str], relevance: Mapping[str, int], k: int) -> float:
    """Fraction of the relevant documents found in the top k."""
    relevant = {doc for doc, r in relevance.items() if r > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def mrr_at_k(ranked: list[str], relevance: Mapping[str, int], k: int) -> float:
    """Reciprocal rank of the first relevant document within the top k (0 if none)."""
    for i, doc in enumerate(ranked[:k]):
        if relevance.get(doc, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def average_precision_at_k(ranked: list[str], relevance: Mapping[str, int], k: int | None) -> float:
    """AP@k, divided by the number of all relevant documents (trec_eval ``map_cut``)."""
    relevant = {doc for doc, r in relevance.items() if r > 0}
    if not relevant:
        return 0.0
    hits = 0
    total = 0.0
    for i, doc in enumerate(ranked if k is None else ranked[:k]):
        if doc in relevant:
            hits += 1
            total += hits / (i + 1)
    return total / len(relevant)


def per_query(run: Run, qrels: Qrels, metric: str, k: int | None) -> dict[str, float]:
    """One metric for every judged query: ``{query_id: value}``.

    Args:
        metric: ``ndcg``, ``recall``, ``mrr`` or ``map``.
        k: the cut-off; ``None`` (only for ``map``) uses the whole ranking.
    """
    functions = {
        "ndcg": ndcg_at_k,
        "recall": recall_at_k,
        "mrr": mrr_at_k,
        "map": average_precision_at_k,
    }
    if metric not in functions:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(functions)}")
    if k is None and metric != "map":
        raise ValueError(f"{metric} needs a cut-off k")
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    function = functions[metric]
    values = {}
    for query_id, relevance in qrels.items():
        if not any(r > 0 for r in relevance.values()):
            continue
        ranked = rank(run.get(query_id, {}), k)
        values[query_id] = function(ranked, relevance, k)
    return values


def mean_metric(run: Run, qrels: Qrels, metric: str, k: int | None) -> float:
    """Mean of :func:`per_query` over judged queries (0.0 if there are none)."""
    values = per_query(run, qrels, metric, k)
    return sum(values.values()) / len(values) if values else 0.0


def ndcg(run: Run, qrels: Qrels, k: int = 10) -> float:
    return mean_metric(run, qrels, "ndcg", k)


def recall(run: Run, qrels: Qrels, k: int = 10) -> float:
    return mean_metric(run, qrels, "recall", k)


def mrr(run: Run, qrels: Qrels, k: int = 10) -> float:
    return mean_metric(run, qrels, "mrr", k)


def mean_average_precision(run: Run, qrels: Qrels, k: int | None = None) -> float:
    return mean_metric(run, qrels, "map", k)


# The metrics every report shows, as (name, metric, k).
DEFAULT_METRICS: tuple[tuple[str, str, int | None], ...] = (
    ("nDCG@10", "ndcg", 10),
    ("Recall@10", "recall", 10),
    ("Recall@100", "recall", 100),
    ("MRR@10", "mrr", 10),
    ("MAP@100", "map", 100),
)


def evaluate_run(
    run: Run,
    qrels: Qrels,
    metrics: tuple[tuple[str, str, int | None], ...] = DEFAULT_METRICS,
) -> dict[str, float]:
    """Every metric in ``metrics`` as ``{name: mean value}``."""
    return {name: mean_metric(run, qrels, metric, k) for name, metric, k in metrics}
