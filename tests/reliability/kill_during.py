"""Run the ``lbr`` CLI and SIGKILL it at an exact point of a write (used by test_atomic_writes).

    python kill_during.py POINT STEP -- lbr-args...

POINT is one of:
- ``checkpoint-tensors``: half-way through writing optimizer.safetensors of checkpoint STEP;
- ``checkpoint-rename``: after every file of checkpoint STEP is written, before the rename;
- ``checkpoint-rotate``: after checkpoint STEP is renamed, before older ones are deleted;
- ``final-save``: half-way through writing the final model (lbr_modules.safetensors).

The kill is a real ``SIGKILL`` of this process: no Python cleanup, no finally blocks run.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import safetensors.torch

import lbr.modeling.lbr_model as lbr_model
import lbr.training.checkpoint as checkpoint
from lbr.cli import main


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def write_half_then_die(tensors: dict[str, Any], path: str | Path) -> None:
    data = safetensors.torch.save(tensors)
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2])
        handle.flush()
        os.fsync(handle.fileno())
    die()


def install(point: str, step: int) -> None:
    step_dir = f"step-{step:06d}"
    if point == "checkpoint-tensors":
        original = checkpoint.save_file

        def save_file(tensors: dict[str, Any], path: str | Path, *args: Any, **kwargs: Any) -> None:
            if Path(path).parent.name == step_dir + ".tmp" and Path(path).name == "optimizer.safetensors":
                write_half_then_die(tensors, path)
            original(tensors, path, *args, **kwargs)

        checkpoint.save_file = save_file
    elif point == "checkpoint-rename":
        original_fsync = checkpoint._fsync_dir

        def fsync_dir(path: Path) -> None:
            original_fsync(path)
            if Path(path).name == step_dir + ".tmp":
                die()

        checkpoint._fsync_dir = fsync_dir
    elif point == "checkpoint-rotate":
        original_fsync = checkpoint._fsync_dir

        def fsync_dir(path: Path) -> None:
            original_fsync(path)
            # _fsync_dir(root) runs right after the rename, before old checkpoints are deleted.
            if Path(path).name == checkpoint.CHECKPOINT_DIR and (Path(path) / step_dir).exists():
                die()

        checkpoint._fsync_dir = fsync_dir
    elif point == "final-save":
        original = lbr_model.save_file

        def save_file(tensors: dict[str, Any], path: str | Path, *args: Any, **kwargs: Any) -> None:
            if Path(path).name == lbr_model.LBR_MODULES_NAME:
                write_half_then_die(tensors, path)
            original(tensors, path, *args, **kwargs)

        lbr_model.save_file = save_file
    else:
        raise SystemExit(f"unknown point {point!r}")


if __name__ == "__main__":
    point, step, separator, *lbr_args = sys.argv[1:]
    assert separator == "--"
    install(point, int(step))
    sys.exit(main(lbr_args))
