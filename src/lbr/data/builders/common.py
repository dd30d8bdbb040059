"""Domain-independent part of the dataset builders: sampling, splits, pairs, leakage checks.

A domain builder only turns an installed resource into :class:`SourceDoc` records and can
render its knowledge corpus; everything that decides what a model may see lives here, once.
"""

from __future__ import annotations

import csv
import io
import random
import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lbr.data.beir import QRELS_HEADER, format_document
from lbr.data.jsonl import write_jsonl
from lbr.errors import LBRError

# Fractions of the sampled documents held out for test and dev (a dev split carved from
# train, for tuning). 2,000 documents give ~450 test and ~150 dev queries.
TEST_FRACTION = 0.225
DEV_FRACTION = 0.075
MAX_TRAIN_QUERIES_PER_DOC = 3
NUM_HARD_NEGATIVES = 3
# Cap on documents per finest group, so that one big family (a parent HPO term with 60
# children, a module with 200 functions) cannot fill the sample.
MAX_DOCS_PER_GROUP = 8
MIN_QUERY_CHARS = 4


@dataclass(frozen=True)
class SourceDoc:
    """One document of a domain and the queries that may retrieve it.

    Attributes:
        doc_id: stable id taken from the source (HPO id, PubChem CID, qualified name).
        title: short title, may be empty.
        text: the document body (kept short: a dense model on CPU must encode it).
        queries: candidate query strings, already cleaned and unique to this document.
        groups: keys from most to least specific (siblings, same formula, same module);
            documents sharing a key are hard negatives of each other.
    """

    doc_id: str
    title: str
    text: str
    queries: tuple[str, ...]
    groups: tuple[str, ...] = ()


@dataclass
class DomainSource:
    """What a domain builder hands to :func:`build_dataset`."""

    domain: str
    docs: list[SourceDoc]
    # Renders the stage-1 knowledge corpus; strings whose :func:`squash` is in ``exclude`` must
    # be left out where the builder knows where they are. ``open`` calls it with an empty set;
    # ``closed`` with the test queries, then drops any record that still contains one.
    render_knowledge: Callable[[set[str]], list[dict[str, str]]]
    datasheet: dict[str, Any] = field(default_factory=dict)


@dataclass
class BuiltDataset:
    """Every file of a built dataset, in memory, before it is written."""

    corpus: list[dict[str, str]]
    queries: list[dict[str, str]]
    qrels: dict[str, list[tuple[str, str, int]]]
    pairs: dict[str, list[dict[str, Any]]]
    knowledge: dict[str, list[dict[str, str]]]
    stats: dict[str, Any]


def normalize(text: str) -> str:
    """Lower-case and collapse whitespace: the form in which leakage is checked."""
    return " ".join(text.lower().split())


def squash(text: str) -> str:
    """The lower-cased words (letters, digits, underscores; NFKC-normalised, so that a ligature
    or a combining accent counts as its plain form) of ``text`` run together: the form
    in which the ``closed`` knowledge corpus compares names with the test queries, so that
    "hexahydrofarnesyl acetone", "tert-butyl isothiocyanate" and "Hammertoe" count as the test
    queries "hexahydrofarnesylacetone", "tert butyl isothiocyanate" and "Hammer toe", but
    "initialize_options" is not "Initialize options."."""
    return "".join(_words(text))


_WORDS = re.compile(r"\w+")


def _words(text: str) -> list[str]:
    return _WORDS.findall(unicodedata.normalize("NFKC", text).lower())


def _occurrences(text: str, key: str) -> Iterator[int]:
    """Every position where ``key`` starts in ``text``, overlapping ones included; none for an
    empty key."""
    position = text.find(key) if key else -1
    while position != -1:
        yield position
        position = text.find(key, position + 1)


class JoinedWordIndex:
    """Finds a test query in many texts once both are squashed, where the match starts and ends
    on a word edge of the text: "piperonyl piperazine" is found in "1-piperonylpiperazine", and
    "acetoacetic acid hexyl ester" in "acetoaceticacid, hexyl ester", but "ethanol" is not found
    in "methanol", nor "tin" in "tincture"."""

    def __init__(self, texts: Sequence[str]) -> None:
        parts: list[str] = []  # one a text: its words run together, then "\x00"
        self.starts: list[int] = []  # where each text begins in the joined string
        self.edge = bytearray()  # 1 where a word starts or ends, one byte a character
        for text in texts:
            self.starts.append(len(self.edge))
            words = _words(text)
            self.edge.append(1)
            for word in words:
                self.edge.extend(bytes(len(word) - 1))
                self.edge.append(1)
            parts.append("".join(words) + "\x00")  # no match runs from one text into the next
        self.edge.append(1)
        self.joined = "".join(parts)

    def hits(self, query: str) -> set[int]:
        """Indices of the texts that contain ``query``, word edge to word edge."""
        import bisect

        key = squash(query)
        return {
            bisect.bisect_right(self.starts, position) - 1
            for position in _occurrences(self.joined, key)
            if self.edge[position] and self.edge[position + len(key)]
        }


