"""Stage-1 corpus: read raw text, cut it into segments, and collate segment batches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lbr.data.jsonl import iter_jsonl, iter_text_lines
from lbr.errors import InputError

CORPUS_SUFFIXES = (".txt", ".jsonl")


@dataclass(frozen=True)
class Document:
    text: str
    source: str  # "file:line", for error messages and provenance
    next: str | None = None  # the text that follows it, if the record gives one (jsonl `next_field`)


def corpus_files(path: str | Path) -> list[Path]:
    """The corpus files under ``path`` (itself, or every .txt/.jsonl below a directory)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "corpus path does not exist")
    if path.is_file():
        if path.suffix not in CORPUS_SUFFIXES:
            raise InputError(path, f"unsupported corpus file type; expected {' or '.join(CORPUS_SUFFIXES)}")
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in CORPUS_SUFFIXES)
    if not files:
        raise InputError(path, "directory holds no .txt or .jsonl files")
    return files


def read_corpus(
    path: str | Path, *, text_field: str = "text", next_field: str = "next", max_line_bytes: int = 1_000_000
) -> list[Document]:
    """Read documents: jsonl records (``text_field``, and optionally ``next_field``: the text that
    follows the record, for the ``continue`` target) or paragraphs of .txt files.

    In a .txt file, documents are separated by blank lines.
    """
    documents: list[Document] = []
    for file in corpus_files(path):
        if file.suffix == ".jsonl":
            for line, record in iter_jsonl(
                file, required={text_field: str}, optional={next_field: str}, max_line_bytes=max_line_bytes
            ):
                if record[text_field].strip():
                    following = record.get(next_field) or ""
                    documents.append(Document(record[text_field], f"{file}:{line}", following.strip() or None))
        else:
            documents.extend(_read_paragraphs(file, max_line_bytes))
    if not documents:
        raise InputError(path, "corpus is empty (no non-blank text)")
    return documents


def _read_paragraphs(file: Path, max_line_bytes: int) -> list[Document]:
    documents, lines, start = [], [], 1
    for number, text in iter_text_lines(file, max_line_bytes=max_line_bytes):
        if text.strip():
            if not lines:
                start = number
            lines.append(text.rstrip("\n"))
        elif lines:
            documents.append(Document("\n".join(lines), f"{file}:{start}"))
            lines = []
    if lines:
        documents.append(Document("\n".join(lines), f"{file}:{start}"))
    return documents


@dataclass(frozen=True)
class Segment:
    """A stage-1 example: x, and the segment that follows it in the same document."""

    tokens: list[int]
    next_tokens: list[int] | None


def segment_documents(
    documents: list[Document], tokenizer: Any, segment_length: int, *, split_single: bool
) -> list[Segment]:
    """Cut each document into segments of at most ``segment_length`` tokens.

    A document's last segment continues with the document's own ``next`` text, if it has one.

    Args:
        split_single: for the ``continue`` target, a document that fits in one segment and has
            no ``next`` text is cut in half so that it still has a continuation to predict.
    """
    segments: list[Segment] = []
    encoded = tokenizer([doc.text for doc in documents], add_special_tokens=False)["input_ids"]
    given = [i for i, doc in enumerate(documents) if doc.next]
    tails: dict[int, list[int]] = {}
    if given:
        tail_ids = tokenizer([documents[i].next for i in given], add_special_tokens=False)["input_ids"]
        tails = {i: ids for i, ids in zip(given, tail_ids, strict=True) if ids}
    for number, tokens in enumerate(encoded):
        if not tokens:
            continue
        pieces = [tokens[i : i + segment_length] for i in range(0, len(tokens), segment_length)]
        tail = tails.get(number)
        if len(pieces) == 1 and split_single and tail is None and len(tokens) >= 2:
            half = len(tokens) // 2
            pieces = [tokens[:half], tokens[half:]]
        for index, piece in enumerate(pieces):
            following = pieces[index + 1] if index + 1 < len(pieces) else tail
            segments.append(Segment(piece, following))
    return segments


def pad_tokens(token_lists: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists: (B, m) ids and (B, m) mask. An empty list gives one pad column."""
    width = max(1, max((len(tokens) for tokens in token_lists), default=0))
    ids = torch.full((len(token_lists), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_lists), width), dtype=torch.long)
    for row, tokens in enumerate(token_lists):
        ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        mask[row, : len(tokens)] = 1
    return ids, mask


class SegmentCollator:
    """Builds a stage-1 batch: ``[x ; bottleneck]`` plus the decoder targets.

    ``num_tokens`` counts the tokens of x; ``num_target_tokens`` those the decoder is trained
    to write, for the targets named in ``targets`` (empty for a run with λ = 0; None leaves the
    count out). Together they are the tokens a step trains on, which the compute-matched
    baseline is given as many of.
    """

    def __init__(self, model: Any, max_target_length: int, targets: tuple[str, ...] | None = None) -> None:
        unknown = set(targets or ()) - {"reconstruct", "continue"}
        if unknown:
            raise ValueError(f"unknown decoder target(s) {sorted(unknown)}; choose from reconstruct, continue")
        self.model = model
        self.max_target_length = max_target_length
        self.targets = targets

    def __call__(self, segments: list[Segment], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        pad_id = self.model.tokenizer.pad_token_id
        batch = self.model.pad_with_bottleneck([segment.tokens for segment in segments])
        cap = self.max_target_length
        batch["reconstruct_ids"], batch["reconstruct_mask"] = pad_tokens([s.tokens[:cap] for s in segments], pad_id)
        # A segment without a continuation gets an all-padding target: it adds no loss.
        batch["continue_ids"], batch["continue_mask"] = pad_tokens(
            [(s.next_tokens or [])[:cap] for s in segments], pad_id
        )
        batch["num_tokens"] = torch.tensor(sum(len(s.tokens) for s in segments))
        if self.targets is not None:
            batch["num_target_tokens"] = sum(
                (batch[f"{target}_mask"].sum() for target in self.targets), torch.tensor(0, dtype=torch.long)
            )
        return batch
