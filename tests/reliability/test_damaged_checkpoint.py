"""A checkpoint damaged by something other than lbr: a clear error naming the file, or a warned step back.

The checkpoints are real ones, written by a short tiny-model run that was interrupted (one per test,
as the output path is part of the settings compared on resume); each test damages them in one way
(truncated safetensors, invalid JSON, a missing file) and resumes through ``main([...])`` as a user
would.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from lbr.cli import main
from lbr.training import trainer as trainer_module
from lbr.training.checkpoint import complete_checkpoints, load_checkpoint, save_checkpoint
from tests.reliability.helpers import losses, max_difference, saved_tensors

STEPS = 5
INTERRUPT_AT = 3  # micro-batch index (one per step): checkpoints of steps 1-3 exist
RUN = ["-k", "2", "--lora-r", "4", "--batch-size", "4", "--segment-length", "8", "--seed", "7"]
RUN += ["--max-steps", str(STEPS), "--save-steps", "1", "--save-total-limit", "3", "--no-progress"]


def _learn(model: Path, corpus: Path, output: Path, *extra: str) -> int:
    return main(["learn", "--model", str(model), "--corpus", str(corpus), "--output", str(output), *RUN, *extra])


@pytest.fixture()
def interrupted_run(tmp_path, tiny_model_dir, corpus_file) -> Path:
    """A run stopped with Ctrl-C during step 4: checkpoints step-000001..3, no final model."""
    output = tmp_path / "run"
    original = trainer_module.Trainer.micro_batch_indices

    def interrupted(self, index):
        if index == INTERRUPT_AT:
            raise KeyboardInterrupt
        return original(self, index)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer_module.Trainer, "micro_batch_indices", interrupted)
        assert _learn(tiny_model_dir, corpus_file, output) == 130
    assert [p.name for p in complete_checkpoints(output)] == ["step-000001", "step-000002", "step-000003"]
    return output


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory, tiny_model_dir, corpus_file) -> Path:
    output = tmp_path_factory.mktemp("damaged") / "reference"
    assert _learn(tiny_model_dir, corpus_file, output) == 0
    return output


def _truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def _invalid_json(file: Path) -> None:
    text = file.read_text(encoding="utf-8")
    file.write_text(text[: len(text) // 2], encoding="utf-8")  # cut mid-object, as by a failed copy


# (file inside the checkpoint, how it is damaged, words the message must use)
DAMAGE: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "truncated-trainable": ("trainable.safetensors", _truncate, "truncated or not a safetensors file"),
    "truncated-optimizer": ("optimizer.safetensors", _truncate, "truncated or not a safetensors file"),
    "empty-rng": ("rng.safetensors", lambda f: f.write_bytes(b""), "truncated or not a safetensors file"),
    "invalid-state-json": ("state.json", _invalid_json, "not valid JSON"),
    "invalid-optimizer-json": ("optimizer.json", _invalid_json, "not valid JSON"),
    "state-json-without-step": ("state.json", lambda f: f.write_text('{"scheduler": {}}'), "no integer 'step'"),
    "optimizer-json-of-other-tensors": (
        "optimizer.json",
        lambda f: f.write_text('{"param_groups": [], "state": {"99": {"exp_avg": "__tensor__"}}}'),
        "not an optimiser state matching optimizer.safetensors",
    ),
    "missing-trainable": ("trainable.safetensors", Path.unlink, "file is missing"),
    "missing-optimizer-json": ("optimizer.json", Path.unlink, "file is missing"),
    "missing-rng": ("rng.safetensors", Path.unlink, "file is missing"),
}


def _keep_only(output: Path, *names: str) -> Path:
    """Leave only the named checkpoints, as a run with a lower --save-total-limit would."""
    for path in complete_checkpoints(output):
        if path.name not in names:
            shutil.rmtree(path)
    return output


def _files(output: Path) -> dict[str, bytes]:
    return {str(p.relative_to(output)): p.read_bytes() for p in sorted(output.rglob("*")) if p.is_file()}


def _error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("lbr: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_only_checkpoint_is_one_clear_error_naming_the_file(
    damage, interrupted_run, tiny_model_dir, corpus_file, capsys
):
    name, spoil, problem = DAMAGE[damage]
    output = _keep_only(interrupted_run, "step-000003")
    damaged = output / "checkpoints" / "step-000003" / name
    spoil(damaged)
    before = _files(output)

    code = _learn(tiny_model_dir, corpus_file, output, "--resume")
    line = _error_line(capsys.readouterr().err)
    assert code == 2
    assert f"{damaged}: " in line and problem in line, line
    # What to do, with the flags the CLI really has.
    assert "without --resume and with --overwrite" in line and "--output" in line, line
    assert _files(output) == before  # nothing deleted or rewritten


def test_every_checkpoint_damaged_says_so(interrupted_run, tiny_model_dir, corpus_file, capsys):
    output = interrupted_run
    for path in complete_checkpoints(output):
        _truncate(path / "trainable.safetensors")
    before = _files(output)

    assert _learn(tiny_model_dir, corpus_file, output, "--resume") == 2
    line = _error_line(capsys.readouterr().err)
    assert f"{output / 'checkpoints' / 'step-000003' / 'trainable.safetensors'}: " in line, line
    assert "the 2 earlier checkpoint(s) are damaged too" in line, line
    assert _files(output) == before


@pytest.mark.parametrize("damage", ["truncated-optimizer", "invalid-state-json", "missing-rng"])
def test_a_damaged_newest_checkpoint_resumes_from_the_previous_one_with_a_warning(
    damage, interrupted_run, uninterrupted_run, tiny_model_dir, corpus_file, capsys
):
    name, spoil, problem = DAMAGE[damage]
    output = interrupted_run
    damaged = output / "checkpoints" / "step-000003" / name
    spoil(damaged)

    code = _learn(tiny_model_dir, corpus_file, output, "--resume")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    warnings = [line for line in captured.err.splitlines() if line.startswith("lbr: warning:")]
    assert len(warnings) == 1, captured.err
    assert f"{damaged}: " in warnings[0] and problem in warnings[0], warnings[0]
    assert "resumes from the earlier step-000002 (step 2)" in warnings[0], warnings[0]
    assert f"resuming stage1 from {output / 'checkpoints' / 'step-000002'}" in captured.out
    # Stepping back costs steps, not exactness: the uninterrupted weights and log.
    assert max_difference(saved_tensors(output), saved_tensors(uninterrupted_run)) == 0.0
    assert losses(output) == losses(uninterrupted_run)


def test_a_damaged_run_config_is_a_clear_error_unless_forced(
    interrupted_run, uninterrupted_run, tiny_model_dir, corpus_file, capsys
):
    output = _keep_only(interrupted_run, "step-000003")
    run_config = output / "run_config.json"
    _invalid_json(run_config)

    assert _learn(tiny_model_dir, corpus_file, output, "--resume") == 2
    line = _error_line(capsys.readouterr().err)
    assert f"{run_config}: damaged" in line and "--force-resume" in line, line

    assert _learn(tiny_model_dir, corpus_file, output, "--resume", "--force-resume") == 0
    assert max_difference(saved_tensors(output), saved_tensors(uninterrupted_run)) == 0.0


# ---------------------------------------------------------------- in-process, no model
def _save(output: Path, step: int, keep: int) -> Path:
    layer = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1)
    layer(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    trainable = dict(layer.named_parameters())
    return save_checkpoint(
        output, step, trainable=trainable, optimizer=optimizer, scheduler=scheduler, extra={}, keep=keep
    )


def test_rotation_after_stepping_back_keeps_the_checkpoint_just_written(tmp_path):
    """Resumed from step 2 past a damaged step 4 (and --save-steps changed): saving step 3 with
    --save-total-limit 1 must keep step 3, not only the damaged, numerically newer step 4."""
    for step in (1, 2, 4):
        _save(tmp_path, step, keep=5)
    damaged = tmp_path / "checkpoints" / "step-000004" / "state.json"
    damaged.write_text(json.dumps({"step": 4})[:-3])
    _save(tmp_path, 3, keep=1)
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step-000003", "step-000004"]
    assert load_checkpoint(tmp_path / "checkpoints" / "step-000003")["state"]["step"] == 3