def clean(text: str) -> str:
    """Collapse runs of whitespace (sources wrap lines)."""
    return " ".join(text.split())


def truncate_words(text: str, max_words: int) -> str:
    """Keep at most ``max_words`` words, marking the cut with an ellipsis."""
    words = text.split()
    return text if len(words) <= max_words else " ".join(words[:max_words]) + " …"


def unique_queries(docs: Iterable[SourceDoc]) -> list[SourceDoc]:
    """Drop query strings that name more than one document, and queries found verbatim in
    their own document (both would make the benchmark measure string matching)."""
    docs = list(docs)
    owners: dict[str, set[str]] = defaultdict(set)
    for doc in docs:
        for query in doc.queries:
            owners[normalize(query)].add(doc.doc_id)
    kept = []
    for doc in docs:
        own_text = normalize(format_document(doc.title, doc.text))
        seen: set[str] = set()
        queries = []
        for query in doc.queries:
            key = normalize(query)
            if len(key) >= MIN_QUERY_CHARS and len(owners[key]) == 1 and key not in seen and key not in own_text:
                seen.add(key)
                queries.append(query)
        if queries:
            kept.append(SourceDoc(doc.doc_id, doc.title, doc.text, tuple(sorted(queries)), doc.groups))
    return kept


class TextIndex:
    """Substring search of many needles in many texts, on normalised text.

    One ``str.find`` loop over a joined string is fast enough for thousands of queries over
    tens of megabytes, and needs no extra dependency.
    """

    def __init__(self, texts: Sequence[str]) -> None:
        self.normalized = [normalize(text) for text in texts]
        self.joined = "\x00".join(self.normalized)
        self.starts: list[int] = []
        offset = 0
        for text in self.normalized:
            self.starts.append(offset)
            offset += len(text) + 1

    def contains(self, needle: str) -> bool:
        return normalize(needle) in self.joined

    def hits(self, needle: str) -> set[int]:
        """Indices of the texts that contain ``needle``."""
        import bisect

        positions = _occurrences(self.joined, normalize(needle))
        return {bisect.bisect_right(self.starts, position) - 1 for position in positions}


def check_no_leakage(
    test_queries: Iterable[str], texts: Sequence[str], where: str, *, joined_words: bool = False
) -> None:
    """Raise :class:`LBRError` if any test query string occurs in ``texts``: lower-cased and
    whitespace-collapsed, by substring; with ``joined_words``, also by :class:`JoinedWordIndex`
    (punctuation, spacing and joined or split words ignored).

    Args:
        test_queries: the held-out query strings.
        texts: everything a training stage may read (pair queries, positives, negatives, or
            knowledge records).
        where: names the offending file in the message.
    """
    # The substring check is deliberately independent of TextIndex, which the construction step
    # uses: a bug there must not hide itself here. The joined-word check reuses JoinedWordIndex
    # (a second implementation would be as long again), so it guards the dropping, not the index.
    test_queries = list(test_queries)
    joined = "\x00".join(normalize(text) for text in texts)
    leaks = {query for query in test_queries if normalize(query) in joined}
    if joined_words:
        index = JoinedWordIndex(texts)
        leaks |= {query for query in test_queries if index.hits(query)}
    leaks = sorted(leaks)
    if leaks:
        shown = "; ".join(repr(q) for q in leaks[:5])
        raise LBRError(
            f"leakage: {len(leaks)} test quer{'y' if len(leaks) == 1 else 'ies'} found in "
            f"{where}: {shown}{' …' if len(leaks) > 5 else ''}"
        )


def pair_texts(pairs: Iterable[dict[str, Any]]) -> list[str]:
    """Every string of a pairs list: queries, positives and negatives."""
    texts: list[str] = []
    for pair in pairs:
        texts.append(pair["query"])
        texts.append(pair["positive"])
        texts.extend(pair["negatives"])
    return texts


