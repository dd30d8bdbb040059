"""One trainer for both stages, built on accelerate.

The loop reads top to bottom: pick the step's examples from a seeded permutation, collate,
forward the objective (a ``Stage1Loss`` or ``Stage2Loss``), backward, clip, step, log,
checkpoint. Data order is a pure function of (seed, step), so a resumed run sees exactly the
batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from lbr.config import TrainConfig
from lbr.errors import ConfigError, LBRError
from lbr.modeling.lbr_model import LBR_CONFIG_NAME, LBRModel, autocast
from lbr.training.checkpoint import (
    checkpoint_step,
    complete_checkpoints,
    newest_readable,
    save_checkpoint,
)

RUN_CONFIG_NAME = "run_config.json"
LOG_NAME = "train_log.jsonl"


class TrainingError(LBRError):
    """Training cannot go on (a NaN loss, for example). The last good checkpoint is kept."""


def prepare_output_dir(output: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to write into a non-empty directory unless resuming or told to overwrite."""
    if output.exists() and not output.is_dir():
        raise ConfigError(f"{output}: output exists and is not a directory")
    non_empty = output.exists() and any(output.iterdir())
    if non_empty and not resume:
        if not overwrite:
            raise ConfigError(
                f"{output}: output directory is not empty; pass --resume to continue the run "
                "in it, or --overwrite to replace it"
            )
        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)


def config_differences(
    saved: dict[str, Any], current: dict[str, Any], prefix: str = "", defaults: dict[str, Any] | None = None
) -> list[str]:
    """Human-readable differences between two nested config dicts.

    A setting added to lbr after ``saved`` was written is no difference when ``current`` holds
    its default (``defaults`` mirrors the nesting), so runs resume across such upgrades.
    """
    defaults = defaults or {}
    diffs = []
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key, "<unset>"), current.get(key, "<unset>")
        if isinstance(old, dict) and isinstance(new, dict):
            diffs.extend(config_differences(old, new, f"{prefix}{key}.", defaults.get(key)))
        elif key not in saved and key in defaults and new == defaults[key]:
            continue
        elif old != new:
            diffs.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return diffs


def _config_defaults() -> dict[str, Any]:
    from lbr.config import ModelConfig, Stage1Config, Stage2Config

    return {
        "model": dataclasses.asdict(ModelConfig()),
        "stage1": dataclasses.asdict(Stage1Config()),
        "stage2": dataclasses.asdict(Stage2Config()),
        "train": dataclasses.asdict(TrainConfig()),
    }


# Settings that may change on resume without changing the computation. Not the run's length:
# the learning-rate schedule is built from it, so a longer run would jump to another curve mid-run.
_RESUME_SAFE = {
    "train.gradient_checkpointing",
    "train.save_steps",
    "train.save_total_limit",
    "train.log_steps",
}


