"""Stage-2 pairs: read ``{query, positive, negatives?}`` jsonl and collate contrastive batches."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lbr.data.beir import iter_pairs
from lbr.data.corpus import pad_tokens
from lbr.data.jsonl import DEFAULT_MAX_LINE_BYTES


@dataclass(frozen=True)
class Pair:
    query: str
    positive: str
    negatives: tuple[str, ...] = field(default_factory=tuple)


def read_pairs(path: str | Path, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> list[Pair]:
    """Read and validate stage-2 pairs; errors name the file, line and field.

    Validation is :func:`lbr.data.beir.iter_pairs`; blank negatives are dropped here, as a
    blank document teaches the model nothing.
    """
    return [
        Pair(query, positive, tuple(negative for negative in negatives if negative.strip()))
        for query, positive, negatives in iter_pairs(path, max_line_bytes=max_line_bytes)
    ]


def text_hash(text: str) -> int:
    """A stable signed 64-bit hash of a text (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


class PairCollator:
    """Builds a stage-2 batch with exactly ``num_negatives`` negatives per pair.

    Pairs with fewer hard negatives are topped up with random positives of other pairs, so
    every process holds the same number of documents (needed to gather them under DDP).
    """

    def __init__(
        self,
        model: Any,
        pairs: list[Pair],
        *,
        num_negatives: int,
        query_instruction: str,
        max_query_length: int,
        max_document_length: int,
    ) -> None:
        self.model = model
        self.pool = [pair.positive for pair in pairs]
        # With a single distinct positive there is no "other" document to draw: allow repeats
        # (otherwise the loop below would never end).
        self.single_positive = len(set(self.pool)) <= 1
        self.num_negatives = num_negatives
        self.query_instruction = query_instruction
        self.max_query_length = max_query_length
        self.max_document_length = max_document_length

    def __call__(self, pairs: list[Pair], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        negatives: list[str] = []
        for pair in pairs:
            chosen = list(pair.negatives[: self.num_negatives])
            while len(chosen) < self.num_negatives:
                index = int(torch.randint(len(self.pool), (1,), generator=generator))
                if self.pool[index] != pair.positive or self.single_positive:
                    chosen.append(self.pool[index])
            negatives.extend(chosen)
        documents = [pair.positive for pair in pairs] + negatives
        query_features = self.model.tokenize([self.query_instruction + p.query for p in pairs], self.max_query_length)
        doc_features = self.model.tokenize(documents, self.max_document_length)
        positive_tokens = self.model.tokenizer(
            [pair.positive for pair in pairs],
            truncation=True,
            max_length=self.max_document_length,
            add_special_tokens=False,
        )["input_ids"]
        target_ids, target_mask = pad_tokens(positive_tokens, self.model.tokenizer.pad_token_id)
        return {
            "query_ids": query_features["input_ids"],
            "query_mask": query_features["attention_mask"],
            "doc_ids": doc_features["input_ids"],
            "doc_mask": doc_features["attention_mask"],
            "doc_hash": torch.tensor([text_hash(text) for text in documents], dtype=torch.long),
            "positive_target_ids": target_ids,
            "positive_target_mask": target_mask,
            "num_tokens": query_features["text_mask"].sum() + doc_features["text_mask"].sum(),
        }
