"""Bad input through every entry point: one clear line naming file, line and field; exit 2.

Each case goes through ``main([...])`` exactly as a user would type it. The data is read before
any model is loaded, so these tests are fast.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from lbr.cli import main
from tests.reliability.helpers import ENV

# ---------------------------------------------------------------- how each command reads a file


def _record(command: str, text: str = "heart bone", index: int = 0) -> dict:
    """A valid record for the file each command reads."""
    if command == "learn":
        return {"text": text}
    if command == "represent":
        return {"query": text, "positive": "bone skin"}
    if command in ("encode", "index"):
        return {"_id": f"d{index}", "text": text}
    return {"_id": f"d{index}", "title": "", "text": text}  # evaluate: corpus.jsonl


FIELD = {"learn": "text", "represent": "query", "encode": "text", "index": "text", "evaluate": "text"}


def _lines(command: str, n: int = 2) -> bytes:
    return b"".join(json.dumps(_record(command, index=i)).encode() + b"\n" for i in range(n))


def _run(command: str, content: bytes, tmp_path: Path, model: Path, *extra: str) -> tuple[int, Path]:
    """Write ``content`` as the command's input file and run the command on it."""
    if command == "evaluate":
        data = tmp_path / "beir"
        (data / "qrels").mkdir(parents=True)
        path = data / "corpus.jsonl"
        path.write_bytes(content)
        (data / "queries.jsonl").write_text('{"_id": "q0", "text": "heart"}\n')
        (data / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td0\t1\n")
        return main(["evaluate", "--model", "bm25", "--data", str(data), "--no-progress", *extra]), path
    path = tmp_path / "input.jsonl"
    path.write_bytes(content)
    out = tmp_path / "out"
    if command == "learn":
        argv = ["learn", "--model", str(model), "--corpus", str(path), "--output", str(out)]
    elif command == "represent":
        argv = ["represent", "--model", str(model), "--pairs", str(path), "--output", str(out)]
    elif command == "index":
        argv = ["index", "--model", str(model), "--corpus", str(path), "--output", str(out)]
    else:
        argv = ["encode", "--model", str(model), "--input", str(path), "--output", str(tmp_path / "e.npy")]
    return main([*argv, "--no-progress", *extra]), path


def _assert_one_line_error(capsys, code: int, expected: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("lbr: error:")]
    assert len(errors) == 1, err
    assert expected in errors[0], errors[0]
    return errors[0]


COMMANDS = ["learn", "represent", "encode", "index", "evaluate"]

# (case, content builder, extra flags, expected text after the path)
CASES: list[tuple[str, Callable[[str], bytes], list[str], Callable[[str], str]]] = [
    (
        "malformed-json",
        lambda c: _lines(c, 1) + b'{"oops": \n',
        [],
        lambda c: ":2: malformed JSON",
    ),
    (
        "truncated-last-line",
        lambda c: _lines(c, 2)[:-9],
        [],
        lambda c: ":2: malformed JSON",
    ),
    (
        "invalid-utf8",
        lambda c: _lines(c, 1) + json.dumps(_record(c, "heart")).encode().replace(b"heart", b"he\xffrt") + b"\n",
        [],
        lambda c: ":2: invalid UTF-8",
    ),
    ("not-an-object", lambda c: b"[1, 2]\n", [], lambda c: ":1: expected a JSON object, got list"),
    (
        "missing-field",
        lambda c: _lines(c, 1) + json.dumps({k: v for k, v in _record(c, index=1).items() if k != FIELD[c]}).encode(),
        [],
        lambda c: f":2: field '{FIELD[c]}': missing",
    ),
    (
        "wrong-type",
        lambda c: json.dumps({**_record(c), FIELD[c]: 3}).encode() + b"\n",
        [],
        lambda c: f":1: field '{FIELD[c]}': expected str, got int",
    ),
    ("empty-file", lambda c: b"", [], lambda c: ": file is empty"),
    ("only-blank-lines", lambda c: b"\n  \n\n", [], lambda c: ": file is empty"),
    (
        "oversized-line",
        lambda c: _lines(c, 1) + json.dumps(_record(c, "heart " * 40, 1)).encode() + b"\n",
        ["--max-line-bytes", "120"],
        lambda c: ":2: line is ",
    ),
]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case,content,extra,expected", CASES, ids=[case[0] for case in CASES])
def test_bad_input_gives_one_line_error(command, case, content, extra, expected, tmp_path, tiny_model_dir, capsys):
    code, path = _run(command, content(command), tmp_path, tiny_model_dir, *extra)
    line = _assert_one_line_error(capsys, code, str(path) + expected(command))
    if case == "truncated-last-line":
        assert "truncated last line?" in line
    if case == "oversized-line":
        assert "over the cap of 120" in line and "--max-line-bytes" in line
    assert not (tmp_path / "out").exists(), "an output directory was created for bad input"


@pytest.mark.parametrize("command", COMMANDS)
def test_missing_input_path(command, tmp_path, tiny_model_dir, capsys):
    missing = tmp_path / "nope.jsonl"
    argv = {
        "learn": ["learn", "--model", str(tiny_model_dir), "--corpus", str(missing), "--output", str(tmp_path / "o")],
        "represent": ["represent", "--model", str(tiny_model_dir), "--pairs", str(missing), "--output", "o"],
        "encode": ["encode", "--model", str(tiny_model_dir), "--input", str(missing), "--output", "e.npy"],
        "index": ["index", "--model", str(tiny_model_dir), "--corpus", str(missing), "--output", str(tmp_path / "o")],
        "evaluate": ["evaluate", "--model", "bm25", "--data", str(missing)],
    }[command]
    _assert_one_line_error(capsys, main(argv), f"{missing}: ")


@pytest.mark.parametrize("command", ["learn", "represent", "encode", "evaluate"])
def test_missing_model_path(command, tmp_path, corpus_file, pairs_file, capsys):
    model = str(tmp_path / "no-such-model")
    inputs = tmp_path / "in.jsonl"
    inputs.write_bytes(_lines("encode"))
    data = tmp_path / "beir"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_bytes(_lines("evaluate"))
    (data / "queries.jsonl").write_text('{"_id": "q0", "text": "heart"}\n')
    (data / "qrels" / "test.tsv").write_text("q0\td0\t1\n")
    argv = {
        "learn": ["learn", "--model", model, "--corpus", str(corpus_file), "--output", str(tmp_path / "o")],
        "represent": ["represent", "--model", model, "--pairs", str(pairs_file), "--output", str(tmp_path / "o")],
        "encode": ["encode", "--model", model, "--input", str(inputs), "--output", str(tmp_path / "e.npy")],
        "evaluate": ["evaluate", "--model", model, "--data", str(data), "--no-progress"],
    }[command]
    _assert_one_line_error(capsys, main(argv), model)


# ---------------------------------------------------------------- accepted quirks


def test_bom_and_blank_lines_are_accepted_by_every_reader(tmp_path, stage1_reference, capsys):
    """A UTF-8 BOM and blank lines (including CRLF ones) are fine: encode and evaluate succeed."""
    encode_input = tmp_path / "in.jsonl"
    encode_input.write_bytes(
        b"\xef\xbb\xbf"
        + json.dumps(_record("encode", "heart", 0)).encode()
        + b"\r\n\r\n  \n"
        + json.dumps(_record("encode", "bone", 1)).encode()
        + b"\n\n"
    )
    out = tmp_path / "e.npy"
    code = main(
        [
            "encode",
            "--model",
            str(stage1_reference),
            "--input",
            str(encode_input),
            "--output",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert np.load(out).shape[0] == 2
    assert json.loads(out.with_suffix(".ids.json").read_text()) == ["d0", "d1"]

    data = tmp_path / "beir"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_bytes(b"\xef\xbb\xbf" + _lines("evaluate", 2) + b"\n\n")
    (data / "queries.jsonl").write_bytes(b'\xef\xbb\xbf\n{"_id": "q0", "text": "heart"}\n')
    (data / "qrels" / "test.tsv").write_bytes(b"\xef\xbb\xbfquery-id\tcorpus-id\tscore\r\n\r\nq0\td0\t1\r\n")
    assert main(["evaluate", "--model", "bm25", "--data", str(data), "--no-progress"]) == 0


def test_bom_and_blank_lines_are_accepted_by_learn_and_represent(tmp_path, tiny_model_dir, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(b"\xef\xbb\xbf" + _lines("learn", 1) + b"\n   \n" + _lines("learn", 1))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_bytes(b"\xef\xbb\xbf" + _lines("represent", 2) + b"\n\n")
    common = ["-k", "2", "--lora-r", "2", "--batch-size", "2", "--max-steps", "1", "--no-progress"]
    assert (
        main(
            [
                "learn",
                "--model",
                str(tiny_model_dir),
                "--corpus",
                str(corpus),
                "--output",
                str(tmp_path / "s1"),
                *common,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "represent",
                "--model",
                str(tiny_model_dir),
                "--pairs",
                str(pairs),
                "--output",
                str(tmp_path / "s2"),
                *common,
            ]
        )
        == 0
    )
    stages = json.loads((tmp_path / "s1" / "lbr_config.json").read_text())["stages"]
    assert stages[0]["documents"] == 2


# ---------------------------------------------------------------- command-specific cases


def test_encode_duplicate_ids(tmp_path, tiny_model_dir, capsys):
    path = tmp_path / "in.jsonl"
    path.write_text('{"_id": "a", "text": "x"}\n{"_id": "b", "text": "y"}\n{"_id": "a", "text": "z"}\n')
    code = main(["encode", "--model", str(tiny_model_dir), "--input", str(path), "--output", str(tmp_path / "e.npy")])
    _assert_one_line_error(capsys, code, f"{path}:3: field '_id': duplicate id 'a' (first seen on line 1)")


@pytest.mark.parametrize("command", ["encode", "index"])
def test_txt_input_is_checked_too(command, tmp_path, tiny_model_dir, capsys):
    path = tmp_path / "in.txt"
    path.write_bytes(b"heart\nbo\xffne\n")
    argv = [command, "--model", str(tiny_model_dir), "--output", str(tmp_path / "e.npy")]
    argv += ["--input" if command == "encode" else "--corpus", str(path), "--no-progress"]
    _assert_one_line_error(capsys, main(argv), f"{path}:2: invalid UTF-8")
    path.write_bytes(b"heart\n" + b"x" * 200 + b"\n")  # 201 bytes with its newline, as every reader counts
    _assert_one_line_error(capsys, main([*argv, "--max-line-bytes", "100"]), f"{path}:2: line is 201 bytes")
    path.write_bytes(b"\n \n")
    _assert_one_line_error(capsys, main(argv), f"{path}: file is empty")


def test_learn_txt_corpus_and_empty_texts(tmp_path, tiny_model_dir, capsys):
    argv = ["learn", "--model", str(tiny_model_dir), "--output", str(tmp_path / "o"), "--corpus"]
    txt = tmp_path / "c.txt"
    txt.write_bytes(b"heart bone\n\nskin \xc3\n")
    _assert_one_line_error(capsys, main([*argv, str(txt)]), f"{txt}:3: invalid UTF-8")
    blank = tmp_path / "blank.jsonl"
    blank.write_text('{"text": "   "}\n{"text": ""}\n')
    _assert_one_line_error(capsys, main([*argv, str(blank)]), f"{blank}: corpus is empty")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    _assert_one_line_error(capsys, main([*argv, str(empty_dir)]), f"{empty_dir}: directory holds no .txt or .jsonl")
    wrong_kind = tmp_path / "c.csv"
    wrong_kind.write_text("a,b\n")
    _assert_one_line_error(capsys, main([*argv, str(wrong_kind)]), f"{wrong_kind}: unsupported corpus file type")


def test_represent_empty_query_and_bad_negatives(tmp_path, tiny_model_dir, capsys):
    path = tmp_path / "p.jsonl"
    argv = ["represent", "--model", str(tiny_model_dir), "--pairs", str(path), "--output", str(tmp_path / "o")]
    path.write_text('{"query": "a", "positive": "b"}\n{"query": "  ", "positive": "b"}\n')
    _assert_one_line_error(capsys, main(argv), f"{path}:2: field 'query': is empty")
    path.write_text('{"query": "a", "positive": "b", "negatives": "c"}\n')
    _assert_one_line_error(capsys, main(argv), f"{path}:1: field 'negatives': expected list, got str")
    path.write_text('{"query": "a", "positive": "b", "negatives": ["c", null]}\n')
    _assert_one_line_error(capsys, main(argv), f"{path}:1: field 'negatives[1]': expected str, got NoneType")


def _beir(tmp_path: Path, *, corpus: str, queries: str, qrels: bytes) -> Path:
    data = tmp_path / "beir"
    (data / "qrels").mkdir(parents=True, exist_ok=True)
    (data / "corpus.jsonl").write_text(corpus)
    (data / "queries.jsonl").write_text(queries)
    (data / "qrels" / "test.tsv").write_bytes(qrels)
    return data


CORPUS = '{"_id": "d0", "text": "heart"}\n{"_id": "d1", "text": "bone"}\n'
QUERIES = '{"_id": "q0", "text": "heart"}\n'
HEADER = b"query-id\tcorpus-id\tscore\n"


@pytest.mark.parametrize(
    "corpus,queries,qrels,where,expected",
    [
        (
            CORPUS + '{"_id": "d0", "text": "x"}\n',
            QUERIES,
            HEADER + b"q0\td0\t1\n",
            "corpus.jsonl",
            ":3: field '_id': duplicate id 'd0' (first seen on line 1)",
        ),
        (
            CORPUS,
            QUERIES + '{"_id": "q0", "text": "y"}\n',
            HEADER + b"q0\td0\t1\n",
            "queries.jsonl",
            ":2: field '_id': duplicate id 'q0'",
        ),
        (
            CORPUS,
            QUERIES,
            HEADER + b"q0\td0\t1\nq9\td0\t1\n",
            "qrels/test.tsv",
            ":3: field 'query-id': unknown query id 'q9'",
        ),
        (CORPUS, QUERIES, HEADER + b"q0\td7\t1\n", "qrels/test.tsv", ":2: field 'corpus-id': unknown document id 'd7'"),
        (CORPUS, QUERIES, HEADER + b"q0\td0\n", "qrels/test.tsv", ":2: expected 3 tab-separated columns"),
        (CORPUS, QUERIES, HEADER + b"q0\td0\thigh\n", "qrels/test.tsv", ":2: field 'score': expected an integer"),
        (CORPUS, QUERIES, HEADER + b"q0\td0\t1\nq0\td1\t\xff\n", "qrels/test.tsv", ":3: invalid UTF-8"),
        (CORPUS, QUERIES, HEADER + b"q0\td0\t0\n", "qrels/test.tsv", ": no positive judgement"),
        (CORPUS, QUERIES, HEADER, "qrels/test.tsv", ": file is empty"),
        ("", QUERIES, HEADER + b"q0\td0\t1\n", "corpus.jsonl", ": file is empty"),
        (
            '{"_id": true, "text": "x"}\n',
            QUERIES,
            HEADER + b"q0\td0\t1\n",
            "corpus.jsonl",
            ":1: field '_id': expected str or int, got bool",
        ),
    ],
    ids=[
        "dup-doc",
        "dup-query",
        "qrels-unknown-query",
        "qrels-unknown-doc",
        "qrels-columns",
        "qrels-score",
        "qrels-utf8",
        "qrels-no-positive",
        "qrels-empty",
        "empty-corpus",
        "id-bool",
    ],
)
def test_evaluate_dataset_errors(corpus, queries, qrels, where, expected, tmp_path, capsys):
    data = _beir(tmp_path, corpus=corpus, queries=queries, qrels=qrels)
    code = main(["evaluate", "--model", "bm25", "--data", str(data), "--no-progress"])
    _assert_one_line_error(capsys, code, f"{data / where}{expected}")


def test_evaluate_oversized_qrels_line_and_missing_split(tmp_path, capsys):
    data = _beir(tmp_path, corpus=CORPUS, queries=QUERIES, qrels=HEADER + b"q0\td0\t1\nq0\t" + b"d" * 300 + b"\t1\n")
    argv = ["evaluate", "--model", "bm25", "--data", str(data), "--no-progress"]
    _assert_one_line_error(capsys, main([*argv, "--max-line-bytes", "200"]), f"{data}/qrels/test.tsv:3: line is ")
    # Longer than csv's own 128 KiB field limit but under our cap: still a one-line error.
    (data / "qrels" / "test.tsv").write_bytes(HEADER + b"q0\t" + b"d" * 140_000 + b"\t1\n")
    _assert_one_line_error(capsys, main(argv), f"{data}/qrels/test.tsv:2: unreadable TSV row")
    _assert_one_line_error(capsys, main([*argv, "--split", "dev"]), "no qrels for split 'dev' (found: test)")


# ---------------------------------------------------------------- config files and --debug


@pytest.mark.parametrize(
    "content,expected",
    [
        (b"model: [\n", "not valid YAML/JSON"),
        (b'model: "\xff"\n', "invalid UTF-8 at byte"),
        (b"batch_size: four\n", "field 'batch_size': expected int, got str"),
        (b"- a\n- b\n", "expected a mapping"),
        (b"lamda: 0.3\n", "unknown option(s) for this command: lamda"),
    ],
    ids=["yaml-syntax", "utf8", "wrong-type", "not-a-mapping", "unknown-key"],
)
def test_bad_config_file(content, expected, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_bytes(content)
    code = main(["learn", "--config", str(config), "--output", str(tmp_path / "o")])
    _assert_one_line_error(capsys, code, f"{config}: {expected}")


def test_traceback_only_with_debug(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"text": 1}\n')
    argv = ["learn", "--model", "unused", "--corpus", str(corpus), "--output", str(tmp_path / "o")]
    plain = subprocess.run([sys.executable, "-m", "lbr", *argv], env=ENV, capture_output=True, text=True)
    assert plain.returncode == 2
    assert plain.stderr.strip() == f"lbr: error: {corpus}:1: field 'text': expected str, got int"
    debug = subprocess.run([sys.executable, "-m", "lbr", "--debug", *argv], env=ENV, capture_output=True, text=True)
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr and "InputError" in debug.stderr
