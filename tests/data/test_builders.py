"""Domain builders: every domain builds, splits are by document, leakage is impossible or fatal,
and the same seed gives byte-identical files."""

from __future__ import annotations

import argparse
import json
from functools import cache
from pathlib import Path

import pytest

from lbr.commands import data as data_command
from lbr.data.beir import load_beir, load_pairs, load_text_corpus
from lbr.data.builders import (
    BUILDER_VERSION,
    DOMAINS,
    DomainSource,
    build_dataset,
    built_version,
    check_no_leakage,
    common,
    load_domain,
    render_datasheet,
    write_dataset,
)
from lbr.data.builders.common import JoinedWordIndex, SourceDoc, normalize, squash
from lbr.errors import LBRError

MAX_DOCS = 200


@cache
def source(domain: str) -> DomainSource:
    """Reading a resource takes seconds (chemistry: 71k rows); read each once per session."""
    return load_domain(domain)


def build_into(domain: str, out: Path, seed: int = 0) -> Path:
    src = source(domain)
    built = build_dataset(src, max_docs=MAX_DOCS, seed=seed)
    return write_dataset(built, out, render_datasheet(src, built, max_docs=MAX_DOCS, seed=seed))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("domain", DOMAINS)
def test_domain_builds_a_valid_leak_free_dataset(domain: str, tmp_path: Path) -> None:
    out = build_into(domain, tmp_path / domain)
    corpus_test, queries_test, qrels_test = load_beir(out, "test")
    assert len(corpus_test) == MAX_DOCS
    splits = {split: load_beir(out, split)[2] for split in ("train", "dev", "test")}
    assert all(splits.values())
    docs_of = {s: {d for rel in q.values() for d in rel} for s, q in splits.items()}
    queries_of = {s: set(q) for s, q in splits.items()}
    # Split by document and by query: no overlap between any two splits.
    for a, b in (("train", "dev"), ("train", "test"), ("dev", "test")):
        assert not docs_of[a] & docs_of[b]
        assert not queries_of[a] & queries_of[b]
    assert 0.15 * MAX_DOCS <= len(qrels_test) <= 0.3 * MAX_DOCS

    # An independent leakage check, straight from the files.
    test_queries = [normalize(queries_test[q]) for q in qrels_test]
    test_docs = {normalize(f"{corpus_test[d]['title']}: {corpus_test[d]['text']}") for d in docs_of["test"]}
    for name in ("pairs.train.jsonl", "pairs.dev.jsonl"):
        pairs = load_pairs(out / name)
        assert pairs
        texts = [normalize(t) for p in pairs for t in (p["query"], p["positive"], *p["negatives"])]
        joined = "\n".join(texts)
        assert not [q for q in test_queries if q in joined], name
        assert not test_docs & set(texts), f"a test document is in {name}"
    closed_records = load_text_corpus(out / "knowledge.closed.jsonl")
    closed = "\n".join(normalize(r["text"]) for r in closed_records)
    assert not [q for q in test_queries if q in closed]
    # Nor with punctuation, spacing or joined words ignored ("tert-butylx" for "tert butyl x").
    index = JoinedWordIndex([r["text"] for r in closed_records])
    assert not [q for q in test_queries if index.hits(q)]
    open_records = load_text_corpus(out / "knowledge.open.jsonl")
    assert len(open_records) >= len(load_text_corpus(out / "knowledge.closed.jsonl"))
    sheet = (out / "DATASHEET.md").read_text()
    assert f"| qrels/test.tsv | {len(qrels_test)} queries" in sheet
    assert built_version(out) == BUILDER_VERSION


@pytest.mark.parametrize("domain", DOMAINS)
def test_same_seed_same_bytes(domain: str, tmp_path: Path) -> None:
    first = build_into(domain, tmp_path / "a", seed=3)
    second = build_into(domain, tmp_path / "b", seed=3)
    other = build_into(domain, tmp_path / "c", seed=4)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert len(files) == 10
    for name in files:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert (first / "qrels/test.tsv").read_bytes() != (other / "qrels/test.tsv").read_bytes()


def test_build_command_end_to_end(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="lbr")
    data_command.register(parser.add_subparsers(dest="command", required=True))
    outs = []
    for name in ("x", "y"):
        args = parser.parse_args(["data", "build", "medical", "--out", str(tmp_path / name), "--max-docs", "100"])
        assert args.func(args) == 0
        outs.append(tmp_path / name)
    for path in outs[0].rglob("*"):
        if path.is_file():
            assert path.read_bytes() == (outs[1] / path.relative_to(outs[0])).read_bytes()
    # Building again over a dataset removes what lbr benchmark derived from the old one.
    derived = [outs[0] / "stage1.closed.jsonl", outs[0] / "pairs.train.50.seed0.jsonl"]
    for path in derived:
        path.write_text("{}\n")
    args = parser.parse_args(["data", "build", "medical", "--out", str(outs[0]), "--max-docs", "100"])
    assert args.func(args) == 0
    assert not any(path.exists() for path in derived)
    assert (outs[0] / "corpus.jsonl").read_bytes() == (outs[1] / "corpus.jsonl").read_bytes()
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "build", "physics", "--out", str(tmp_path)])


