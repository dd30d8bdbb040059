"""MTEB: an lbr model as an MTEB encoder, and a BEIR directory as a local MTEB retrieval task.

Written against mteb 2.x (``mteb.models.EncoderProtocol``: ``encode(inputs: DataLoader, *,
task_metadata, hf_split, hf_subset, prompt_type, **kwargs)`` plus ``similarity`` and
``mteb_model_meta``)::

    import mteb
    from lbr.integrations.mteb import LBREncoder

    model = LBREncoder("runs/medical-lbr")
    results = mteb.evaluate(model, mteb.get_tasks(tasks=["NFCorpus"]))

Queries are encoded with the model's query instruction (``encode_query``), everything else as a
document. For documents, MTEB hands over ``title`` and ``body`` besides its own joined
``text`` (``"title text"``); by default the wrapper rebuilds the string with lbr's own rule
(:func:`lbr.data.beir.format_document`, ``"title: text"``), so a model sees documents exactly
as in training and in ``lbr evaluate``. ``document_format="mteb"`` uses MTEB's string instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lbr.data.beir import format_document, load_beir
from lbr.errors import ConfigError, LBRError

try:
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.task_metadata import TaskMetadata
    from mteb.models.abs_encoder import AbsEncoder
    from mteb.models.model_meta import ModelMeta, ScoringFunction
    from mteb.types import PromptType
except ImportError as err:  # mteb is an optional extra
    raise LBRError(f"lbr.integrations.mteb needs mteb 2.x (pip install mteb): {err}") from err

DOCUMENT_FORMATS = ("lbr", "mteb")


class LBREncoder(AbsEncoder):
    """An :class:`~lbr.modeling.LBRModel` behind MTEB's encoder interface.

    Args:
        model_name: a saved lbr model directory (what ``mteb run -m`` would pass).
        revision: ignored (a local directory has none); recorded in the results.
        device: ``cpu``/``cuda``; default: where the model loads.
        model: an already loaded LBRModel (then ``model_name`` only names it in the results).
        document_format: ``lbr`` (``"title: text"``, as in training) or ``mteb`` (``"title text"``).
        batch_size: default encoding batch size (MTEB's ``encode_kwargs`` wins).
    """

    def __init__(
        self,
        model_name: str,
        revision: str | None = None,
        *,
        device: str | None = None,
        model: Any = None,
        document_format: str = "lbr",
        batch_size: int = 32,
        **kwargs: Any,
    ) -> None:
        if document_format not in DOCUMENT_FORMATS:
            raise ConfigError(f"document_format must be one of {', '.join(DOCUMENT_FORMATS)}, not {document_format!r}")
        if model is None:
            from lbr.modeling import LBRModel

            model = LBRModel.load(model_name)
        if device is not None:
            model.to(device)
        self.model = model
        self.document_format = document_format
        self.batch_size = batch_size
        name = Path(str(model_name)).name or str(model_name)
        # ModelMeta wants "organisation/name"; a local directory has no organisation.
        self.mteb_model_meta = ModelMeta.create_empty(
            {
                "name": name if "/" in name else f"lbr/{name}",
                "revision": revision or "local",
                "embed_dim": model.hidden_size,
                "max_tokens": model.config.max_length,
                "similarity_fn_name": ScoringFunction.COSINE,  # model_copy does not coerce strings
                "use_instructions": bool(model.query_instruction),
                "framework": ["PyTorch"],
                "n_parameters": sum(p.numel() for p in model.parameters()),
                "adapted_from": model.config.model,
            }
        )

    def encode(
        self,
        inputs: Iterable[Mapping[str, Any]],
        *,
        task_metadata: TaskMetadata,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Embed every batch of ``inputs`` (an MTEB DataLoader); returns (N, d) float32."""
        is_query = prompt_type == PromptType.query
        texts: list[str] = []
        for batch in inputs:
            texts.extend(self._batch_texts(batch, is_query))
        options = {
            "batch_size": int(kwargs.get("batch_size") or self.batch_size),
            "show_progress_bar": bool(kwargs.get("show_progress_bar", False)),
        }
        if is_query:
            return self.model.encode_query(texts, **options)
        return self.model.encode_document(texts, **options)

    def _batch_texts(self, batch: Mapping[str, Any], is_query: bool) -> list[str]:
        if "text" not in batch:
            raise ConfigError(f"lbr encodes text only; this task gives {sorted(batch)}")
        if is_query or self.document_format == "mteb" or "body" not in batch:
            return [str(text) for text in batch["text"]]
        titles = batch.get("title") or [""] * len(batch["body"])
        return [format_document(title or "", body or "") for title, body in zip(titles, batch["body"], strict=True)]


def beir_retrieval_task(
    data: str | Path, split: str = "test", *, name: str | None = None, language: str = "eng-Latn"
) -> AbsTaskRetrieval:
    """An MTEB retrieval task over a local BEIR directory (no download, no network).

    Queries are those with a positive judgement in ``split`` (as ``lbr evaluate`` scores them),
    read through :func:`lbr.data.beir.load_beir`, so the same validation applies.
    """
    from datasets import Dataset

    corpus, queries, qrels = load_beir(data, split)
    task_name = name or f"LBR{Path(data).resolve().name.title().replace('-', '').replace('_', '')}Retrieval"
    metadata = TaskMetadata(
        name=task_name,
        type="Retrieval",
        description=f"Local BEIR directory {data} (split {split}), loaded by lbr.",
        reference=None,
        dataset={"path": str(data), "revision": "local"},
        category="t2t",
        modalities=["text"],
        eval_splits=[split],
        eval_langs=[language],
        main_score="ndcg_at_10",
        date=None,
        domains=None,
        task_subtypes=None,
        license=None,
        annotations_creators=None,
        dialect=None,
        sample_creation=None,
        bibtex_citation=None,
    )
    split_data = {
        "corpus": Dataset.from_list(
            [{"id": doc_id, "title": doc["title"], "text": doc["text"]} for doc_id, doc in corpus.items()]
        ),
        "queries": Dataset.from_list([{"id": query_id, "text": queries[query_id]} for query_id in qrels]),
        "relevant_docs": {query_id: dict(judged) for query_id, judged in qrels.items()},
        "top_ranked": None,
    }

    class LocalBEIRRetrieval(AbsTaskRetrieval):
        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            self.dataset = {"default": {split: split_data}}
            self.data_loaded = True

    LocalBEIRRetrieval.metadata = metadata
    LocalBEIRRetrieval.__name__ = task_name
    return LocalBEIRRetrieval()
