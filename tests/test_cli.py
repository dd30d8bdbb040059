from __future__ import annotations

import json

import numpy as np
import pytest

from lbr.cli import main
from lbr.errors import ConfigError
from lbr.modeling import LBRModel

SMALL = [
    "--num-bottleneck-tokens",
    "3",
    "--lora-r",
    "4",
    "--batch-size",
    "4",
    "--max-steps",
    "2",
    "--no-progress",
    "--save-steps",
    "1",
]


def test_learn_represent_encode_through_main(tiny_model_dir, corpus_file, pairs_file, tmp_path, capsys):
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    assert (
        main(
            [
                "learn",
                "--model",
                str(tiny_model_dir),
                "--corpus",
                str(corpus_file),
                "--output",
                str(s1),
                "--target",
                "both",
                "--lambda",
                "0.5",
                *SMALL,
            ]
        )
        == 0
    )
    assert (s1 / "lbr_config.json").exists() and (s1 / "adapter_model.safetensors").exists()
    saved = json.loads((s1 / "lbr_config.json").read_text())
    assert saved["stages"][0]["ib_weight"] == 0.5 and saved["stages"][0]["target"] == "both"
    assert (
        main(
            [
                "represent",
                "--model",
                str(s1),
                "--pairs",
                str(pairs_file),
                "--output",
                str(s2),
                "--mu",
                "0.2",
                "--query-instruction",
                "Q: ",
                *SMALL,
            ]
        )
        == 0
    )
    texts = tmp_path / "docs.jsonl"
    texts.write_text(
        "".join(
            json.dumps({"_id": f"d{i}", "text": t}) + "\n"
            for i, t in enumerate(["heart defect", "benzoic acid", "return value"])
        )
        + json.dumps({"_id": "d3", "title": "heart", "text": "small defect"})
        + "\n"
    )
    out = tmp_path / "emb.npy"
    assert main(["encode", "--model", str(s2), "--input", str(texts), "--output", str(out), "--no-progress"]) == 0
    embeddings = np.load(out)
    assert embeddings.shape == (4, 32)
    assert json.loads((tmp_path / "emb.ids.json").read_text()) == ["d0", "d1", "d2", "d3"]
    # A document's title is encoded as training and evaluation give it: "title: text".
    expected = LBRModel.load(s2).encode_document(
        ["heart defect", "benzoic acid", "return value", "heart: small defect"]
    )
    np.testing.assert_allclose(embeddings, expected, atol=1e-5)
    # Queries get the stage-2 instruction.
    qout = tmp_path / "q.npy"
    assert (
        main(
            [
                "encode",
                "--model",
                str(s2),
                "--input",
                str(texts),
                "--output",
                str(qout),
                "--kind",
                "query",
                "--no-progress",
            ]
        )
        == 0
    )
    np.testing.assert_allclose(
        np.load(qout),
        LBRModel.load(s2).encode(["Q: heart defect", "Q: benzoic acid", "Q: return value", "Q: small defect"]),
        atol=1e-5,
    )
    # encode never overwrites silently.
    assert main(["encode", "--model", str(s2), "--input", str(texts), "--output", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_config_file_with_flags_on_top(tiny_model_dir, corpus_file, tmp_path):
    config = tmp_path / "s1.yaml"
    config.write_text(
        f"model: {tiny_model_dir}\ncorpus: {corpus_file}\nnum_bottleneck_tokens: 2\n"
        "lora_r: 4\nib_weight: 0.3\nmax_steps: 1\nbatch_size: 4\n"
    )
    out = tmp_path / "s1"
    assert main(["learn", "--config", str(config), "--output", str(out), "--lambda", "0.7", "--no-progress"]) == 0
    saved = json.loads((out / "lbr_config.json").read_text())
    assert saved["model"]["num_bottleneck_tokens"] == 2  # from the file
    assert saved["stages"][0]["ib_weight"] == 0.7  # the flag wins


def test_grouped_config_file_is_flattened_with_dashes_read_as_underscores(tmp_path):
    from lbr.config import load_config_file

    config = tmp_path / "grouped.yaml"
    config.write_text("model_config:\n  lora-r: 4\nstage1:\n  ib_weight: 0.3\nbatch-size: 8\n")
    assert load_config_file(config) == {"lora_r": 4, "ib_weight": 0.3, "batch_size": 8}
    config.write_text("stage1:\n  1: 0.3\n")
    with pytest.raises(ConfigError, match="option names must be text, found 1"):
        load_config_file(config)


def test_unknown_config_key_is_an_error(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("corpus: x.jsonl\nlamda: 0.3\n")
    assert main(["learn", "--config", str(config), "--output", str(tmp_path / "o")]) == 2
    assert "unknown option(s) for this command: lamda" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content,expected",
    [
        ('{"text": "heart"}\n{"text": "bone"\n', ":2: malformed JSON"),
        ('{"text": "heart"}\n{"txt": "bone"}\n', ":2: field 'text': missing"),
        ('{"text": 3}\n', ":1: field 'text': expected str, got int"),
        ("", ": file is empty"),
    ],
)
def test_bad_corpus_gives_one_line_error_with_file_and_line(tiny_model_dir, tmp_path, capsys, content, expected):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(content)
    code = main(["learn", "--model", str(tiny_model_dir), "--corpus", str(corpus), "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert str(corpus) + expected in err
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_bad_pairs_name_the_field(tiny_model_dir, tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"query": "a", "positive": "b"}\n{"query": "a", "positive": "b", "negatives": ["x", 4]}\n')
    code = main(["represent", "--model", str(tiny_model_dir), "--pairs", str(pairs), "--output", str(tmp_path / "o")])
    assert code == 2
    assert f"{pairs}:2: field 'negatives[1]': expected str, got int" in capsys.readouterr().err


def test_missing_paths_are_reported(tiny_model_dir, tmp_path, capsys):
    assert (
        main(
            [
                "learn",
                "--model",
                str(tiny_model_dir),
                "--corpus",
                str(tmp_path / "nope.jsonl"),
                "--output",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "corpus path does not exist" in capsys.readouterr().err
    assert main(["learn", "--model", str(tmp_path / "no-model"), "--corpus", "x", "--output", "o"]) == 2


def test_invalid_option_value_is_reported(tiny_model_dir, corpus_file, tmp_path, capsys):
    assert (
        main(
            [
                "learn",
                "--model",
                str(tiny_model_dir),
                "--corpus",
                str(corpus_file),
                "--output",
                str(tmp_path / "o"),
                "--target",
                "guess",
            ]
        )
        == 2
    )
    assert "target='guess' is not one of reconstruct, continue, both" in capsys.readouterr().err


SUBCOMMANDS = [
    [],
    ["learn"],
    ["represent"],
    ["encode"],
    ["evaluate"],
    ["demo"],
    ["benchmark"],
    ["data", "build"],
    ["index"],
    ["search"],
]


@pytest.mark.parametrize("command", SUBCOMMANDS, ids=lambda c: " ".join(c) or "lbr")
def test_every_help_page_prints(command, capsys):
    # argparse %-formats help text; a stray "%" in an option's help used to crash `lbr learn --help`.
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_read_texts_reads_titles_as_documents_are_trained(tmp_path):
    from lbr.data.beir import read_texts
    from lbr.errors import InputError

    path = tmp_path / "docs.jsonl"
    records = [
        {"_id": "a", "title": "Atrial septal defect", "text": "A hole between the atria."},
        {"text": "No id or title here."},
        {"_id": "c", "title": "", "text": "Empty title."},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    texts = read_texts(path, id_field="_id", text_field="text", title_field="title", max_line_bytes=10_000)
    # A record without an id takes its line number, as a line of a .txt file does.
    assert texts == [
        ("a", "Atrial septal defect: A hole between the atria."),
        ("2", "No id or title here."),
        ("c", "Empty title."),
    ]
    plain = read_texts(path, id_field="_id", text_field="text", title_field="", max_line_bytes=10_000)
    assert plain[0] == ("a", "A hole between the atria.")
    # Encoding the titles themselves does not prefix each title to itself.
    named = tmp_path / "named.jsonl"
    named.write_text(json.dumps(records[0]) + "\n")
    titles = read_texts(named, id_field="_id", text_field="title", title_field="title", max_line_bytes=10_000)
    assert titles == [("a", "Atrial septal defect")]
    path.write_text(json.dumps({"_id": "a", "title": 3, "text": "x"}) + "\n")
    with pytest.raises(InputError, match=r"docs.jsonl:1: field 'title'"):
        read_texts(path, id_field="_id", text_field="text", title_field="title", max_line_bytes=10_000)
    path.write_text(json.dumps({"_id": "a", "text": "x"}) + "\n" + json.dumps({"_id": "b", "text": "  "}) + "\n")
    with pytest.raises(InputError, match=r"docs.jsonl:2: field 'text': is empty"):
        read_texts(path)
    with pytest.raises(InputError, match=r"missing.jsonl: file does not exist"):
        read_texts(tmp_path / "missing.jsonl")
    with pytest.raises(InputError, match=r"is a directory"):
        read_texts(tmp_path)
    # A null id is no id: the line number, as for a null title.
    path.write_text(json.dumps({"_id": None, "title": None, "text": "x"}) + "\n")
    assert read_texts(path) == [("1", "x")]
    path.write_text(json.dumps({"_id": "a", "text": "x"}) + "\n" + json.dumps({"_id": " ", "text": "y"}) + "\n")
    with pytest.raises(InputError, match=r"docs.jsonl:2: field '_id': empty id"):
        read_texts(path)
