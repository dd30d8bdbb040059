"""BEIR, pairs and knowledge readers: the good path, and every bad input naming file/line/field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lbr.data.beir import (
    format_document,
    load_beir,
    load_corpus,
    load_pairs,
    load_qrels,
    load_text_corpus,
)
from lbr.errors import InputError
from tests.data.conftest import CORPUS, QRELS, QUERIES, write_beir


def test_load_beir_keeps_only_judged_queries(beir_dir: Path) -> None:
    corpus, queries, qrels = load_beir(beir_dir, "test")
    assert set(corpus) == {r["_id"] for r in CORPUS}
    assert corpus["d1"] == {"title": "Aspirin", "text": CORPUS[0]["text"]}
    # q4 is judged only in train: not evaluated on test, and not an error.
    assert set(queries) == {"q1", "q2", "q3"} == set(qrels)
    assert qrels["q3"] == {"d3": 1, "d4": 0}
    _, train_queries, train_qrels = load_beir(beir_dir, "train")
    assert set(train_queries) == set(train_qrels) == {"q4"}
    _, all_queries, _ = load_beir(beir_dir, "test", keep_unjudged=True)
    assert set(all_queries) == {r["_id"] for r in QUERIES}


def test_query_with_only_zero_judgements_is_not_evaluated(tmp_path: Path) -> None:
    qrels = {"test": [*QRELS["test"], ("q4", "d1", 0)]}
    _, queries, loaded = load_beir(write_beir(tmp_path, qrels=qrels), "test")
    assert "q4" not in loaded and "q4" not in queries


def test_qrels_header_is_optional(tmp_path: Path) -> None:
    path = tmp_path / "q.tsv"
    path.write_text("q1\td1\t1\nq2\td2\t2\n")
    assert load_qrels(path) == {"q1": {"d1": 1}, "q2": {"d2": 2}}


def test_format_document_rule() -> None:
    assert format_document("Aspirin", " pain reliever ") == "Aspirin: pain reliever"
    assert format_document("", "pain reliever") == "pain reliever"


def _rewrite(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def _jsonl(records: list[dict]) -> list[str]:
    return [json.dumps(r) for r in records]


# Each case edits the tiny dataset and names the file, line and field the error must carry.
BAD_CASES = {
    "bad json": ("corpus.jsonl", _jsonl(CORPUS[:1]) + ['{"_id": "d2", "text": '], 2, None),
    "missing _id": ("corpus.jsonl", _jsonl([CORPUS[0], {"text": "no id"}]), 2, "_id"),
    "missing text": ("queries.jsonl", _jsonl([QUERIES[0], {"_id": "q9"}]), 2, "text"),
    "duplicate doc id": ("corpus.jsonl", _jsonl(CORPUS + [CORPUS[1]]), 5, "_id"),
    "duplicate query id": ("queries.jsonl", _jsonl(QUERIES + [QUERIES[0]]), 5, "_id"),
    "wrong type": ("corpus.jsonl", _jsonl([{"_id": "d1", "text": 3}]), 1, "text"),
    "unknown query": (
        "qrels/test.tsv",
        ["query-id\tcorpus-id\tscore", "q1\td1\t1", "qX\td1\t1"],
        3,
        "query-id",
    ),
    "unknown doc": ("qrels/test.tsv", ["query-id\tcorpus-id\tscore", "q1\tdX\t1"], 2, "corpus-id"),
    "two columns": ("qrels/test.tsv", ["query-id\tcorpus-id\tscore", "q1\td1"], 2, None),
    "score not int": ("qrels/test.tsv", ["q1\td1\thigh"], 1, "score"),
    "conflicting scores": ("qrels/test.tsv", ["q1\td1\t1", "q1\td1\t2"], 2, "score"),
    "empty corpus": ("corpus.jsonl", [], None, None),
    "empty qrels": ("qrels/test.tsv", ["query-id\tcorpus-id\tscore"], None, None),
    "no positive judgement": ("qrels/test.tsv", ["q1\td1\t0"], None, None),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_names_file_line_field(beir_dir: Path, case: str) -> None:
    name, lines, line, field = BAD_CASES[case]
    _rewrite(beir_dir / name, lines)
    with pytest.raises(InputError) as info:
        load_beir(beir_dir, "test")
    err = info.value
    assert err.path is not None and err.path.endswith(name)
    assert err.line == line
    assert err.field == field
    assert name in str(err)  # the one-line message names the file


def test_missing_paths(tmp_path: Path, beir_dir: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_beir(tmp_path / "nowhere")
    with pytest.raises(InputError, match="no qrels for split 'dev'.*test, train"):
        load_beir(beir_dir, "dev")
    (beir_dir / "corpus.jsonl").unlink()
    with pytest.raises(InputError) as info:
        load_beir(beir_dir)
    assert info.value.path.endswith("corpus.jsonl")
    with pytest.raises(InputError, match="does not exist"):
        load_corpus(tmp_path / "none.jsonl")


def test_pairs_reader(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    _rewrite(
        path,
        _jsonl(
            [
                {"query": "q", "positive": "p"},
                {"query": "q", "positive": "p", "negatives": ["n1", "n2"]},
            ]
        ),
    )
    assert load_pairs(path) == [
        {"query": "q", "positive": "p", "negatives": []},
        {"query": "q", "positive": "p", "negatives": ["n1", "n2"]},
    ]
    _rewrite(path, _jsonl([{"query": "q", "positive": "p", "negatives": ["n1", 7]}]))
    with pytest.raises(InputError) as info:
        load_pairs(path)
    assert (info.value.line, info.value.field) == (1, "negatives[1]")
    _rewrite(path, _jsonl([{"query": "q", "positive": "p"}, {"query": "q"}]))
    with pytest.raises(InputError) as info:
        load_pairs(path)
    assert (info.value.line, info.value.field) == (2, "positive")


@pytest.mark.parametrize(
    ("record", "line", "field", "message"),
    [
        ({"query": " ", "positive": "p"}, 2, "query", "is empty"),
        ({"query": "q", "positive": ""}, 2, "positive", "is empty"),
        ({"query": "q"}, 2, "positive", "missing"),
        ({"query": "q", "positive": "p", "negatives": "n"}, 2, "negatives", "expected list, got str"),
        ({"query": "q", "positive": "p", "negatives": ["n", None]}, 2, "negatives[1]", "expected str, got NoneType"),
    ],
)
def test_both_pairs_readers_give_the_same_error(tmp_path: Path, record, line, field, message) -> None:
    """``load_pairs`` and the stage-2 ``read_pairs`` share one validation: same file, line, field, text."""
    from lbr.data.pairs import read_pairs

    path = tmp_path / "pairs.jsonl"
    _rewrite(path, _jsonl([{"query": "q", "positive": "p"}, record]))
    errors = []
    for reader in (load_pairs, read_pairs):
        with pytest.raises(InputError) as info:
            reader(path)
        errors.append(str(info.value))
        assert (info.value.path, info.value.line, info.value.field) == (str(path), line, field)
    assert errors[0] == errors[1] == f"{path}:{line}: field '{field}': {message}"


def test_pairs_readers_differ_only_in_blank_negatives(tmp_path: Path) -> None:
    from lbr.data.pairs import Pair, read_pairs

    path = tmp_path / "pairs.jsonl"
    _rewrite(path, _jsonl([{"query": "q", "positive": "p", "negatives": ["n1", " ", "n2"]}]))
    assert load_pairs(path) == [{"query": "q", "positive": "p", "negatives": ["n1", " ", "n2"]}]
    assert read_pairs(path) == [Pair("q", "p", ("n1", "n2"))]  # a blank document teaches nothing
    with pytest.raises(InputError, match="over the cap"):
        load_pairs(path, max_line_bytes=10)


def test_text_corpus_reader(tmp_path: Path) -> None:
    path = tmp_path / "knowledge.jsonl"
    _rewrite(path, _jsonl([{"id": "a", "text": "x"}, {"id": 2, "text": "y"}]))
    assert load_text_corpus(path) == [{"id": "a", "text": "x"}, {"id": "2", "text": "y"}]
    _rewrite(path, _jsonl([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]))
    with pytest.raises(InputError) as info:
        load_text_corpus(path)
    assert (info.value.line, info.value.field) == (2, "id")


def _write_hf_layout(root: Path, qrels_rows: list[dict]) -> Path:
    """A local dataset in the MTEB layout (configs corpus, queries, default): no network."""
    root.mkdir(parents=True)
    _rewrite(root / "corpus.jsonl", _jsonl(CORPUS))
    _rewrite(root / "queries.jsonl", _jsonl(QUERIES))
    _rewrite(root / "test.jsonl", _jsonl(qrels_rows))
    (root / "README.md").write_text(
        "---\nconfigs:\n"
        "- config_name: corpus\n  data_files:\n  - split: corpus\n    path: corpus.jsonl\n"
        "- config_name: queries\n  data_files:\n  - split: queries\n    path: queries.jsonl\n"
        "- config_name: default\n  data_files:\n  - split: test\n    path: test.jsonl\n---\n"
    )
    return root


def test_hf_loader_on_a_local_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    rows = [{"query-id": q, "corpus-id": d, "score": s} for q, d, s in QRELS["test"]]
    root = _write_hf_layout(tmp_path / "hf", rows)
    corpus, queries, qrels = load_beir(f"hf:{root}", "test")
    expected_corpus, expected_queries, expected_qrels = load_beir(write_beir(tmp_path / "b"))
    assert (corpus, queries, qrels) == (expected_corpus, expected_queries, expected_qrels)

    bad = _write_hf_layout(tmp_path / "hf-bad", [*rows, {"query-id": "qX", "corpus-id": "d1", "score": 1}])
    with pytest.raises(InputError) as info:
        load_beir(f"hf:{bad}", "test")
    assert (info.value.line, info.value.field) == (5, "query-id")
    assert info.value.path.startswith("hf:")
