"""Safe artifacts: safetensors only, no pickles, no custom code unless asked, no path escapes."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
from safetensors import safe_open

import lbr
from lbr.cli import build_parser, main
from lbr.config import ModelConfig
from lbr.training import trainer as trainer_module

SOURCE = Path(lbr.__file__).parent
ALLOWED_SUFFIXES = {".safetensors", ".json", ".jsonl", ".md", ".txt", ".model"}
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "shelve", "cloudpickle"}


def _assert_no_pickles(root: Path) -> None:
    files = [p for p in root.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert path.suffix in ALLOWED_SUFFIXES, f"unexpected artifact {path}"
        if path.suffix == ".safetensors":
            with safe_open(path, framework="pt") as handle:  # parses the header: a real safetensors file
                assert list(handle.keys())
            continue
        head = path.read_bytes()[:4]
        # Pickle streams start with PROTO (0x80, 2..5); torch.save's zip format starts with "PK".
        assert not (head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05"), f"{path} looks pickled"
        assert not head.startswith(b"PK\x03\x04"), f"{path} looks like a torch.save zip"


def test_trained_outputs_and_checkpoints_hold_no_pickles(
    stage1_reference, stage2_reference, tmp_path, tiny_model_dir, corpus_file, monkeypatch
):
    _assert_no_pickles(stage1_reference)
    _assert_no_pickles(stage2_reference)
    # Checkpoints too: stop a run part-way so they are still there.
    original = trainer_module.Trainer.micro_batch_indices
    monkeypatch.setattr(
        trainer_module.Trainer,
        "micro_batch_indices",
        lambda self, i: (_ for _ in ()).throw(KeyboardInterrupt) if i == 3 else original(self, i),
    )
    output = tmp_path / "cut"
    argv = ["learn", "--model", str(tiny_model_dir), "--corpus", str(corpus_file), "--output", str(output)]
    assert main([*argv, "-k", "2", "--lora-r", "2", "--max-steps", "5", "--save-steps", "1", "--no-progress"]) == 130
    assert (output / "checkpoints").is_dir()
    _assert_no_pickles(output)
    # A merged (full-weights) model is safetensors as well.
    monkeypatch.undo()
    merged = tmp_path / "merged"
    argv = ["learn", "--model", str(tiny_model_dir), "--corpus", str(corpus_file), "--output", str(merged)]
    assert main([*argv, "-k", "2", "--lora-r", "2", "--max-steps", "1", "--merge", "--no-progress"]) == 0
    assert (merged / "model.safetensors").exists()
    _assert_no_pickles(merged)


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def _name(func: ast.expr) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def _keyword(call: ast.Call, name: str) -> object:
    for keyword in call.keywords:
        if keyword.arg == name and isinstance(keyword.value, ast.Constant):
            return keyword.value.value
    return None


def test_source_never_unpickles_or_trusts_remote_code_by_itself():
    files = sorted(SOURCE.rglob("*.py"))
    assert len(files) > 10
    problems = []
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [alias.name for alias in node.names] + [getattr(node, "module", None) or ""]
                if any(name.split(".")[0] in PICKLE_MODULES for name in names):
                    problems.append(f"{path}:{node.lineno}: imports a pickle module")
        for call in _calls(tree):
            name = _name(call.func)
            if name == "torch.load" and _keyword(call, "weights_only") is not True:
                problems.append(f"{path}:{call.lineno}: torch.load without weights_only=True")
            if name in ("torch.save", "pickle.dump", "pickle.dumps"):
                problems.append(f"{path}:{call.lineno}: {name} writes a pickle")
            if name.endswith(("np.load", "numpy.load")) and _keyword(call, "allow_pickle") is True:
                problems.append(f"{path}:{call.lineno}: np.load(allow_pickle=True)")
            if _keyword(call, "trust_remote_code") is True:
                problems.append(f"{path}:{call.lineno}: trust_remote_code=True hard-coded")
            if name.endswith("save_pretrained") and _keyword(call, "safe_serialization") is False:
                problems.append(f"{path}:{call.lineno}: save_pretrained(safe_serialization=False)")
    assert not problems, "\n".join(problems)


def test_trust_remote_code_is_off_unless_asked():
    assert ModelConfig().trust_remote_code is False
    parser = build_parser()
    assert parser.parse_args(["encode", "--model", "m", "--input", "i", "--output", "o.npy"]).trust_remote_code is False
    # learn/represent: the flag is absent unless given, so the config default (False) applies.
    assert not hasattr(parser.parse_args(["learn"]), "trust_remote_code")
    assert parser.parse_args(["learn", "--trust-remote-code"]).trust_remote_code is True


def _with_auto_map(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (target / "config.json").write_text(json.dumps(config))
    (target / "modeling_evil.py").write_text("raise SystemExit('custom code ran')\n")
    return target


def test_a_model_with_custom_code_is_refused_by_every_command(
    tmp_path, tiny_model_dir, corpus_file, pairs_file, stage1_reference, capsys
):
    evil = _with_auto_map(tiny_model_dir, tmp_path / "evil-base")
    texts = tmp_path / "t.txt"
    texts.write_text("heart\n")
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text('{"_id": "d0", "text": "heart"}\n')
    (beir / "queries.jsonl").write_text('{"_id": "q0", "text": "heart"}\n')
    (beir / "qrels" / "test.tsv").write_text("q0\td0\t1\n")
    # An lbr model (adapter) whose base model ships custom code.
    adapter = tmp_path / "lbr-on-evil"
    shutil.copytree(stage1_reference, adapter)
    record = json.loads((adapter / "lbr_config.json").read_text())
    record["model"]["model"] = str(evil)
    (adapter / "lbr_config.json").write_text(json.dumps(record))
    runs = [
        ["learn", "--model", str(evil), "--corpus", str(corpus_file), "--output", str(tmp_path / "a")],
        ["represent", "--model", str(evil), "--pairs", str(pairs_file), "--output", str(tmp_path / "b")],
        ["encode", "--model", str(adapter), "--input", str(texts), "--output", str(tmp_path / "e.npy")],
        ["evaluate", "--model", str(adapter), "--data", str(beir), "--no-progress"],
        ["represent", "--model", str(adapter), "--pairs", str(pairs_file), "--output", str(tmp_path / "c")],
    ]
    for argv in runs:
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2, (argv[0], err)
        assert "ships custom Python code (auto_map)" in err and "--trust-remote-code" in err, err
        assert "Traceback" not in err


def test_a_merged_lbr_model_with_custom_code_is_refused(tmp_path, tiny_model_dir, corpus_file, capsys):
    merged = tmp_path / "merged"
    argv = ["learn", "--model", str(tiny_model_dir), "--corpus", str(corpus_file), "--output", str(merged)]
    assert main([*argv, "-k", "2", "--lora-r", "2", "--max-steps", "1", "--merge", "--no-progress"]) == 0
    evil = _with_auto_map(merged, tmp_path / "evil-merged")
    texts = tmp_path / "t.txt"
    texts.write_text("heart\n")
    code = main(["encode", "--model", str(evil), "--input", str(texts), "--output", str(tmp_path / "e.npy")])
    assert code == 2 and "auto_map" in capsys.readouterr().err


@pytest.mark.parametrize("hostile", ["../../escaped", "/tmp/lbr-escaped", "..", "a/../../b", "nul\x00byte", "~"])
def test_ids_from_data_never_become_paths(hostile, tmp_path, stage1_reference):
    work = tmp_path / "work"
    work.mkdir()
    texts = work / "in.jsonl"
    texts.write_text(json.dumps({"_id": hostile, "text": "heart"}) + "\n" + json.dumps({"_id": "ok", "text": "bone"}))
    before = {p for p in tmp_path.parent.rglob("*")}
    out = work / "emb.npy"
    assert (
        main(["encode", "--model", str(stage1_reference), "--input", str(texts), "--output", str(out), "--no-progress"])
        == 0
    )
    created = {p for p in tmp_path.parent.rglob("*")} - before
    assert created == {out, work / "emb.ids.json"}
    assert json.loads((work / "emb.ids.json").read_text()) == [hostile, "ok"]
    assert not Path("/tmp/lbr-escaped").exists()


def test_training_writes_only_inside_its_output(tmp_path, tiny_model_dir, monkeypatch):
    """Record every file opened for writing during a run: all are under --output (or the temp dir)."""
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"id": "../../x", "text": "heart bone skin eye"}) + "\n")
    output = tmp_path / "out"
    before = {p for p in tmp_path.rglob("*")}
    argv = ["learn", "--model", str(tiny_model_dir), "--corpus", str(corpus), "--output", str(output)]
    assert main([*argv, "-k", "2", "--lora-r", "2", "--max-steps", "2", "--save-steps", "1", "--no-progress"]) == 0
    created = {p for p in tmp_path.rglob("*")} - before
    assert created and all(p == output or output in p.parents for p in created)
