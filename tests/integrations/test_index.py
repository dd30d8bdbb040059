"""`lbr index` / `lbr search`: persisted, exact, model-checked, extendable."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lbr.cli import main
from lbr.data.beir import format_document
from lbr.errors import InputError
from lbr.integrations.index import LBRIndex, model_fingerprint
from tests.integrations.conftest import CORPUS


@pytest.fixture(scope="module")
def built_index(lbr_adapter_dir, word_beir_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("idx") / "index"
    corpus = word_beir_dir / "corpus.jsonl"
    assert main(["index", "--model", str(lbr_adapter_dir), "--corpus", str(corpus), "--output", str(output)]) == 0
    return output


def test_index_files_are_safe_formats_and_record_the_model(built_index, lbr_adapter_dir):
    names = sorted(path.name for path in built_index.iterdir())
    assert names == ["docs-0001.jsonl", "index.json", "vectors-0001.faiss"]
    meta = json.loads((built_index / "index.json").read_text())
    assert meta["num_documents"] == len(CORPUS)
    assert meta["model"]["fingerprint"] == model_fingerprint(lbr_adapter_dir)
    assert meta["model"]["dim"] == 32


def test_search_ranks_exactly_like_brute_force(built_index, lbr_adapter_dir, capsys):
    from lbr.modeling import LBRModel

    model = LBRModel.load(lbr_adapter_dir)
    d_emb = model.encode_document([format_document(d["title"], d["text"]) for d in CORPUS])
    q_emb = model.encode_query(["heart blood"])
    scores = (q_emb @ d_emb.T)[0]
    order = np.argsort(-scores)[:5]

    capsys.readouterr()
    assert main(["search", "--index", str(built_index), "heart blood", "-k", "5", "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip())
    assert record["query"] == "heart blood"
    assert [hit["id"] for hit in record["results"]] == [CORPUS[i]["_id"] for i in order]
    np.testing.assert_allclose([hit["score"] for hit in record["results"]], scores[order], atol=1e-5)
    assert record["results"][0]["rank"] == 1
    assert record["results"][0]["snippet"] == format_document(CORPUS[order[0]]["title"], CORPUS[order[0]]["text"])

    assert main(["search", "--index", str(built_index), "heart blood", "acid", "-k", "2"]) == 0
    text = capsys.readouterr().out
    assert text.count("query: ") == 2
    assert f"  1  {scores[order[0]]:.4f}  {CORPUS[order[0]]['_id']}" in text


def test_add_extends_and_refuses_other_models_and_duplicates(
    built_index, lbr_adapter_dir, other_lbr_dir, tmp_path, capsys
):
    import shutil

    index_dir = shutil.copytree(built_index, tmp_path / "index")
    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps({"_id": "x1", "text": "sodium water acid"}) + "\n")

    # Another model (same architecture, other weights): one-line error, exit code 2.
    code = main(["index", "--model", str(other_lbr_dir), "--corpus", str(extra), "--output", str(index_dir), "--add"])
    assert code == 2
    err = capsys.readouterr().err
    assert "fingerprint" in err and err.count("\n") == 1
    code = main(["search", "--index", str(index_dir), "--model", str(other_lbr_dir), "water"])
    assert code == 2 and "fingerprint" in capsys.readouterr().err

    # Without --add an existing index is not touched.
    code = main(["index", "--model", str(lbr_adapter_dir), "--corpus", str(extra), "--output", str(index_dir)])
    assert code == 2 and "--add" in capsys.readouterr().err

    argv = ["index", "--model", str(lbr_adapter_dir), "--corpus", str(extra), "--output", str(index_dir), "--add"]
    assert main(argv) == 0
    index = LBRIndex.open(index_dir)
    assert len(index) == len(CORPUS) + 1
    assert sorted(path.name for path in index_dir.iterdir()) == ["docs-0002.jsonl", "index.json", "vectors-0002.faiss"]
    from lbr.modeling import LBRModel

    # The added document is found by its own embedding, with cosine 1.
    (hit,) = index.search(LBRModel.load(lbr_adapter_dir).encode_document(["sodium water acid"]), k=1)[0]
    assert hit.id == "x1" and hit.score == pytest.approx(1.0, abs=1e-5)

    # The same ids again: refused, naming the file.
    assert main(argv) == 2
    assert f"{extra}: 1 document id(s) already in the index" in capsys.readouterr().err


def test_broken_inputs_are_one_line_errors(built_index, lbr_adapter_dir, tmp_path, capsys):
    import shutil

    missing = tmp_path / "nope"
    assert main(["search", "--index", str(missing), "water"]) == 2
    assert "not an lbr index" in capsys.readouterr().err

    bad_corpus = tmp_path / "bad.jsonl"
    bad_corpus.write_text('{"_id": "a", "text": "ok"}\n{"_id": "b"}\n')
    argv = ["index", "--model", str(lbr_adapter_dir), "--corpus", str(bad_corpus), "--output", str(tmp_path / "i")]
    assert main(argv) == 2
    assert f"{bad_corpus}:2" in capsys.readouterr().err

    broken = shutil.copytree(built_index, tmp_path / "broken")
    docs = broken / "docs-0001.jsonl"
    docs.write_text("".join(docs.read_text().splitlines(keepends=True)[:-1]))  # one row short
    with pytest.raises(InputError, match="inconsistent index"):
        LBRIndex.open(broken)

    not_index = tmp_path / "full"
    not_index.mkdir()
    (not_index / "keep.txt").write_text("mine")
    argv = ["index", "--model", str(lbr_adapter_dir), "--corpus", str(bad_corpus), "--output", str(not_index)]
    bad_corpus.write_text('{"_id": "a", "text": "ok"}\n')
    assert main(argv) == 2 and "not an lbr index" in capsys.readouterr().err
    assert (not_index / "keep.txt").read_text() == "mine"


def test_overwrite_replaces_and_cleans_up(built_index, lbr_adapter_dir, tmp_path):
    import shutil

    index_dir = shutil.copytree(built_index, tmp_path / "index")
    txt = tmp_path / "docs.txt"
    txt.write_text("the heart\n\nthe bone\n")
    argv = ["index", "--model", str(lbr_adapter_dir), "--corpus", str(txt), "--output", str(index_dir), "--overwrite"]
    assert main(argv) == 0
    index = LBRIndex.open(index_dir)
    assert [doc["id"] for doc in index.docs] == ["1", "3"]  # .txt ids are line numbers
    assert sorted(path.name for path in index_dir.iterdir()) == ["docs-0002.jsonl", "index.json", "vectors-0002.faiss"]
