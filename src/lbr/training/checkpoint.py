"""Atomic, pickle-free training checkpoints.

A checkpoint is a directory ``checkpoints/step-000050`` holding:
- ``trainable.safetensors``: every trainable parameter, by name;
- ``optimizer.safetensors`` + ``optimizer.json``: the optimiser's tensors and its plain state;
- ``rng.safetensors``: the torch RNG state;
- ``state.json``: step, scheduler state and the run config; written last, so it marks a
  complete checkpoint.

The directory is written under a temporary name and renamed, so a kill during the write
leaves only a ``*.tmp`` directory, which is ignored and cleaned up on the next save.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

CHECKPOINT_DIR = "checkpoints"
STATE_NAME = "state.json"
_STEP_PATTERN = re.compile(r"^step-(\d+)$")


def optimizer_to_safetensors(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser state dict into tensors (for safetensors) and JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {"param_groups": state_dict["param_groups"], "state": {}}
    for index, values in state_dict["state"].items():
        plain["state"][str(index)] = {}
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().clone().contiguous()
                plain["state"][str(index)][key] = "__tensor__"
            else:
                plain["state"][str(index)][key] = value
    return tensors, plain


def optimizer_from_safetensors(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> dict[str, Any]:
    state = {}
    for index, values in plain["state"].items():
        state[int(index)] = {
            key: tensors[f"{index}.{key}"] if value == "__tensor__" else value for key, value in values.items()
        }
    groups = plain["param_groups"]
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    return {"state": state, "param_groups": groups}


def save_checkpoint(
    output: Path,
    step: int,
    *,
    trainable: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    extra: dict[str, Any],
    keep: int,
) -> Path:
    root = output / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    for leftover in root.glob("*.tmp"):
        shutil.rmtree(leftover, ignore_errors=True)
    final = root / f"step-{step:06d}"
    tmp = root / f"step-{step:06d}.tmp"
    tmp.mkdir()
    save_file({name: t.detach().clone().contiguous() for name, t in trainable.items()}, tmp / "trainable.safetensors")
    opt_tensors, opt_plain = optimizer_to_safetensors(optimizer.state_dict())
    save_file(opt_tensors, tmp / "optimizer.safetensors")
    (tmp / "optimizer.json").write_text(json.dumps(opt_plain), encoding="utf-8")
    save_file({"torch": torch.get_rng_state()}, tmp / "rng.safetensors")
    state = {"step": step, "scheduler": scheduler.state_dict(), **extra}
    (tmp / STATE_NAME).write_text(json.dumps(state, indent=2), encoding="utf-8")
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    for old in complete_checkpoints(output)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def complete_checkpoints(output: Path) -> list[Path]:
    """Complete checkpoints, oldest first. Temporary or half-written ones are skipped."""
    root = output / CHECKPOINT_DIR
    if not root.exists():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_PATTERN.match(path.name)
        if match and path.is_dir() and (path / STATE_NAME).exists():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (safetensors and JSON only)."""
    state = json.loads((path / STATE_NAME).read_text(encoding="utf-8"))
    return {
        "state": state,
        "trainable": load_file(path / "trainable.safetensors"),
        "optimizer": optimizer_from_safetensors(
            load_file(path / "optimizer.safetensors"),
            json.loads((path / "optimizer.json").read_text(encoding="utf-8")),
        ),
        "rng": load_file(path / "rng.safetensors")["torch"],
    }


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
