"""Exact (numpy) and FAISS retrieval agree, and both match a brute-force sort."""

from __future__ import annotations

import numpy as np
import pytest

from lbr.evaluation.retrieval import dense_search


def normalized(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("top_k", [1, 10, 300])
def test_exact_and_faiss_agree(top_k: int) -> None:
    rng = np.random.default_rng(0)
    q_emb, d_emb = normalized(rng, 37, 24), normalized(rng, 250, 24)
    query_ids = [f"q{i}" for i in range(37)]
    doc_ids = [f"d{i}" for i in range(250)]
    exact = dense_search(q_emb, d_emb, query_ids, doc_ids, top_k, backend="exact", batch_size=8)
    faiss_run = dense_search(q_emb, d_emb, query_ids, doc_ids, top_k, backend="faiss")
    sims = q_emb @ d_emb.T
    for i, query_id in enumerate(query_ids):
        expected = [doc_ids[j] for j in np.argsort(-sims[i], kind="stable")[: min(top_k, 250)]]
        assert list(exact[query_id]) == expected  # ordered best first
        assert list(faiss_run[query_id]) == expected
        for doc_id, score in exact[query_id].items():
            assert abs(score - faiss_run[query_id][doc_id]) < 1e-5
            assert abs(score - sims[i, doc_ids.index(doc_id)]) < 1e-5


def test_shape_checks() -> None:
    rng = np.random.default_rng(1)
    with pytest.raises(ValueError, match="shapes"):
        dense_search(normalized(rng, 2, 4), normalized(rng, 3, 5), ["a", "b"], ["x", "y", "z"])
    with pytest.raises(ValueError, match="ids"):
        dense_search(normalized(rng, 2, 4), normalized(rng, 3, 4), ["a"], ["x", "y", "z"])
    with pytest.raises(ValueError, match="backend"):
        dense_search(normalized(rng, 1, 4), normalized(rng, 1, 4), ["a"], ["x"], backend="gpu")
