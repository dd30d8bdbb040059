"""MTEB runs an lbr model on a local BEIR task and agrees with `lbr evaluate`."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("mteb")


def test_mteb_ndcg_matches_lbr_evaluate(lbr_adapter_dir, word_beir_dir, tmp_path, monkeypatch):
    import mteb

    from lbr.cli import main
    from lbr.integrations.mteb import LBREncoder, beir_retrieval_task

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # anything mteb might write lands here
    output = tmp_path / "lbr.json"
    argv = ["evaluate", "--model", str(lbr_adapter_dir), "--data", str(word_beir_dir), "--output", str(output)]
    assert main(argv) == 0
    ours = json.loads(output.read_text())["metrics"]["nDCG@10"]

    encoder = LBREncoder(str(lbr_adapter_dir))
    assert isinstance(encoder, mteb.models.EncoderProtocol)
    task = beir_retrieval_task(word_beir_dir, "test", name="TinyWordRetrieval")
    result = mteb.evaluate(encoder, task, cache=None, co2_tracker=False, show_progress_bar=False)
    scores = result.task_results[0].scores["test"][0]
    assert 0.0 < ours < 1.0  # a ranking with room to disagree
    assert abs(scores["ndcg_at_10"] - ours) < 1e-4
    assert abs(scores["main_score"] - ours) < 1e-4


def test_documents_use_lbr_format_and_queries_the_instruction(lbr_adapter_dir):
    from mteb.types import PromptType

    from lbr.data.beir import format_document
    from lbr.integrations.mteb import LBREncoder
    from lbr.modeling import LBRModel

    model = LBRModel.load(lbr_adapter_dir)
    encoder = LBREncoder("tiny", model=model)
    docs = [{"title": ["heart", ""], "body": ["the blood", "the bone"], "text": ["heart the blood", "the bone"]}]
    expected = model.encode_document([format_document("heart", "the blood"), "the bone"])
    split = {"task_metadata": None, "hf_split": "test", "hf_subset": "default"}
    got = encoder.encode(docs, **split, prompt_type=PromptType.document)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    mteb_style = LBREncoder("tiny", model=model, document_format="mteb")
    got = mteb_style.encode(docs, **split)
    np.testing.assert_allclose(got, model.encode_document(["heart the blood", "the bone"]), atol=1e-6)
    queries = [{"text": ["heart blood"]}]
    got = encoder.encode(queries, **split, prompt_type=PromptType.query)
    np.testing.assert_allclose(got, model.encode_query(["heart blood"]), atol=1e-6)
    assert np.abs(got - model.encode_document(["heart blood"])).max() > 1e-3
