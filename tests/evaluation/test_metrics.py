"""Metrics against pytrec_eval (trec_eval) and ranx on random runs, and one case by hand."""

from __future__ import annotations

import math
import random

import pytest

from lbr.evaluation import metrics

pytrec_eval = pytest.importorskip("pytrec_eval")


def random_case(seed: int, ties: bool) -> tuple[dict, dict]:
    """Graded qrels (every query has a relevant document) and a run over 60 documents.

    With ``ties`` the scores are small integers, so many are equal and the tie-break order
    (score desc, then doc id desc) matters.
    """
    rng = random.Random(seed)
    docs = [f"d{i:02d}" for i in range(60)]
    qrels, run = {}, {}
    for q in range(25):
        judged = rng.sample(docs, rng.randint(1, 8))
        qrels[f"q{q}"] = {d: rng.choice([1, 1, 2, 3]) for d in judged}
        if rng.random() < 0.3:  # some non-relevant judgements too
            qrels[f"q{q}"][rng.choice(docs)] = 0
        qrels[f"q{q}"][judged[0]] = max(1, qrels[f"q{q}"][judged[0]])
        retrieved = rng.sample(docs, rng.randint(5, 60))
        run[f"q{q}"] = {d: float(rng.randint(0, 5)) if ties else rng.random() for d in retrieved}
    return qrels, run


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
def test_against_pytrec_eval(seed: int, ties: bool) -> None:
    qrels, run = random_case(seed, ties)
    measures = {"ndcg_cut.5,10", "recall.10,100", "map_cut.10,100", "map", "recip_rank"}
    trec = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    for k in (5, 10):
        ours = metrics.per_query(run, qrels, "ndcg", k)
        assert all(math.isclose(ours[q], trec[q][f"ndcg_cut_{k}"], abs_tol=1e-6) for q in qrels)
    for k in (10, 100):
        ours = metrics.per_query(run, qrels, "recall", k)
        assert all(math.isclose(ours[q], trec[q][f"recall_{k}"], abs_tol=1e-6) for q in qrels)
        ours = metrics.per_query(run, qrels, "map", k)
        assert all(math.isclose(ours[q], trec[q][f"map_cut_{k}"], abs_tol=1e-6) for q in qrels)
    ours = metrics.per_query(run, qrels, "map", None)
    assert all(math.isclose(ours[q], trec[q]["map"], abs_tol=1e-6) for q in qrels)
    # MRR@10 = trec_eval's reciprocal rank of the run cut to its top 10 (in trec order).
    cut = {q: {d: run[q][d] for d in metrics.rank(run[q], 10)} for q in run}
    trec_cut = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut)
    ours = metrics.per_query(run, qrels, "mrr", 10)
    assert all(math.isclose(ours[q], trec_cut[q]["recip_rank"], abs_tol=1e-6) for q in qrels)
    # Means are over all judged queries.
    mean_trec = sum(trec[q]["ndcg_cut_10"] for q in qrels) / len(qrels)
    assert math.isclose(metrics.ndcg(run, qrels, 10), mean_trec, abs_tol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_against_ranx(seed: int) -> None:
    ranx = pytest.importorskip("ranx")
    qrels, run = random_case(seed, ties=False)  # ranx breaks ties its own way
    ranx_scores = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), ["ndcg@10", "recall@100", "mrr@10", "map@100"])
    assert math.isclose(metrics.ndcg(run, qrels, 10), ranx_scores["ndcg@10"], abs_tol=1e-6)
    assert math.isclose(metrics.recall(run, qrels, 100), ranx_scores["recall@100"], abs_tol=1e-6)
    assert math.isclose(metrics.mrr(run, qrels, 10), ranx_scores["mrr@10"], abs_tol=1e-6)
    assert math.isclose(metrics.mean_average_precision(run, qrels, 100), ranx_scores["map@100"], abs_tol=1e-6)


def test_hand_computed_case() -> None:
    # Ranking d3, d1, d2, d4; d1 has relevance 1, d2 relevance 2, d5 (never retrieved) 1.
    run = {"q": {"d3": 0.9, "d1": 0.8, "d2": 0.7, "d4": 0.1}}
    qrels = {"q": {"d1": 1, "d2": 2, "d5": 1, "d4": 0}}
    dcg = 1 / math.log2(3) + 2 / math.log2(4)
    idcg = 2 + 1 / math.log2(3) + 1 / math.log2(4)
    assert math.isclose(metrics.ndcg(run, qrels, 10), dcg / idcg)
    assert math.isclose(metrics.ndcg(run, qrels, 1), 0.0)
    assert math.isclose(metrics.recall(run, qrels, 2), 1 / 3)
    assert math.isclose(metrics.recall(run, qrels, 10), 2 / 3)
    assert math.isclose(metrics.mrr(run, qrels, 10), 1 / 2)
    assert math.isclose(metrics.mrr(run, qrels, 1), 0.0)
    assert math.isclose(metrics.mean_average_precision(run, qrels), (1 / 2 + 2 / 3) / 3)


def test_ties_break_by_doc_id_descending_and_missing_queries_score_zero() -> None:
    run = {"q1": {"a": 1.0, "b": 1.0, "c": 1.0}}
    assert metrics.rank(run["q1"]) == ["c", "b", "a"]
    qrels = {"q1": {"a": 1}, "q2": {"x": 1}, "q3": {"y": 0}}
    # q3 has nothing relevant: not evaluated; q2 has no run: scores 0.
    assert metrics.per_query(run, qrels, "mrr", 10) == {"q1": 1 / 3, "q2": 0.0}
    assert math.isclose(metrics.mrr(run, qrels, 10), 1 / 6)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.per_query({}, {}, "precision", 10)
    with pytest.raises(ValueError, match="needs a cut-off"):
        metrics.per_query({}, {}, "ndcg", None)
