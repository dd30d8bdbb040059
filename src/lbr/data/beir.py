"""Validating readers for BEIR-format datasets, jsonl corpora, training pairs and ``hf:`` ids.

A BEIR directory holds ``corpus.jsonl`` (``{"_id", "title", "text"}``), ``queries.jsonl``
(``{"_id", "text"}``) and ``qrels/<split>.tsv`` (header ``query-id corpus-id score``).

Rules, chosen so that one queries file can serve every split (as in BEIR itself):

- a query without qrels in the chosen split is not an error; it is simply not evaluated;
- a qrels row naming an unknown query or document id is an error;
- a query whose judgements are all ``score <= 0`` has nothing to find and is not evaluated;
- a split with no positive judgement at all is an error.

Every problem raises :class:`~lbr.errors.InputError` naming the file, line and field.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from lbr.data.jsonl import DEFAULT_MAX_LINE_BYTES, iter_jsonl, iter_text_lines
from lbr.errors import InputError

Corpus = dict[str, dict[str, str]]
Queries = dict[str, str]
Qrels = dict[str, dict[str, int]]

QRELS_HEADER = ("query-id", "corpus-id", "score")
HF_PREFIX = "hf:"


def format_document(title: str, text: str) -> str:
    """The one rule that turns a corpus record into the string a dense model encodes.

    Every dense model (MiniLM, base, trained LBR) and the stage-2 pairs use it, so the
    document a model was trained on looks exactly like the one it is evaluated on.
    """
    title, text = title.strip(), text.strip()
    return f"{title}: {text}" if title else text


def load_corpus(path: str | Path, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Corpus:
    """Read a BEIR ``corpus.jsonl`` into ``{doc_id: {"title", "text"}}``."""
    corpus: Corpus = {}
    first_line: dict[str, int] = {}
    for line, record in iter_jsonl(
        path,
        required={"_id": (str, int), "text": str},
        optional={"title": str},
        max_line_bytes=max_line_bytes,
    ):
        doc_id = _check_id(path, line, record["_id"], first_line)
        title = record.get("title") or ""
        if not record["text"].strip() and not title.strip():
            raise InputError(path, "document has no text and no title", line=line, field="text")
        corpus[doc_id] = {"title": title, "text": record["text"]}
    return corpus


def read_texts(
    path: str | Path,
    *,
    id_field: str = "_id",
    text_field: str = "text",
    title_field: str = "title",
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> list[tuple[str, str]]:
    """``(id, text)`` for every text of a jsonl file, or of a .txt file (one text a line), as a
    dense model encodes them: what ``lbr encode`` and ``lbr index`` read.

    A jsonl record's id is its ``id_field``, or its line number without one; a record with a
    ``title_field`` reads as "title: text" (:func:`format_document`). An empty ``title_field``,
    or one naming the id or text field, ignores titles. A .txt file gives each non-blank line
    (lines end at "\\n" only), stripped, with its line number as id. Ids are stripped, and an
    empty text or id is an error. Errors name the file, line and field.
    """
    path = Path(path)
    _check_file(path)
    texts: list[tuple[str, str]] = []
    if path.suffix == ".jsonl":
        first_line: dict[str, int] = {}
        if title_field in (id_field, text_field):
            title_field = ""
        optional = {id_field: (str, int), **({title_field: str} if title_field else {})}
        for line, record in iter_jsonl(
            path, required={text_field: str}, optional=optional, max_line_bytes=max_line_bytes
        ):
            raw_id = record.get(id_field)
            text_id = _check_id(path, line, line if raw_id is None else raw_id, first_line, field=id_field)
            text = format_document(record.get(title_field) or "", record[text_field])
            if not text:
                raise InputError(path, "is empty", line=line, field=text_field)
            texts.append((text_id, text))
    else:
        for line, text in iter_text_lines(path, max_line_bytes=max_line_bytes):
            if text.strip():
                texts.append((str(line), text.strip()))
        if not texts:
            raise InputError(path, "file is empty (no non-blank lines)")
    return texts


def load_queries(path: str | Path, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Queries:
    """Read a BEIR ``queries.jsonl`` into ``{query_id: text}``."""
    queries: Queries = {}
    first_line: dict[str, int] = {}
    for line, record in iter_jsonl(path, required={"_id": (str, int), "text": str}, max_line_bytes=max_line_bytes):
        query_id = _check_id(path, line, record["_id"], first_line)
        if not record["text"].strip():
            raise InputError(path, "empty query", line=line, field="text")
        queries[query_id] = record["text"]
    return queries


def load_qrels(
    path: str | Path,
    queries: Mapping[str, Any] | None = None,
    corpus: Mapping[str, Any] | None = None,
    *,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Qrels:
    """Read a BEIR qrels tsv into ``{query_id: {doc_id: score}}``.

    The header row is optional. When ``queries``/``corpus`` are given, every id is checked
    against them. Only queries with at least one positive judgement are kept.
    """
    path = Path(path)
    _check_file(path)
    rows: list[tuple[int, list[str]]] = []
    # Line by line, so that a bad byte, an oversized line or a csv error names its line.
    for line, text in iter_text_lines(path, max_line_bytes=max_line_bytes):
        try:
            row = next(csv.reader([text.rstrip("\r\n")], delimiter="\t"), [])
        except csv.Error as err:  # e.g. a field over csv's own 128 KiB limit
            raise InputError(path, f"unreadable TSV row: {err}", line=line) from None
        if not row or all(not cell.strip() for cell in row):
            continue
        if not rows and line == 1 and tuple(c.strip().lower() for c in row) == QRELS_HEADER:
            continue
        rows.append((line, row))
    return _qrels_from_rows(str(path), rows, queries, corpus)


def load_beir(
    data: str | Path,
    split: str = "test",
    *,
    keep_unjudged: bool = False,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> tuple[Corpus, Queries, Qrels]:
    """Load a BEIR directory (or an ``hf:`` dataset id) for one split.

    Args:
        data: a directory with corpus.jsonl, queries.jsonl and qrels/<split>.tsv, or
            ``hf:<dataset id>`` (see :func:`load_hf_beir`).
        split: the qrels split to read.
        keep_unjudged: if False (default), the returned queries are only those with a positive
            judgement in this split: the ones that will be evaluated.
        max_line_bytes: longer lines in any of the three files are an error.

    Returns:
        ``(corpus, queries, qrels)``.
    """
    if str(data).startswith(HF_PREFIX):
        corpus, queries, qrels = load_hf_beir(str(data)[len(HF_PREFIX) :], split)
    else:
        root = Path(data)
        if not root.exists():
            raise InputError(root, "dataset directory does not exist")
        if not root.is_dir():
            raise InputError(root, "expected a BEIR dataset directory")
        qrels_path = root / "qrels" / f"{split}.tsv"
        if not qrels_path.exists():
            found = sorted(p.stem for p in (root / "qrels").glob("*.tsv"))
            raise InputError(qrels_path, f"no qrels for split '{split}' (found: {', '.join(found) or 'none'})")
        corpus = load_corpus(root / "corpus.jsonl", max_line_bytes=max_line_bytes)
        queries = load_queries(root / "queries.jsonl", max_line_bytes=max_line_bytes)
        qrels = load_qrels(qrels_path, queries, corpus, max_line_bytes=max_line_bytes)
    if not keep_unjudged:
        queries = {qid: text for qid, text in queries.items() if qid in qrels}
    return corpus, queries, qrels


def iter_pairs(
    path: str | Path, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> Iterator[tuple[str, str, list[str]]]:
    """Yield ``(query, positive, negatives)`` from a stage-2 pairs jsonl, validated.

    The one validation of the pairs format, used by :func:`load_pairs` and by the stage-2
    reader :func:`lbr.data.pairs.read_pairs`. ``query`` and ``positive`` are non-blank strings;
    ``negatives`` (optional) is a list of strings, ``[]`` when absent or null, kept as written.
    Errors name the file, line and field.
    """
    for line, record in iter_jsonl(
        path,
        required={"query": str, "positive": str},
        optional={"negatives": list},
        max_line_bytes=max_line_bytes,
    ):
        for field in ("query", "positive"):
            if not record[field].strip():
                raise InputError(path, "is empty", line=line, field=field)
        negatives = record.get("negatives") or []
        for index, negative in enumerate(negatives):
            if not isinstance(negative, str):
                raise InputError(
                    path, f"expected str, got {type(negative).__name__}", line=line, field=f"negatives[{index}]"
                )
        yield record["query"], record["positive"], negatives


def load_pairs(path: str | Path, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> list[dict[str, Any]]:
    """Read stage-2 pairs ``{"query", "positive", "negatives": [...]}`` (negatives optional)."""
    return [
        {"query": query, "positive": positive, "negatives": negatives}
        for query, positive, negatives in iter_pairs(path, max_line_bytes=max_line_bytes)
    ]


def load_text_corpus(path: str | Path) -> list[dict[str, str]]:
    """Read a stage-1 knowledge corpus ``{"id", "text"}`` (ids unique, texts non-empty)."""
    records = []
    first_line: dict[str, int] = {}
    for line, record in iter_jsonl(path, required={"id": (str, int), "text": str}):
        record_id = _check_id(path, line, record["id"], first_line, field="id")
        if not record["text"].strip():
            raise InputError(path, "empty text", line=line, field="text")
        records.append({"id": record_id, "text": record["text"]})
    return records


def load_hf_beir(name: str, split: str = "test") -> tuple[Corpus, Queries, Qrels]:
    """Load a BEIR/MTEB-style dataset through ``datasets.load_dataset``.

    Two layouts are understood: the MTEB one (configs ``corpus``, ``queries`` and ``default``,
    the last holding the qrels splits) and the BeIR one (configs ``corpus`` and ``queries``, qrels
    in the separate dataset ``<name>-qrels``). ``name`` may also be a local directory.
    Rows are validated like the files, with ``line`` = row number (1-based).
    """
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - datasets is a hard dependency
        raise InputError(HF_PREFIX + name, "the 'datasets' package is not installed") from err

    corpus_rows = _hf_table(datasets, name, "corpus")
    query_rows = _hf_table(datasets, name, "queries")

    corpus: Corpus = {}
    label = f"{HF_PREFIX}{name}/corpus"
    seen: dict[str, int] = {}
    for line, row in enumerate(corpus_rows, start=1):
        _require_fields(label, line, row, ("_id", "text"))
        doc_id = _check_id(label, line, row["_id"], seen)
        corpus[doc_id] = {"title": row.get("title") or "", "text": row["text"]}
    queries: Queries = {}
    label = f"{HF_PREFIX}{name}/queries"
    seen = {}
    for line, row in enumerate(query_rows, start=1):
        _require_fields(label, line, row, ("_id", "text"))
        queries[_check_id(label, line, row["_id"], seen)] = row["text"]

    try:
        qrels_sets = datasets.load_dataset(name, "default")
        qrels_label = f"{HF_PREFIX}{name}/default/{split}"
    except Exception:  # the BeIR layout keeps qrels in a sibling dataset
        qrels_label = f"{HF_PREFIX}{name}-qrels/{split}"
        try:
            qrels_sets = datasets.load_dataset(f"{name}-qrels")
        except Exception as err:
            raise InputError(qrels_label, f"cannot load qrels: {err}") from None
    if split not in qrels_sets:
        raise InputError(qrels_label, f"no qrels for split '{split}' (found: {', '.join(sorted(qrels_sets))})")
    rows = []
    for line, row in enumerate(qrels_sets[split], start=1):
        _require_fields(qrels_label, line, row, QRELS_HEADER)
        rows.append((line, [str(row[key]) for key in QRELS_HEADER]))
    return corpus, queries, _qrels_from_rows(qrels_label, rows, queries, corpus)


def _hf_table(datasets: Any, name: str, config: str) -> Any:
    label = f"{HF_PREFIX}{name}/{config}"
    try:
        loaded = datasets.load_dataset(name, config)
    except Exception as err:  # datasets raises many types; report one clear line
        raise InputError(label, f"cannot load: {err}") from None
    if config in loaded:  # MTEB and BeIR name the single split after the config
        return loaded[config]
    if len(loaded) == 1:
        return loaded[next(iter(loaded))]
    raise InputError(label, f"expected one split, found {', '.join(sorted(loaded))}")


def _qrels_from_rows(
    label: str,
    rows: Iterable[tuple[int, list[str]]],
    queries: Mapping[str, Any] | None,
    corpus: Mapping[str, Any] | None,
) -> Qrels:
    qrels: Qrels = {}
    judged = 0
    for line, row in rows:
        judged += 1
        if len(row) != 3:
            raise InputError(
                label,
                f"expected 3 tab-separated columns (query-id, corpus-id, score), got {len(row)}",
                line=line,
            )
        query_id, doc_id, raw_score = (cell.strip() for cell in row)
        if not query_id:
            raise InputError(label, "empty id", line=line, field="query-id")
        if not doc_id:
            raise InputError(label, "empty id", line=line, field="corpus-id")
        try:
            score = int(raw_score)
        except ValueError:
            raise InputError(label, f"expected an integer, got {raw_score!r}", line=line, field="score") from None
        if queries is not None and query_id not in queries:
            raise InputError(
                label,
                f"unknown query id {query_id!r} (not in queries)",
                line=line,
                field="query-id",
            )
        if corpus is not None and doc_id not in corpus:
            raise InputError(
                label,
                f"unknown document id {doc_id!r} (not in corpus)",
                line=line,
                field="corpus-id",
            )
        previous = qrels.setdefault(query_id, {}).get(doc_id)
        if previous is not None and previous != score:
            raise InputError(
                label,
                f"conflicting judgements for ({query_id}, {doc_id}): {previous} and {score}",
                line=line,
                field="score",
            )
        qrels[query_id][doc_id] = score
    if judged == 0:
        raise InputError(label, "file is empty (no judgements)")
    qrels = {qid: docs for qid, docs in qrels.items() if any(s > 0 for s in docs.values())}
    if not qrels:
        raise InputError(label, "no positive judgement (every score is <= 0)")
    return qrels


def _check_id(path: str | Path, line: int, raw: Any, first_line: dict[str, int], field: str = "_id") -> str:
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise InputError(path, f"expected str or int, got {type(raw).__name__}", line=line, field=field)
    value = str(raw).strip()
    if not value:
        raise InputError(path, "empty id", line=line, field=field)
    if value in first_line:
        raise InputError(
            path,
            f"duplicate id {value!r} (first seen on line {first_line[value]})",
            line=line,
            field=field,
        )
    first_line[value] = line
    return value


def _require_fields(label: str, line: int, row: Mapping[str, Any], fields: Iterable[str]) -> None:
    for field in fields:
        if row.get(field) is None:
            raise InputError(label, "missing", line=line, field=field)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(path, "file does not exist")
    if path.is_dir():
        raise InputError(path, "is a directory, expected a file")
