"""Atomic, pickle-free training checkpoints.

A checkpoint is a directory ``checkpoints/step-000050`` holding:
- ``trainable.safetensors``: every trainable parameter, by name;
- ``optimizer.safetensors`` + ``optimizer.json``: the optimiser's tensors and its plain state;
- ``rng.safetensors``: the torch RNG state;
- ``state.json``: step, scheduler state and the run config; written last, so it marks a
  complete checkpoint.

The directory is written under a temporary name and renamed, so a kill during the write
leaves only a ``*.tmp`` directory, which is ignored and cleaned up on the next save. A complete
checkpoint damaged afterwards by something else (a truncated copy, a hand edit, a deleted file)
raises :class:`CheckpointError`, which names the file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lbr.errors import ConfigError

CHECKPOINT_DIR = "checkpoints"
STATE_NAME = "state.json"
_STEP_PATTERN = re.compile(r"^step-(\d+)$")


class CheckpointError(ConfigError):
    """A file of a complete checkpoint is missing, truncated or not what lbr wrote.

    Attributes:
        file: the damaged file.
        checkpoint: its checkpoint directory (``.../checkpoints/step-000050``).
        problem: what is wrong with the file, without the path.
    """

    def __init__(self, file: Path, problem: str) -> None:
        self.file = file
        self.checkpoint = file.parent
        self.problem = problem
        super().__init__(f"{file}: {problem}")


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
    # Rotate among the checkpoints up to this step. After a resume that stepped back past a
    # damaged checkpoint, that newer one is still there, and keeping "the newest" by step number
    # would delete the checkpoint just written.
    earlier = [path for path in complete_checkpoints(output) if checkpoint_step(path) <= step]
    for old in earlier[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoint_step(path: Path) -> int:
    """The step of a checkpoint directory named ``step-000050``."""
    match = _STEP_PATTERN.match(path.name)
    if not match:
        raise ValueError(f"{path}: not a checkpoint directory name")
    return int(match.group(1))


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
    """Read a checkpoint written by :func:`save_checkpoint` (safetensors and JSON only).

    Raises:
        CheckpointError: a file is missing, truncated or does not hold what lbr wrote into it.
    """
    state_file = path / STATE_NAME
    state = _read_json(state_file)
    if not isinstance(state.get("step"), int) or not isinstance(state.get("scheduler"), dict):
        raise CheckpointError(state_file, "not a checkpoint state (no integer 'step' or no 'scheduler' object)")
    trainable = _read_tensors(path / "trainable.safetensors")
    opt_plain = _read_json(path / "optimizer.json")
    opt_tensors = _read_tensors(path / "optimizer.safetensors")
    try:
        optimizer = optimizer_from_safetensors(opt_tensors, opt_plain)
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise CheckpointError(
            path / "optimizer.json",
            f"not an optimiser state matching optimizer.safetensors ({type(err).__name__}: {err})",
        ) from None
    rng_file = path / "rng.safetensors"
    rng = _read_tensors(rng_file).get("torch")
    expected = torch.get_rng_state()
    if rng is None or rng.dtype != expected.dtype or rng.shape != expected.shape:
        raise CheckpointError(rng_file, "no torch RNG state of the expected size")
    return {"state": state, "trainable": trainable, "optimizer": optimizer, "rng": rng}


def newest_readable(output: Path) -> tuple[tuple[Path, dict[str, Any]] | None, list[CheckpointError]]:
    """The newest complete checkpoint of ``output`` that loads, with its content, stepping back
    past damaged ones; and the errors of the damaged ones it stepped past, newest first.

    Any complete checkpoint is a valid place to resume from: the data order and the RNG depend
    only on the step, so stepping back costs the steps since then, not exactness. The first
    item is None when there is no checkpoint or none loads.
    """
    damaged: list[CheckpointError] = []
    for path in reversed(complete_checkpoints(output)):
        try:
            return (path, load_checkpoint(path)), damaged
        except CheckpointError as err:
            damaged.append(err)
    return None, damaged


def _read_json(file: Path) -> dict[str, Any]:
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(file, "file is missing") from None
    except OSError as err:
        raise CheckpointError(file, f"cannot be read ({err.strerror or err})") from None
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise CheckpointError(file, f"not valid JSON, the file is damaged ({err})") from None
    if not isinstance(value, dict):
        raise CheckpointError(file, f"not a JSON object (found {type(value).__name__})")
    return value


def _read_tensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(file)
    except FileNotFoundError:
        raise CheckpointError(file, "file is missing") from None
    except OSError as err:
        raise CheckpointError(file, f"cannot be read ({err.strerror or err})") from None
    except SafetensorError as err:
        raise CheckpointError(file, f"truncated or not a safetensors file ({err})") from None


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
