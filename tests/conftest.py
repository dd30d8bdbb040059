"""Shared fixtures: a tiny random Llama and a tiny word-level tokenizer, built offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

WORDS = (
    "the a of and to in is with by for on that as are from at or this be an which short tall "
    "abnormal growth hand foot heart eye ear bone skin brain kidney liver muscle blood acid "
    "benzoic chloride sodium water carbon oxygen hydrogen methyl ethyl phenyl def return if "
    "else for while print value list dict string number function class import self none true "
    "false stature seizure defect anomaly increased decreased small large"
).split()


def make_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "[PAD]": 1, "[EOS]": 2}
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")


def make_model(vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=1,
        eos_token_id=2,
        bos_token_id=2,
    )
    return LlamaForCausalLM(config)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved tiny random Llama + tokenizer, usable as ``--model DIR``."""
    path = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = make_tokenizer()
    make_model(len(tokenizer)).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory) -> Path:
    """A small stage-1 jsonl corpus of word salad from the tiny vocabulary."""
    import random

    rng = random.Random(0)
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    with path.open("w") as handle:
        for index in range(24):
            words = [rng.choice(WORDS) for _ in range(rng.randint(5, 30))]
            handle.write(json.dumps({"id": str(index), "text": " ".join(words)}) + "\n")
    return path


@pytest.fixture(scope="session")
def pairs_file(tmp_path_factory) -> Path:
    import random

    rng = random.Random(1)
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    with path.open("w") as handle:
        for _ in range(20):
            query = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 5)))
            positive = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 15)))
            record = {"query": query, "positive": positive}
            if rng.random() < 0.5:
                record["negatives"] = [" ".join(rng.choice(WORDS) for _ in range(8))]
            handle.write(json.dumps(record) + "\n")
    return path


@pytest.fixture()
def model_config(tiny_model_dir):
    from lbr.config import ModelConfig

    return ModelConfig(model=str(tiny_model_dir), num_bottleneck_tokens=3, lora_r=4, lora_alpha=8, max_length=64)
