from __future__ import annotations

import json

import pytest

from lbr.config import Stage1Config
from lbr.data.corpus import read_corpus, segment_documents
from lbr.errors import ConfigError, InputError
from tests.conftest import make_tokenizer


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_a_records_next_text_continues_its_last_segment(tmp_path):
    corpus = tmp_path / "knowledge.jsonl"
    records = [
        {"text": "the a of and to in", "next": "heart eye"},  # two segments, then its next text
        {"text": "acid water"},  # no next: halved for `continue`
        {"text": "bone skin", "next": "  blood  "},  # fits one segment but has a next: not halved
        {"text": "sodium", "next": ""},  # an empty next is no next
    ]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records))
    documents = read_corpus(corpus)
    assert [d.next for d in documents] == ["heart eye", None, "blood", None]
    tokenizer = make_tokenizer()
    segments = segment_documents(documents, tokenizer, 4, split_single=True)
    t = lambda text: _ids(tokenizer, text)  # noqa: E731
    assert [(s.tokens, s.next_tokens) for s in segments] == [
        (t("the a of and"), t("to in")),
        (t("to in"), t("heart eye")),
        (t("acid"), t("water")),
        (t("water"), None),
        (t("bone skin"), t("blood")),
        (t("sodium"), None),  # one token: nothing to halve
    ]
    # For `reconstruct` nothing is halved, and the next text still follows the last segment.
    plain = segment_documents(documents, tokenizer, 4, split_single=False)
    assert [(s.tokens, s.next_tokens) for s in plain][2] == (t("acid water"), None)
    assert [(s.tokens, s.next_tokens) for s in plain][1] == (t("to in"), t("heart eye"))


def test_a_next_field_of_the_wrong_type_names_file_line_and_field(tmp_path):
    corpus = tmp_path / "knowledge.jsonl"
    corpus.write_text(json.dumps({"text": "acid"}) + "\n" + json.dumps({"text": "water", "next": ["x"]}) + "\n")
    with pytest.raises(InputError, match=r"knowledge.jsonl:2: field 'next'"):
        read_corpus(corpus)
    # Another field name is honoured, and "next" is then ordinary data.
    documents = read_corpus(corpus, next_field="then")
    assert [d.next for d in documents] == [None, None]


def test_next_field_must_differ_from_text_field():
    with pytest.raises(ConfigError, match="next_field and text_field"):
        Stage1Config(next_field="text")
