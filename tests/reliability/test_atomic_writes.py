"""A kill during a checkpoint or final-model write never leaves something that looks complete.

Real kills use ``kill_during.py``, which SIGKILLs the CLI process at an exact point of a write;
the in-process tests fake the leftovers directly.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lbr.cli import main
from lbr.training import checkpoint
from lbr.training.checkpoint import complete_checkpoints, load_checkpoint, save_checkpoint
from tests.reliability.conftest import stage1_args
from tests.reliability.helpers import ENV, losses, max_difference, run_cli, saved_tensors

KILL_DURING = Path(__file__).with_name("kill_during.py")
KILL_STEP = 3


def _kill_during(point: str, args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, str(KILL_DURING), point, str(KILL_STEP), "--", *args],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == -9, f"{point}: expected SIGKILL, got {result.returncode}: {result.stderr[-2000:]}"


@pytest.mark.parametrize(
    "point",
    [
        "checkpoint-tensors",
        pytest.param("checkpoint-rename", marks=pytest.mark.slow),
        pytest.param("checkpoint-rotate", marks=pytest.mark.slow),
        pytest.param("final-save", marks=pytest.mark.slow),
    ],
)
def test_kill_during_a_write_then_resume(point, tmp_path, stage1_reference, tiny_model_dir, corpus_file):
    output = tmp_path / "run"
    args = stage1_args(tiny_model_dir, corpus_file, output)
    _kill_during(point, args)

    kept = complete_checkpoints(output)
    assert kept, "no complete checkpoint survived"
    if point in ("checkpoint-tensors", "checkpoint-rename"):
        # The half-written checkpoint is only a .tmp directory; the previous one is the latest.
        assert (output / "checkpoints" / f"step-{KILL_STEP:06d}.tmp").is_dir()
        assert kept[-1].name == f"step-{KILL_STEP - 1:06d}"
    if point == "checkpoint-rotate":
        assert kept[-1].name == f"step-{KILL_STEP:06d}"
    # Whatever is listed as complete really loads.
    for path in kept:
        state = load_checkpoint(path)
        assert all(torch.isfinite(t).all() for t in state["trainable"].values())
    if point == "final-save":
        # The half-saved model has no lbr_config.json, so nothing takes it for a finished model.
        assert not (output / "lbr_config.json").exists()
        code = main(
            ["encode", "--model", str(output), "--input", str(corpus_file), "--output", str(tmp_path / "e.npy")]
        )
        assert code == 2

    result = run_cli(*args, "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    assert max_difference(saved_tensors(output), saved_tensors(stage1_reference)) == 0.0
    assert losses(output) == losses(stage1_reference)
    assert not list(output.rglob("*.tmp")) and not (output / "checkpoints").exists()


# ---------------------------------------------------------------- in-process, no model
def _tiny_state() -> tuple[dict[str, torch.Tensor], torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    layer = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1)
    layer(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return dict(layer.named_parameters()), optimizer, scheduler


def _save(output: Path, step: int, keep: int = 3) -> Path:
    trainable, optimizer, scheduler = _tiny_state()
    return save_checkpoint(
        output, step, trainable=trainable, optimizer=optimizer, scheduler=scheduler, extra={}, keep=keep
    )


def test_partial_and_foreign_directories_are_ignored_and_cleaned(tmp_path):
    _save(tmp_path, 1)
    root = tmp_path / "checkpoints"
    # A finished-looking temporary dir, a renamed dir without its state.json marker, and junk.
    fake_tmp = root / "step-000007.tmp"
    fake_tmp.mkdir()
    (fake_tmp / "state.json").write_text('{"step": 7}')
    (root / "step-000008").mkdir()
    (root / "step-0000xx").mkdir()
    (root / "notes.txt").write_text("mine")
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step-000001"]
    assert load_checkpoint(complete_checkpoints(tmp_path)[-1])["state"]["step"] == 1
    # The next save removes leftover .tmp directories and keeps the rest.
    _save(tmp_path, 2)
    assert not fake_tmp.exists()
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step-000001", "step-000002"]


def test_a_write_that_dies_midway_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    _save(tmp_path, 1)
    original = checkpoint.save_file
    calls = {"n": 0}

    def dies_on_second_file(tensors, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            Path(path).write_bytes(b"\x00" * 10)  # a truncated file
            raise OSError("disk full")
        return original(tensors, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", dies_on_second_file)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, 2)
    monkeypatch.undo()
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step-000001"]
    assert load_checkpoint(tmp_path / "checkpoints" / "step-000001")["state"]["step"] == 1


def test_rotation_keeps_the_newest_checkpoints(tmp_path):
    for step in (1, 2, 3, 4):
        _save(tmp_path, step, keep=2)
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step-000003", "step-000004"]