class Trainer:
    """Trains an objective module whose ``forward(batch)`` returns ``{"loss": ..., terms...}``.

    Args:
        model: the :class:`LBRModel` inside the objective (saved at the end).
        objective: ``Stage1Loss`` or ``Stage2Loss`` wrapping ``model``.
        examples: the training examples (segments or pairs).
        collate: ``collate(examples, generator) -> batch`` for one micro-batch.
        config: the training settings.
        run_config: every setting of this run, recorded and compared on resume.
        stage: "stage1" or "stage2", for messages and the saved metadata.
    """

    def __init__(
        self,
        model: LBRModel,
        objective: nn.Module,
        examples: Sequence[Any],
        collate: Callable[..., dict[str, torch.Tensor]],
        config: TrainConfig,
        *,
        run_config: dict[str, Any],
        stage: str,
        show_progress: bool = True,
    ) -> None:
        if len(examples) == 0:
            raise ConfigError(f"{stage}: no training examples")
        from accelerate import Accelerator

        self.model = model
        self.examples = examples
        self.collate = collate
        self.config = config
        self.run_config = run_config
        self.stage = stage
        self.output = Path(config.output)
        self.show_progress = show_progress
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        self.world = self.accelerator.num_processes
        self.rank = self.accelerator.process_index
        self.micro_batches_per_epoch = math.ceil(len(examples) / (config.batch_size * self.world))
        steps_per_epoch = math.ceil(self.micro_batches_per_epoch / config.gradient_accumulation_steps)
        self.total_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
        if config.gradient_checkpointing:
            model.enable_gradient_checkpointing()
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ConfigError(f"{stage}: the model has no trainable parameters")
        self.optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
        from transformers import get_scheduler

        name = "constant_with_warmup" if config.lr_scheduler == "constant" else config.lr_scheduler
        self.scheduler = get_scheduler(
            name,
            self.optimizer,
            num_warmup_steps=int(config.warmup_ratio * self.total_steps),
            num_training_steps=self.total_steps,
        )
        self.objective, self.optimizer = self.accelerator.prepare(objective, self.optimizer)

    # ------------------------------------------------------------------ data order
    def micro_batch_indices(self, micro_index: int) -> list[int]:
        """Example indices of global micro-batch ``micro_index`` for this process.

        Each epoch is a fresh permutation seeded by (seed, epoch); the stream continues across
        epochs, so step s always reads the same examples.
        """
        epoch, within = divmod(micro_index, self.micro_batches_per_epoch)
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.examples), generator=generator)
        global_size = self.config.batch_size * self.world
        chunk = order[within * global_size : (within + 1) * global_size]
        local = chunk[self.rank * self.config.batch_size : (self.rank + 1) * self.config.batch_size]
        return local.tolist()

    # ------------------------------------------------------------------ the loop
    def train(self, *, resume: bool = False, force: bool = False) -> dict[str, Any]:
        """Run to ``total_steps``, checkpointing; returns a summary of the last step."""
        config = self.config
        start_step = self._resume(force) if resume else 0
        if start_step == 0:
            (self.output / RUN_CONFIG_NAME).write_text(json.dumps(self.run_config, indent=2), encoding="utf-8")
            (self.output / LOG_NAME).unlink(missing_ok=True)
        if not resume or start_step == 0:
            torch.manual_seed(config.seed)
        accum = config.gradient_accumulation_steps
        self.objective.train()
        progress = tqdm(
            total=self.total_steps,
            initial=start_step,
            desc=self.stage,
            unit="step",
            disable=not (self.show_progress and self.accelerator.is_main_process),
            dynamic_ncols=True,
        )
        last: dict[str, float] = {}
        started = time.perf_counter()
        tokens_seen = 0
        for step in range(start_step, self.total_steps):
            sums: dict[str, float] = {}
            step_tokens = 0
            step_target_tokens: int | None = None  # stage 1 only
            for micro in range(accum):
                micro_index = step * accum + micro
                indices = self.micro_batch_indices(micro_index)
                if not indices:  # the last global micro-batch of an epoch can miss a process
                    indices = self.micro_batch_indices(micro_index - 1)
                generator = torch.Generator().manual_seed(self.config.seed * 7919 + micro_index)
                batch = self.collate([self.examples[i] for i in indices], generator)
                step_tokens += int(batch.pop("num_tokens", 0))
                if "num_target_tokens" in batch:
                    step_target_tokens = (step_target_tokens or 0) + int(batch.pop("num_target_tokens"))
                batch = {name: tensor.to(self.accelerator.device) for name, tensor in batch.items()}
                sync = contextlib.nullcontext() if micro == accum - 1 else self.accelerator.no_sync(self.objective)
                with sync:
                    with autocast(self.accelerator.device, "bfloat16" if config.bf16 else "float32"):
                        terms = self.objective(batch)
                    loss = terms["loss"]
                    if not torch.isfinite(loss):
                        self._fail_non_finite(step, terms)
                    self.accelerator.backward(loss / accum)
                for name, value in terms.items():
                    sums[name] = sums.get(name, 0.0) + float(value.detach()) / accum
            if config.max_grad_norm > 0:
                self.accelerator.clip_grad_norm_(self.objective.parameters(), config.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            tokens_seen += step_tokens * self.world
            elapsed = time.perf_counter() - started
            last = {
                "step": step + 1,
                **sums,
                "lr": self.scheduler.get_last_lr()[0],
                "tokens": step_tokens * self.world,
                "tokens_per_s": tokens_seen / max(elapsed, 1e-9),
            }
            if step_target_tokens is not None:  # stage 1: the tokens the decoder was trained to write
                last["target_tokens"] = step_target_tokens * self.world
            progress.set_postfix(loss=f"{sums['loss']:.4f}", tok_s=f"{last['tokens_per_s']:.0f}")
            progress.update(1)
            if self.accelerator.is_main_process and (
                (step + 1) % config.log_steps == 0 or step + 1 == self.total_steps
            ):
                with (self.output / LOG_NAME).open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(last) + "\n")
            if config.save_steps and (step + 1) % config.save_steps == 0 and step + 1 < self.total_steps:
                self._save_checkpoint(step + 1)
        progress.close()
        self._check_finite_weights(self.total_steps)  # the final model is saved after this
        self.accelerator.wait_for_everyone()
        return last

    def save_model(self, metadata: dict[str, Any]) -> None:
        """Write the final model into the output directory (lbr_config.json last)."""
        if not self.accelerator.is_main_process:
            return
        self.model.metadata = metadata
        self.model.save(self.output, merge=self.config.merge)

    # ------------------------------------------------------------------ internals
    def _fail_non_finite(self, step: int, terms: dict[str, torch.Tensor]) -> None:
        values = ", ".join(f"{name}={float(value.detach()):.4g}" for name, value in terms.items())
        kept = complete_checkpoints(self.output)
        where = f"the last good checkpoint is {kept[-1]}" if kept else "no checkpoint was written yet"
        raise TrainingError(
            f"{self.stage}: non-finite loss at step {step + 1} ({values}); stopping without saving. "
            f"{where}. Try a lower --learning-rate."
        )

    def _check_finite_weights(self, step: int) -> None:
        """Refuse to save NaN/inf weights.

        A finite loss can still give non-finite gradients (and, after the optimiser step,
        weights); the loss check alone would only notice one step later, after the checkpoint.
        """
        unwrapped = self.accelerator.unwrap_model(self.objective)
        bad = [name for name, p in unwrapped.named_parameters() if p.requires_grad and not torch.isfinite(p).all()]
        if bad:
            kept = complete_checkpoints(self.output)
            where = f"the last good checkpoint is {kept[-1]}" if kept else "no checkpoint was written yet"
            raise TrainingError(
                f"{self.stage}: non-finite weights after step {step} ({len(bad)} tensors, e.g. {bad[0]}); "
                f"stopping without saving. {where}. Try a lower --learning-rate."
            )

    def _save_checkpoint(self, step: int) -> None:
        self._check_finite_weights(step)
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            unwrapped = self.accelerator.unwrap_model(self.objective)
            trainable = {name: p for name, p in unwrapped.named_parameters() if p.requires_grad}
            save_checkpoint(
                self.output,
                step,
                trainable=trainable,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                extra={"run_config": self.run_config, "total_steps": self.total_steps},
                keep=self.config.save_total_limit,
            )
        self.accelerator.wait_for_everyone()

    def _resume(self, force: bool) -> int:
        saved_path = self.output / RUN_CONFIG_NAME
        saved = _read_run_config(saved_path, force)
        if saved is not None:
            diffs = [
                d
                for d in config_differences(saved, self.run_config, defaults=_config_defaults())
                if d.split(":")[0] not in _RESUME_SAFE
            ]
            if diffs and not force:
                raise ConfigError(
                    f"{self.output}: the run config differs from the one being resumed:\n  "
                    + "\n  ".join(diffs)
                    + "\nPass --force-resume to resume anyway."
                )
        if (
            (self.output / LOG_NAME).exists()
            and (self.output / LBR_CONFIG_NAME).exists()
            and not complete_checkpoints(self.output)
        ):
            raise ConfigError(f"{self.output}: this run already finished; use a new --output or --overwrite")
        if not complete_checkpoints(self.output):
            return 0
        path, checkpoint = self._load_newest_readable()
        # In epochs mode the length comes from the data and the process count, which the run
        # config does not hold; the schedule was built for the saved length (older checkpoints lack it).
        planned = checkpoint["state"].get("total_steps")
        if planned is not None and planned != self.total_steps and not force:
            raise ConfigError(
                f"{path}: this run was planned for {planned} steps, now it would take {self.total_steps} "
                "(the training data changed size, or the number of processes did), and the learning-rate "
                "schedule would jump. Pass --force-resume to resume anyway."
            )
        unwrapped = self.accelerator.unwrap_model(self.objective)
        params = dict(unwrapped.named_parameters())
        missing = [name for name in checkpoint["trainable"] if name not in params]
        if missing:
            raise ConfigError(f"{path}: tensors not in the model: {missing[:5]}")
        # --force-resume with a changed architecture (e.g. -k) would otherwise die in copy_().
        mismatched = [
            f"{name}: saved {tuple(tensor.shape)}, model {tuple(params[name].shape)}"
            for name, tensor in checkpoint["trainable"].items()
            if tensor.shape != params[name].shape
        ]
        if mismatched:
            raise ConfigError(
                f"{path}: the checkpoint does not fit this model (was the architecture changed?):\n  "
                + "\n  ".join(mismatched[:5])
            )
        with torch.no_grad():
            for name, tensor in checkpoint["trainable"].items():
                params[name].copy_(tensor)
        try:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
        except ValueError as err:  # e.g. a parameter group of another size; checked before any change
            raise ConfigError(
                f"{path / 'optimizer.json'}: the optimiser state does not fit this model ({err})"
            ) from None
        self.scheduler.load_state_dict(checkpoint["state"]["scheduler"])
        torch.set_rng_state(checkpoint["rng"])
        step = int(checkpoint["state"]["step"])
        self._truncate_log(step)
        if self.accelerator.is_main_process:
            print(f"lbr: resuming {self.stage} from {path} (step {step} of {self.total_steps})")
        return step

    def _load_newest_readable(self) -> tuple[Path, dict[str, Any]]:
        """The newest checkpoint that loads, stepping back past damaged ones with a warning.

        Damaged checkpoints are left in place; they are user-visible evidence of the damage.
        """
        found, damaged = newest_readable(self.output)
        if found is not None:
            path, checkpoint = found
            if self.accelerator.is_main_process:
                step = int(checkpoint["state"]["step"])
                for err in damaged:
                    lost = checkpoint_step(err.checkpoint)
                    redo = f"step {lost}" if lost == step + 1 else f"steps {step + 1}-{lost}"
                    print(
                        f"lbr: warning: {err}; checkpoint {err.checkpoint.name} is damaged, so the run resumes from "
                        f"the earlier {path.name} (step {step}) and computes {redo} again. "
                        "The damaged directory is left in place; the run replaces or rotates it out like any other.",
                        file=sys.stderr,
                    )
            return path, checkpoint
        newest = damaged[0]
        others = f" and the {len(damaged) - 1} earlier checkpoint(s) are damaged too" if len(damaged) > 1 else ""
        raise ConfigError(
            f"{newest}; the checkpoint {newest.checkpoint} is damaged{others}, so there is nothing to resume from "
            f"(nothing was deleted). Start the run again, either with a new --output, or without --resume and with "
            f"--overwrite, which deletes everything in {self.output}."
        )

    def _truncate_log(self, step: int) -> None:
        """Drop log lines the killed run wrote after its last checkpoint."""
        log = self.output / LOG_NAME
        if not log.exists() or not self.accelerator.is_main_process:
            return
        kept = [
            line
            for line in log.read_text(encoding="utf-8").splitlines()
            if line.strip() and _log_step(line) is not None and _log_step(line) <= step
        ]
        tmp = log.with_name(log.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        tmp.replace(log)

    def finish(self) -> None:
        """Remove checkpoints once the final model is saved (they are only for resuming)."""
        if self.accelerator.is_main_process:
            shutil.rmtree(self.output / "checkpoints", ignore_errors=True)


def _read_run_config(path: Path, force: bool) -> dict[str, Any] | None:
    """The saved settings of the run being resumed; None if there are none to compare with."""
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(saved, dict):
            raise ValueError(f"not a JSON object but {type(saved).__name__}")
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError too
        if force:
            return None
        raise ConfigError(
            f"{path}: damaged, not the JSON lbr wrote ({err}); the settings of the run being resumed "
            "cannot be compared with these. Pass --force-resume to resume without the comparison."
        ) from None
    return saved


def _log_step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def describe(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)
