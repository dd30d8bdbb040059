"""Dense top-k retrieval: exact cosine by batched matrix product, or FAISS for large corpora.

Embeddings are expected L2-normalised, so the inner product is the cosine similarity.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Above this many documents "auto" switches to FAISS (its BLAS kernels and memory layout win
# once the corpus no longer fits comfortably in one matrix product per batch).
FAISS_MIN_DOCS = 100_000
BACKENDS = ("auto", "exact", "faiss")


def dense_search(
    q_emb: np.ndarray,
    d_emb: np.ndarray,
    query_ids: Sequence[str],
    doc_ids: Sequence[str],
    top_k: int = 100,
    *,
    backend: str = "auto",
    batch_size: int = 1024,
) -> dict[str, dict[str, float]]:
    """Top-k documents per query by inner product.

    Args:
        q_emb: (num_queries, dim) float32, L2-normalised.
        d_emb: (num_docs, dim) float32, L2-normalised.
        query_ids, doc_ids: ids matching the rows.
        top_k: documents kept per query (capped at the corpus size).
        backend: ``exact`` (numpy), ``faiss`` (IndexFlatIP) or ``auto``.
        batch_size: queries per matrix product (bounds memory to batch_size x num_docs).

    Returns:
        A run ``{query_id: {doc_id: score}}``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    q_emb = np.ascontiguousarray(q_emb, dtype=np.float32)
    d_emb = np.ascontiguousarray(d_emb, dtype=np.float32)
    if q_emb.ndim != 2 or d_emb.ndim != 2 or q_emb.shape[1] != d_emb.shape[1]:
        raise ValueError(f"embedding shapes do not match: {q_emb.shape} and {d_emb.shape}")
    if len(query_ids) != len(q_emb) or len(doc_ids) != len(d_emb):
        raise ValueError("ids and embedding rows differ in number")
    top_k = min(top_k, len(doc_ids))
    if top_k < 1:
        return {query_id: {} for query_id in query_ids}
    if backend == "auto":
        backend = "faiss" if len(doc_ids) >= FAISS_MIN_DOCS else "exact"
    if backend == "faiss":
        scores, indices = _faiss_topk(q_emb, d_emb, top_k)
    else:
        scores, indices = _exact_topk(q_emb, d_emb, top_k, batch_size)
    return {
        query_id: {doc_ids[j]: float(s) for j, s in zip(indices[i], scores[i], strict=True) if j >= 0}
        for i, query_id in enumerate(query_ids)
    }


def _exact_topk(q_emb: np.ndarray, d_emb: np.ndarray, top_k: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    all_scores, all_indices = [], []
    for start in range(0, len(q_emb), batch_size):
        sims = q_emb[start : start + batch_size] @ d_emb.T  # (batch, num_docs)
        # argpartition finds the top k in O(n); only those k are then sorted.
        part = np.argpartition(-sims, top_k - 1, axis=1)[:, :top_k]
        part_scores = np.take_along_axis(sims, part, axis=1)
        # Sort by score desc, ties by document index asc, so the order is deterministic.
        order = np.lexsort((part, -part_scores), axis=1)
        all_indices.append(np.take_along_axis(part, order, axis=1))
        all_scores.append(np.take_along_axis(part_scores, order, axis=1))
    return np.concatenate(all_scores), np.concatenate(all_indices)


def _faiss_topk(q_emb: np.ndarray, d_emb: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    index = faiss.IndexFlatIP(d_emb.shape[1])
    index.add(d_emb)
    scores, indices = index.search(q_emb, top_k)
    return scores, indices
