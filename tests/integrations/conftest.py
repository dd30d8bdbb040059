"""Saved tiny lbr models (adapter and merged) whose weights all matter, and a tiny BEIR set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

INSTRUCTION = "find the "
STAGES = [
    {
        "stage": "stage1",
        "corpus": "data/medical/knowledge.open.jsonl",
        "ib_weight": 1.0,
        "know_weight": 1.0,
        "target": "both",
        "train": {"learning_rate": 0.0002, "max_steps": 40, "seed": 42},
        "final": {"loss": 3.25},
        "documents": 120,
        "segments": 480,
    },
    {
        "stage": "stage2",
        "pairs": "data/medical/pairs.train.jsonl",
        "gen_weight": 0.1,
        "temperature": 0.05,
        "query_instruction": INSTRUCTION,
        "train": {"learning_rate": 0.0001, "max_steps": 30, "seed": 42},
        "final": {"loss": 0.5},
        "pairs_count": 64,
    },
]


def save_tiny_lbr(base_dir: Path, out: Path, *, merge: bool, seed: int = 0) -> Path:
    """Build an LBR model on the tiny Llama, move every trained part off its init, save it."""
    from lbr.config import ModelConfig
    from lbr.integrations import write_ecosystem_files
    from lbr.modeling import LBRModel

    config = ModelConfig(model=str(base_dir), num_bottleneck_tokens=3, lora_r=4, lora_alpha=8, max_length=64)
    model = LBRModel.build(config, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        # LoRA B starts at zero (a no-op adapter): perturb it so the adapter changes embeddings.
        for name, param in model.named_parameters():
            if "lora_B" in name or name == "bottleneck":
                param.add_(0.5 * torch.randn(param.shape, generator=generator))
    model.query_instruction = INSTRUCTION
    model.metadata = {"stages": STAGES}
    model.save(out, merge=merge)
    write_ecosystem_files(out, model)  # what LBRModel.save's hook will do
    return out


@pytest.fixture(scope="session")
def lbr_adapter_dir(tiny_model_dir, tmp_path_factory) -> Path:
    return save_tiny_lbr(tiny_model_dir, tmp_path_factory.mktemp("lbr-adapter"), merge=False)


@pytest.fixture(scope="session")
def lbr_merged_dir(tiny_model_dir, tmp_path_factory) -> Path:
    return save_tiny_lbr(tiny_model_dir, tmp_path_factory.mktemp("lbr-merged"), merge=True)


@pytest.fixture(scope="session")
def other_lbr_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """Same architecture, different weights: must not be accepted by an index of the others."""
    return save_tiny_lbr(tiny_model_dir, tmp_path_factory.mktemp("lbr-other"), merge=False, seed=7)


# Words from the tiny tokenizer's vocabulary, so every text tokenises to distinct ids.
CORPUS = [
    {"_id": "d01", "title": "heart", "text": "the heart is a muscle of blood"},
    {"_id": "d02", "title": "", "text": "the liver and kidney with blood"},
    {"_id": "d03", "title": "bone", "text": "abnormal growth of bone in the hand and foot"},
    {"_id": "d04", "title": "skin", "text": "small skin defect on the hand"},
    {"_id": "d05", "title": "", "text": "benzoic acid is an acid with phenyl"},
    {"_id": "d06", "title": "sodium", "text": "sodium chloride in water"},
    {"_id": "d07", "title": "code", "text": "def function return value if none"},
    {"_id": "d08", "title": "", "text": "import class self print string"},
    {"_id": "d09", "title": "brain", "text": "seizure of the brain increased"},
    {"_id": "d10", "title": "eye", "text": "eye and ear anomaly small stature"},
    {"_id": "d11", "title": "", "text": "methyl ethyl carbon hydrogen oxygen"},
    {"_id": "d12", "title": "list", "text": "for while list dict number"},
]
QUERIES = [
    {"_id": "q1", "text": "heart blood"},
    {"_id": "q2", "text": "bone growth hand"},
    {"_id": "q3", "text": "acid with phenyl"},
    {"_id": "q4", "text": "function return value"},
    {"_id": "q5", "text": "brain seizure"},
    {"_id": "q6", "text": "small stature anomaly"},
    {"_id": "q7", "text": "a query judged only in train"},
]
QRELS = {
    "test": [
        ("q1", "d01", 2),
        ("q1", "d02", 1),
        ("q2", "d03", 2),
        ("q2", "d04", 1),
        ("q2", "d10", 0),
        ("q3", "d05", 1),
        ("q3", "d11", 1),
        ("q4", "d07", 2),
        ("q4", "d08", 1),
        ("q4", "d12", 1),
        ("q5", "d09", 1),
        ("q6", "d10", 2),
        ("q6", "d04", 1),
    ],
    "train": [("q7", "d06", 1)],
}


@pytest.fixture(scope="session")
def word_beir_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("word-beir")
    (root / "qrels").mkdir()
    (root / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in CORPUS))
    (root / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in QUERIES))
    for split, rows in QRELS.items():
        lines = ["query-id\tcorpus-id\tscore"] + ["\t".join(map(str, row)) for row in rows]
        (root / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root
