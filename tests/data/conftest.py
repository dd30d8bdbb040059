"""Shared fixtures: a tiny BEIR dataset written by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CORPUS = [
    {"_id": "d1", "title": "Aspirin", "text": "acetylsalicylic acid, a pain reliever"},
    {"_id": "d2", "title": "Caffeine", "text": "a stimulant found in coffee and tea"},
    {"_id": "d3", "title": "Ethanol", "text": "the alcohol in beer and wine"},
    {"_id": "d4", "title": "Water", "text": "dihydrogen monoxide, a clear liquid"},
]
QUERIES = [
    {"_id": "q1", "text": "pain reliever acid"},
    {"_id": "q2", "text": "stimulant in coffee"},
    {"_id": "q3", "text": "alcohol in wine"},
    {"_id": "q4", "text": "a query only in train"},
]
QRELS = {
    "test": [("q1", "d1", 1), ("q2", "d2", 1), ("q3", "d3", 1), ("q3", "d4", 0)],
    "train": [("q4", "d4", 1)],
}


def write_beir(root: Path, corpus=CORPUS, queries=QUERIES, qrels=QRELS) -> Path:
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    for split, rows in qrels.items():
        lines = ["query-id\tcorpus-id\tscore"] + ["\t".join(map(str, row)) for row in rows]
        (root / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def beir_dir(tmp_path: Path) -> Path:
    return write_beir(tmp_path / "tiny")
