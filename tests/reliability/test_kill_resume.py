"""``kill -9`` the real CLI at a random step of each stage, resume, and get the same weights.

The kill lands at a random logged step plus a random delay of up to 80 ms, so it falls
sometimes inside a training step and sometimes inside a checkpoint write. Set
``LBR_KILL_SEED`` to replay a failing draw (the seed is printed in every assertion).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.reliability.conftest import STAGE1_STEPS, STAGE2_STEPS, stage1_args, stage2_args
from tests.reliability.helpers import losses, max_difference, run_and_kill, run_cli, saved_tensors


def _draw(stage: str, index: int) -> tuple[int, int, float]:
    """(seed, step to kill at, extra delay); a fresh seed per run unless LBR_KILL_SEED is set."""
    seed = int(os.environ.get("LBR_KILL_SEED", random.SystemRandom().randrange(2**31)))
    rng = random.Random(f"{seed}-{stage}-{index}")
    steps = STAGE1_STEPS if stage == "stage1" else STAGE2_STEPS
    return seed, rng.randint(1, steps - 2), rng.uniform(0.0, 0.08)


def _kill_resume_and_compare(args: list[str], output: Path, reference: Path, stage: str, index: int) -> None:
    seed, at_step, delay = _draw(stage, index)
    where = f"[LBR_KILL_SEED={seed}: kill after step {at_step} + {delay * 1000:.0f} ms]"
    killed_at = run_and_kill(args, output, at_step=at_step, extra_delay=delay)
    where += f" (landed with {killed_at} steps logged)"
    assert not (output / "lbr_config.json").exists(), f"a killed run looks finished {where}"

    result = run_cli(*args, "--resume")
    assert result.returncode == 0, f"resume failed {where}: {result.stderr[-3000:]}"

    # Bit-equal, not merely close: same batches, same RNG, same optimiser state.
    assert max_difference(saved_tensors(output), saved_tensors(reference)) == 0.0, where
    # The log is the uninterrupted one: every step once, with the same loss (same data order).
    assert losses(output) == losses(reference), where
    assert not (output / "checkpoints").exists(), f"checkpoints left behind {where}"
    assert not list(output.rglob("*.tmp")), f"temporary files left behind {where}"


def test_stage1_kill_and_resume_is_bit_equal(tmp_path, stage1_reference, tiny_model_dir, corpus_file):
    output = tmp_path / "stage1"
    _kill_resume_and_compare(stage1_args(tiny_model_dir, corpus_file, output), output, stage1_reference, "stage1", 0)


def test_stage2_kill_and_resume_is_bit_equal(tmp_path, stage1_reference, stage2_reference, pairs_file):
    output = tmp_path / "stage2"
    _kill_resume_and_compare(stage2_args(stage1_reference, pairs_file, output), output, stage2_reference, "stage2", 0)


@pytest.mark.slow
@pytest.mark.parametrize("index", [1, 2, 3])
def test_stage1_kill_and_resume_at_more_random_steps(tmp_path, stage1_reference, tiny_model_dir, corpus_file, index):
    output = tmp_path / "stage1"
    args = stage1_args(tiny_model_dir, corpus_file, output)
    _kill_resume_and_compare(args, output, stage1_reference, "stage1", index)


@pytest.mark.slow
@pytest.mark.parametrize("index", [1, 2, 3])
def test_stage2_kill_and_resume_at_more_random_steps(tmp_path, stage1_reference, stage2_reference, pairs_file, index):
    output = tmp_path / "stage2"
    _kill_resume_and_compare(
        stage2_args(stage1_reference, pairs_file, output), output, stage2_reference, "stage2", index
    )


@pytest.mark.slow
def test_two_kills_in_one_run_then_resume(tmp_path, stage1_reference, tiny_model_dir, corpus_file):
    """Killed, resumed, killed again later, resumed again: still the uninterrupted weights."""
    output = tmp_path / "stage1"
    args = stage1_args(tiny_model_dir, corpus_file, output)
    run_and_kill(args, output, at_step=2, extra_delay=0.01)
    run_and_kill([*args, "--resume"], output, at_step=6, extra_delay=0.03)
    result = run_cli(*args, "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    assert max_difference(saved_tensors(output), saved_tensors(stage1_reference)) == 0.0
    assert losses(output) == losses(stage1_reference)
