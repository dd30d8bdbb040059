"""Fixtures for the reliability tests: uninterrupted reference runs through the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.helpers import TINY, run_cli

STAGE1_STEPS = 10
STAGE2_STEPS = 10


def stage1_args(model: Path, corpus: Path, output: Path) -> list[str]:
    return [
        "learn",
        "--model",
        str(model),
        "--corpus",
        str(corpus),
        "--output",
        str(output),
        "--segment-length",
        "8",
        "--target",
        "both",
        "--max-steps",
        str(STAGE1_STEPS),
        "--seed",
        "7",
        *TINY,
    ]


def stage2_args(model: Path, pairs: Path, output: Path) -> list[str]:
    return [
        "represent",
        "--model",
        str(model),
        "--pairs",
        str(pairs),
        "--output",
        str(output),
        "--mu",
        "0.2",
        "--max-steps",
        str(STAGE2_STEPS),
        "--seed",
        "7",
        *TINY,
    ]


@pytest.fixture(scope="session")
def stage1_reference(tmp_path_factory, tiny_model_dir, corpus_file) -> Path:
    """An uninterrupted stage-1 run (subprocess), the yardstick for every killed run."""
    output = tmp_path_factory.mktemp("reference") / "stage1"
    result = run_cli(*stage1_args(tiny_model_dir, corpus_file, output))
    assert result.returncode == 0, result.stderr[-3000:]
    return output


@pytest.fixture(scope="session")
def stage2_reference(tmp_path_factory, stage1_reference, pairs_file) -> Path:
    """An uninterrupted stage-2 run on top of the stage-1 reference."""
    output = tmp_path_factory.mktemp("reference") / "stage2"
    result = run_cli(*stage2_args(stage1_reference, pairs_file, output))
    assert result.returncode == 0, result.stderr[-3000:]
    return output