def sample_docs(docs: list[SourceDoc], max_docs: int, rng: random.Random) -> list[SourceDoc]:
    """Sample whole sibling groups so that hard negatives stay in the sample.

    Groups with at least two documents come first (shuffled), then singletons (shuffled);
    each group contributes at most :data:`MAX_DOCS_PER_GROUP` documents.
    """
    by_group: dict[str, list[SourceDoc]] = defaultdict(list)
    for doc in sorted(docs, key=lambda d: d.doc_id):
        by_group[doc.groups[0] if doc.groups else doc.doc_id].append(doc)
    keys = sorted(by_group)
    rng.shuffle(keys)
    keys.sort(key=lambda key: len(by_group[key]) < 2)  # stable: keeps the shuffled order
    chosen: list[SourceDoc] = []
    for key in keys:
        members = by_group[key]
        if len(members) > MAX_DOCS_PER_GROUP:
            members = rng.sample(members, MAX_DOCS_PER_GROUP)
        chosen.extend(members[: max_docs - len(chosen)])
        if len(chosen) >= max_docs:
            break
    return sorted(chosen, key=lambda d: d.doc_id)


def build_dataset(source: DomainSource, max_docs: int, seed: int) -> BuiltDataset:
    """Sample, split by document, make pairs and knowledge corpora, and check for leakage."""
    if max_docs < 10:
        raise LBRError(f"--max-docs must be at least 10, got {max_docs}")
    rng = random.Random(seed)
    docs = sample_docs(unique_queries(source.docs), max_docs, rng)
    if len(docs) < 10:
        raise LBRError(f"{source.domain}: only {len(docs)} usable documents in the source")

    # Split by document: a test document contributes no train or dev pair.
    order = list(docs)
    rng.shuffle(order)
    n_test = max(1, round(TEST_FRACTION * len(order)))
    n_dev = max(1, round(DEV_FRACTION * len(order)))
    split_of = {doc.doc_id: "test" for doc in order[:n_test]}
    split_of.update({doc.doc_id: "dev" for doc in order[n_test : n_test + n_dev]})
    split_of.update({doc.doc_id: "train" for doc in order[n_test + n_dev :]})
    by_split: dict[str, list[SourceDoc]] = {"train": [], "dev": [], "test": []}
    for doc in docs:
        by_split[split_of[doc.doc_id]].append(doc)

    rendered = {doc.doc_id: format_document(doc.title, doc.text) for doc in docs}
    negatives_pool = _group_index(by_split["train"])

    def make_pairs(split_docs: list[SourceDoc], per_doc: int, forbidden: TextIndex | None):
        queries: list[tuple[str, str, str]] = []  # (query id, text, doc id)
        pairs = []
        for doc in split_docs:
            candidates = list(doc.queries)
            rng.shuffle(candidates)
            if forbidden is not None:
                candidates = [q for q in candidates if not forbidden.contains(q)]
            for query in sorted(candidates[:per_doc]):
                query_id = f"{doc.doc_id}#q{doc.queries.index(query)}"
                queries.append((query_id, query, doc.doc_id))
                negatives = _hard_negatives(doc, negatives_pool, rng)
                pairs.append(
                    {
                        "query": query,
                        "positive": rendered[doc.doc_id],
                        "negatives": [rendered[d] for d in negatives],
                    }
                )
        return queries, pairs

    train_queries, train_pairs = make_pairs(by_split["train"], MAX_TRAIN_QUERIES_PER_DOC, None)
    # Dev and test queries are chosen among strings no earlier training file contains, so the
    # check below guards the construction instead of rejecting most seeds.
    dev_queries, dev_pairs = make_pairs(by_split["dev"], 1, TextIndex(pair_texts(train_pairs)))
    seen_by_training = TextIndex(pair_texts(train_pairs) + pair_texts(dev_pairs))
    test_queries, _ = make_pairs(by_split["test"], 1, seen_by_training)
    test_strings = [text for _, text, _ in test_queries]

    check_no_leakage(test_strings, pair_texts(train_pairs), "pairs.train.jsonl")
    check_no_leakage(test_strings, pair_texts(dev_pairs), "pairs.dev.jsonl")

    knowledge_open = source.render_knowledge(set())
    # Spelling variants of a test query (common among chemical names) count as the query: names
    # are left out when they squash to one; a record is dropped if one still occurs in it, by
    # substring or word edge to word edge with punctuation, spacing and joins ignored.
    excluded = {squash(q) for q in test_strings}
    closed_candidates = source.render_knowledge(excluded)
    closed_texts = [record["text"] for record in closed_candidates]
    dropped: set[int] = set()
    for index in (TextIndex(closed_texts), JoinedWordIndex(closed_texts)):
        for query in test_strings:
            dropped |= index.hits(query)
    del index  # tens of megabytes on chemistry; the check below builds its own
    knowledge_closed = [r for i, r in enumerate(closed_candidates) if i not in dropped]
    closed_kept = [r["text"] for r in knowledge_closed]
    check_no_leakage(test_strings, closed_kept, "knowledge.closed.jsonl", joined_words=True)

    corpus = [{"_id": doc.doc_id, "title": doc.title, "text": doc.text} for doc in sorted(docs, key=lambda d: d.doc_id)]
    all_queries = sorted(train_queries + dev_queries + test_queries)
    qrels = {
        name: sorted((qid, did, 1) for qid, _, did in split_queries)
        for name, split_queries in (
            ("train", train_queries),
            ("dev", dev_queries),
            ("test", test_queries),
        )
    }
    stats = {
        "documents": len(corpus),
        "documents_per_split": {name: len(split) for name, split in by_split.items()},
        "queries_per_split": {name: len(rows) for name, rows in qrels.items()},
        "pairs": {"train": len(train_pairs), "dev": len(dev_pairs)},
        "pairs_with_hard_negatives": {
            "train": sum(1 for p in train_pairs if p["negatives"]),
            "dev": sum(1 for p in dev_pairs if p["negatives"]),
        },
        "knowledge_records": {
            "open": len(knowledge_open),
            "closed": len(knowledge_closed),
            "closed_dropped": len(dropped),
        },
        "knowledge_chars": {
            "open": sum(len(r["text"]) for r in knowledge_open),
            "closed": sum(len(r["text"]) for r in knowledge_closed),
        },
        "test_docs_without_query": len(by_split["test"]) - len(test_queries),
        "mean_doc_words": round(sum(len(d["text"].split()) for d in corpus) / len(corpus), 1),
    }
    return BuiltDataset(
        corpus=corpus,
        queries=[{"_id": qid, "text": text} for qid, text, _ in all_queries],
        qrels=qrels,
        pairs={"train": train_pairs, "dev": dev_pairs},
        knowledge={"open": knowledge_open, "closed": knowledge_closed},
        stats=stats,
    )


