"""Shared helpers: run the real CLI in a subprocess, kill it, and compare saved weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

# One thread: the machine is shared, and a fixed thread count keeps float reductions in the
# same order in every process, which the bit-equality checks rely on.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

# The smallest run that still has several checkpoints to resume from.
TINY = ["-k", "3", "--lora-r", "4", "--batch-size", "4", "--save-steps", "1", "--log-steps", "1", "--no-progress"]


def lbr_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "lbr", *args]


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m lbr ARGS`` to completion."""
    return subprocess.run(lbr_command(*args), env=ENV, capture_output=True, text=True, timeout=timeout)


def logged_steps(output: Path) -> int:
    log = output / "train_log.jsonl"
    try:
        return sum(1 for line in log.read_text(encoding="utf-8").splitlines() if line.strip())
    except FileNotFoundError:
        return 0


def run_and_kill(args: list[str], output: Path, *, at_step: int, extra_delay: float, timeout: float = 300) -> int:
    """Start the CLI, wait until it has logged ``at_step`` steps, sleep ``extra_delay`` seconds
    (so the kill can land mid-step or mid-checkpoint), then SIGKILL it.

    Returns the number of steps logged when the kill landed.
    """
    process = subprocess.Popen(lbr_command(*args), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while logged_steps(output) < at_step:
            if process.poll() is not None:
                raise AssertionError(
                    f"the run ended (exit {process.returncode}) before step {at_step}: "
                    + process.stderr.read().decode(errors="replace")[-2000:]
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"step {at_step} not reached in {timeout} s")
            time.sleep(0.005)
        time.sleep(extra_delay)
        killed_at = logged_steps(output)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL, f"not killed (exit {process.returncode})"
    return killed_at


def saved_tensors(output: Path) -> dict[str, torch.Tensor]:
    """Every tensor of every safetensors file in a model directory, keyed by ``file/name``."""
    tensors = {}
    for file in sorted(output.glob("*.safetensors")):
        for name, tensor in load_file(file).items():
            tensors[f"{file.name}/{name}"] = tensor
    assert tensors, f"no safetensors in {output}"
    return tensors


def max_difference(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> float:
    """Largest absolute difference over all tensors; the key sets must match."""
    assert sorted(got) == sorted(expected)
    return max(float((got[name] - expected[name]).abs().max()) for name in expected)


def losses(output: Path) -> list[tuple[int, float]]:
    """(step, loss) from the training log: equal losses mean the same batches in the same order."""
    lines = (output / "train_log.jsonl").read_text(encoding="utf-8").splitlines()
    return [(record["step"], record["loss"]) for record in map(json.loads, lines)]
