"""Nothing is lost: no silent overwrite, no resume under changed settings, no NaN saved."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from lbr.cli import main
from lbr.losses import Stage1Loss, Stage2Loss
from lbr.training import trainer as trainer_module
from lbr.training.checkpoint import complete_checkpoints, load_checkpoint

SMALL = ["--lora-r", "4", "--save-steps", "1", "--no-progress"]


def _learn(model: Path, corpus: Path, output: Path, *extra: str) -> int:
    argv = ["learn", "--model", str(model), "--corpus", str(corpus), "--output", str(output), "--segment-length", "8"]
    return main([*argv, *SMALL, *extra])


def _interrupt_at(monkeypatch, micro_index: int) -> None:
    """Make the run stop with Ctrl-C at a micro-batch, after the checkpoints before it."""
    original = trainer_module.Trainer.micro_batch_indices

    def interrupted(self, index):
        if index == micro_index:
            raise KeyboardInterrupt
        return original(self, index)

    monkeypatch.setattr(trainer_module.Trainer, "micro_batch_indices", interrupted)


def test_existing_output_is_kept_without_overwrite(tmp_path, tiny_model_dir, corpus_file, pairs_file, capsys):
    output = tmp_path / "out"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    for command, data_flag, data in (("learn", "--corpus", corpus_file), ("represent", "--pairs", pairs_file)):
        code = main([command, "--model", str(tiny_model_dir), data_flag, str(data), "--output", str(output)])
        assert code == 2
        assert "output directory is not empty" in capsys.readouterr().err
    assert [p.name for p in output.iterdir()] == ["notes.txt"]
    # An output path that is a file is not replaced either.
    as_file = tmp_path / "file"
    as_file.write_text("mine")
    assert _learn(tiny_model_dir, corpus_file, as_file, "--max-steps", "1") == 2
    assert as_file.read_text() == "mine"
    # With --overwrite the directory is replaced.
    assert _learn(tiny_model_dir, corpus_file, output, "-k", "2", "--max-steps", "1", "--overwrite") == 0
    assert not (output / "notes.txt").exists() and (output / "lbr_config.json").exists()
    # A finished run is not "resumed" (which would retrain and replace it).
    assert _learn(tiny_model_dir, corpus_file, output, "-k", "2", "--max-steps", "1", "--resume") == 2
    assert "already finished" in capsys.readouterr().err


def test_encode_and_data_build_do_not_overwrite(tmp_path, tiny_model_dir, capsys):
    texts = tmp_path / "t.txt"
    texts.write_text("heart\n")
    out = tmp_path / "e.npy"
    out.write_bytes(b"mine")
    assert main(["encode", "--model", str(tiny_model_dir), "--input", str(texts), "--output", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == b"mine"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "corpus.jsonl").write_text("my own corpus\n")
    assert main(["data", "build", "medical", "--out", str(mine), "--max-docs", "20"]) == 2
    assert "not an `lbr data build` output" in capsys.readouterr().err
    assert (mine / "corpus.jsonl").read_text() == "my own corpus\n"


def test_resume_with_changed_settings_is_refused_listing_every_difference(
    tmp_path, tiny_model_dir, corpus_file, monkeypatch, capsys
):
    output = tmp_path / "run"
    _interrupt_at(monkeypatch, 3)
    assert _learn(tiny_model_dir, corpus_file, output, "-k", "3", "--batch-size", "4", "--max-steps", "6") == 130
    monkeypatch.undo()
    assert [p.name for p in complete_checkpoints(output)] == ["step-000002", "step-000003"]
    other_model = tmp_path / "other-model"
    shutil.copytree(tiny_model_dir, other_model)
    before = sorted(p.name for p in (output / "checkpoints").iterdir())

    code = _learn(other_model, corpus_file, output, "-k", "2", "--batch-size", "2", "--max-steps", "6", "--resume")
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "the run config differs from the one being resumed" in err
    for difference in (
        f"model.model: '{tiny_model_dir}' -> '{other_model}'",
        "model.num_bottleneck_tokens: 3 -> 2",
        "train.batch_size: 4 -> 2",
    ):
        assert difference in err
    assert "--force-resume" in err
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == before  # nothing touched

    # A longer run would rebuild the learning-rate schedule mid-run, so it is refused too.
    code = _learn(tiny_model_dir, corpus_file, output, "-k", "3", "--batch-size", "4", "--max-steps", "8", "--resume")
    err = capsys.readouterr().err
    assert code == 2 and "train.max_steps: 6 -> 8" in err
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == before

    # --force-resume with an incompatible architecture is still a clear error, not a crash.
    code = _learn(
        tiny_model_dir,
        corpus_file,
        output,
        "-k",
        "2",
        "--batch-size",
        "4",
        "--max-steps",
        "6",
        "--resume",
        "--force-resume",
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "does not fit this model" in err
    # --force-resume with a changed batch size goes ahead.
    code = _learn(
        tiny_model_dir,
        corpus_file,
        output,
        "-k",
        "3",
        "--batch-size",
        "2",
        "--max-steps",
        "8",
        "--resume",
        "--force-resume",
    )
    assert code == 0, capsys.readouterr().err
    steps = [json.loads(line)["step"] for line in (output / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))


def test_resume_after_the_data_changed_size_is_refused(tmp_path, tiny_model_dir, corpus_file, monkeypatch, capsys):
    corpus = tmp_path / "corpus.jsonl"
    shutil.copy(corpus_file, corpus)
    output = tmp_path / "run"
    _interrupt_at(monkeypatch, 3)
    assert _learn(tiny_model_dir, corpus, output, "--batch-size", "4", "--epochs", "1") == 130
    monkeypatch.undo()
    before = sorted(p.name for p in (output / "checkpoints").iterdir())
    # The same settings, but the corpus grew: one epoch is now more steps than the schedule's.
    with corpus.open("a") as handle:
        handle.write(corpus_file.read_text() * 2)
    assert _learn(tiny_model_dir, corpus, output, "--batch-size", "4", "--epochs", "1", "--resume") == 2
    err = capsys.readouterr().err
    assert "this run was planned for" in err and "--force-resume" in err and "Traceback" not in err
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == before
    # With the corpus as it was, the run resumes.
    shutil.copy(corpus_file, corpus)
    assert _learn(tiny_model_dir, corpus, output, "--batch-size", "4", "--epochs", "1", "--resume") == 0


def _poison(monkeypatch, loss_cls, *, at_call: int, how: str) -> None:
    """From the ``at_call``-th forward on, make the loss NaN, or keep it finite with NaN gradients."""
    original = loss_cls.forward
    calls = {"n": 0}

    def forward(self, batch):
        terms = original(self, batch)
        calls["n"] += 1
        if calls["n"] >= at_call:
            if how == "nan-loss":
                terms["loss"] = terms["loss"] * float("nan")
            else:  # d/dx sqrt(x) at 0 is inf, times 0: a finite loss with NaN gradients
                param = next(p for p in self.parameters() if p.requires_grad)
                terms["loss"] = terms["loss"] + torch.sqrt((param * 0).sum())
        return terms

    monkeypatch.setattr(loss_cls, "forward", forward)


@pytest.mark.parametrize("how", ["nan-loss", "nan-gradient"])
@pytest.mark.parametrize("stage", ["learn", "represent"])
def test_non_finite_training_stops_and_keeps_the_last_good_checkpoint(
    stage, how, tmp_path, tiny_model_dir, corpus_file, pairs_file, monkeypatch, capsys
):
    output = tmp_path / "run"
    _poison(monkeypatch, Stage1Loss if stage == "learn" else Stage2Loss, at_call=3, how=how)
    data = ["--corpus", str(corpus_file), "--segment-length", "8"] if stage == "learn" else ["--pairs", str(pairs_file)]
    code = main(
        [
            stage,
            "--model",
            str(tiny_model_dir),
            *data,
            "--output",
            str(output),
            "-k",
            "2",
            "--max-steps",
            "5",
            "--batch-size",
            "4",
            *SMALL,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    line = next(line for line in err.splitlines() if line.startswith("lbr: error:"))
    expected = "non-finite loss at step 3" if how == "nan-loss" else "non-finite weights after step 3"
    assert expected in line and "step-000002" in line and "--learning-rate" in line
    assert not (output / "lbr_config.json").exists()
    kept = complete_checkpoints(output)
    assert [p.name for p in kept] == ["step-000001", "step-000002"]
    for path in kept:
        state = load_checkpoint(path)
        assert all(torch.isfinite(t).all() for t in state["trainable"].values())
        assert all(
            torch.isfinite(t).all()
            for s in state["optimizer"]["state"].values()
            for t in s.values()
            if isinstance(t, torch.Tensor)
        )