def _group_index(docs: list[SourceDoc]) -> list[dict[str, list[str]]]:
    """For each group level, group key -> sorted doc ids (train documents only)."""
    levels = max((len(doc.groups) for doc in docs), default=0)
    index: list[dict[str, list[str]]] = [defaultdict(list) for _ in range(levels)]
    for doc in sorted(docs, key=lambda d: d.doc_id):
        for level, key in enumerate(doc.groups):
            index[level][key].append(doc.doc_id)
    return index


def _hard_negatives(doc: SourceDoc, pool: list[dict[str, list[str]]], rng: random.Random) -> list[str]:
    """Up to :data:`NUM_HARD_NEGATIVES` train documents sharing the most specific group."""
    chosen: list[str] = []
    for level, key in enumerate(doc.groups):
        if level >= len(pool):
            break
        candidates = [d for d in pool[level].get(key, []) if d != doc.doc_id and d not in chosen]
        need = NUM_HARD_NEGATIVES - len(chosen)
        chosen.extend(rng.sample(candidates, min(need, len(candidates))))
        if len(chosen) >= NUM_HARD_NEGATIVES:
            break
    return chosen


def write_dataset(built: BuiltDataset, out: str | Path, datasheet: str) -> Path:
    """Write every file of a built dataset into ``out`` (created if needed). Files that
    `lbr benchmark` derives from an earlier build there (its stage-1 corpora and pair samples)
    are removed, so that they are derived again from the new files."""
    out = Path(out)
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    for derived in [*out.glob("stage1.*.jsonl"), *out.glob("pairs.train.*.seed*.jsonl")]:
        derived.unlink()
    write_jsonl(out / "corpus.jsonl", built.corpus)
    write_jsonl(out / "queries.jsonl", built.queries)
    for split, rows in built.qrels.items():
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
        writer.writerow(QRELS_HEADER)
        writer.writerows(rows)
        (out / "qrels" / f"{split}.tsv").write_text(buffer.getvalue(), encoding="utf-8")
    for split, pairs in built.pairs.items():
        write_jsonl(out / f"pairs.{split}.jsonl", pairs)
    for setting, records in built.knowledge.items():
        write_jsonl(out / f"knowledge.{setting}.jsonl", records)
    (out / "DATASHEET.md").write_text(datasheet, encoding="utf-8")
    return out


_WORD = re.compile(r"\w")


def has_letters(text: str) -> bool:
    """True if the string has at least two letters (rejects bare numbers and codes)."""
    return sum(1 for ch in text if ch.isalpha()) >= 2 and bool(_WORD.search(text))