def _toy_source() -> DomainSource:
    """40 documents; document i's text quotes the query of document i+1 (a leak to avoid)."""
    names = [f"term{i:02d} alpha{i:02d}" for i in range(41)]
    docs = [
        SourceDoc(
            doc_id=f"D{i:02d}",
            title=f"Title {i}",
            text=f"Body of {i}, see also {names[i + 1]}.",
            queries=(names[i],),
            groups=(f"g{i // 4}",),
        )
        for i in range(40)
    ]

    def render(exclude: set[str]) -> list[dict[str, str]]:
        return [{"id": d.doc_id, "text": f"{d.title}. {d.queries[0]}"} for d in docs]

    return DomainSource("toy", docs, render)


def test_construction_avoids_leaks() -> None:
    built = build_dataset(_toy_source(), max_docs=40, seed=0)
    test_ids = {row[1] for row in built.qrels["test"]}
    assert test_ids and all(pair["negatives"] for pair in built.pairs["train"][:5])
    # Knowledge records naming a test query are in open, and dropped from closed.
    closed_ids = {r["id"] for r in built.knowledge["closed"]}
    assert test_ids <= {r["id"] for r in built.knowledge["open"]}
    assert not test_ids & closed_ids


def test_leakage_check_fails_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    # Blind the construction step, so a test query leaks into a train document's text; the
    # final check (which does not use TextIndex.contains) must stop the build.
    monkeypatch.setattr(common.TextIndex, "contains", lambda self, needle: False)
    with pytest.raises(LBRError, match="leakage: .* pairs.train.jsonl"):
        build_dataset(_toy_source(), max_docs=40, seed=0)


def test_closed_knowledge_leaves_out_variant_names_and_drops_records_still_holding_one() -> None:
    # Record i spells its own document's query with hyphens and capitals ("TERM07-ALPHA07"), and
    # lists the next document's query run together ("term08alpha08") as a name, which the
    # renderer must leave out when it squashes to a test query.
    src = _toy_source()

    def render(exclude: set[str]) -> list[dict[str, str]]:
        records = []
        for i, doc in enumerate(src.docs):
            variant = doc.queries[0].replace(" ", "-").upper()
            following = src.docs[(i + 1) % len(src.docs)].queries[0].replace(" ", "")
            names = [] if squash(following) in exclude else [following]
            records.append({"id": doc.doc_id, "text": f"{doc.title}. {variant}. Also: {'; '.join(names)}."})
        return records

    built = build_dataset(DomainSource("toy", src.docs, render), max_docs=40, seed=0)
    test_ids = {row[1] for row in built.qrels["test"]}
    closed = {r["id"]: r["text"] for r in built.knowledge["closed"]}
    assert test_ids and not test_ids & set(closed)
    # Every other record stays (had the name not been left out, it would have been dropped),
    # without the names of test documents' queries.
    assert len(closed) == 40 - len(test_ids)
    for i, doc in enumerate(src.docs):
        if doc.doc_id not in test_ids:
            following_is_test = src.docs[(i + 1) % len(src.docs)].doc_id in test_ids
            assert closed[doc.doc_id].endswith("Also: .") == following_is_test, doc.doc_id


def test_joined_word_index_matches_from_word_edge_to_word_edge() -> None:
    texts = ["Also: tert-butyl isothiocyanate; x", "1-piperonylpiperazine", "methanol tincture"]
    index = JoinedWordIndex([*texts, "def initialize_options(self):"])
    assert index.hits("tert butyl isothiocyanate") == {0}
    assert index.hits("Piperonyl piperazine") == {1}
    assert index.hits("ethanol") == set() and index.hits("tin") == set()
    assert index.hits("Initialize options.") == set()
    assert index.hits("x 1") == set()  # no match runs from one text into the next ("...; x", "1-...")
    assert JoinedWordIndex(["", "Cafe\u0301 au lait", ""]).hits("café") == {1}  # NFKC
    assert index.hits("...") == set()
    assert squash("Hexahydrofarnesyl acetone") == squash("hexahydrofarnesylacetone")
    check_no_leakage(["tert butyl x"], ["tert-butylxy"], "knowledge.closed.jsonl", joined_words=True)
    with pytest.raises(LBRError, match="1 test query found in knowledge.closed.jsonl"):
        check_no_leakage(["tert butyl x"], ["(tert)-butylX"], "knowledge.closed.jsonl", joined_words=True)


def test_leakage_check_ignores_case_and_spacing() -> None:
    check_no_leakage(["Short stature"], ["tall stature", "short"], "pairs.train.jsonl")
    with pytest.raises(LBRError, match="1 test query found in knowledge.closed.jsonl"):
        check_no_leakage(["Short stature"], ["a  SHORT\nstature child"], "knowledge.closed.jsonl")
