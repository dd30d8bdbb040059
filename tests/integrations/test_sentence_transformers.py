"""A saved lbr directory is a sentence-transformers model with identical embeddings."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.integrations.conftest import INSTRUCTION

TEXTS = [
    "the heart of the bone",
    "acid",
    "water and carbon in the blood of a tall brain " * 3,
    "def function return value",
]


@pytest.fixture(scope="module", params=["adapter", "merged"])
def saved_dir(request, lbr_adapter_dir, lbr_merged_dir):
    return lbr_adapter_dir if request.param == "adapter" else lbr_merged_dir


def test_files_name_the_lbr_module_and_the_prompts(lbr_adapter_dir):
    modules = json.loads((lbr_adapter_dir / "modules.json").read_text())
    assert modules == [
        {"idx": 0, "name": "0", "path": "", "type": "lbr.integrations.sentence_transformers.LBRTransformer"}
    ]
    config = json.loads((lbr_adapter_dir / "config_sentence_transformers.json").read_text())
    assert config["prompts"] == {"query": INSTRUCTION, "document": ""}
    assert config["similarity_fn_name"] == "cosine"
    assert "lbr" in config["requirements"]


def test_st6_asks_for_trust_remote_code(lbr_adapter_dir):
    """ST >= 6 gates every class outside sentence_transformers.*; we document the flag for it."""
    from sentence_transformers import SentenceTransformer

    with pytest.raises(ValueError, match="trust_remote_code"):
        SentenceTransformer(str(lbr_adapter_dir))


def test_sentence_transformer_matches_lbr_encode(saved_dir):
    from sentence_transformers import SentenceTransformer

    from lbr.modeling import LBRModel

    st = SentenceTransformer(str(saved_dir), trust_remote_code=True, device="cpu")
    model = LBRModel.load(saved_dir)
    assert st.get_embedding_dimension() == model.hidden_size
    st_docs, lbr_docs = st.encode(TEXTS, batch_size=3), model.encode(TEXTS)
    np.testing.assert_allclose(st_docs, lbr_docs, atol=1e-5)
    np.testing.assert_allclose(st.encode_document(TEXTS), model.encode_document(TEXTS), atol=1e-5)
    st_queries, lbr_queries = st.encode_query(TEXTS), model.encode_query(TEXTS)
    np.testing.assert_allclose(st_queries, lbr_queries, atol=1e-5)
    # The instruction really is applied (otherwise the line above would prove little).
    assert np.abs(lbr_queries - lbr_docs).max() > 1e-3
    np.testing.assert_allclose(np.linalg.norm(st_docs, axis=1), 1.0, atol=1e-5)


def test_loader_without_flag_and_st_save_round_trip(lbr_adapter_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    from lbr.integrations.sentence_transformers import load_sentence_transformer
    from lbr.modeling import LBRModel

    reference = LBRModel.load(lbr_adapter_dir).encode_query(TEXTS)
    st = load_sentence_transformer(lbr_adapter_dir)
    np.testing.assert_allclose(st.encode_query(TEXTS), reference, atol=1e-5)
    st.save(str(tmp_path / "resaved"))
    again = SentenceTransformer(str(tmp_path / "resaved"), trust_remote_code=True)
    np.testing.assert_allclose(again.encode_query(TEXTS), reference, atol=1e-5)


def test_missing_lbr_requirement_gives_an_install_hint(lbr_adapter_dir, tmp_path):
    import shutil

    from sentence_transformers import SentenceTransformer

    copy = shutil.copytree(lbr_adapter_dir, tmp_path / "copy")
    config_path = copy / "config_sentence_transformers.json"
    config = json.loads(config_path.read_text())
    config["requirements"]["lbr"]["specifier"] = ">=999"
    config_path.write_text(json.dumps(config))
    with pytest.raises(ImportError, match="pip install"):
        SentenceTransformer(str(copy), trust_remote_code=True)
