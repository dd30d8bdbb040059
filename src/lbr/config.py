"""Configuration dataclasses for the model, stage 1, stage 2 and training.

Every field carries a help text in its metadata; the CLI turns each field into a flag
(``--ib-weight``) and also accepts a YAML/JSON file holding the same names. Precedence is
defaults < config file < flags. Each dataclass validates itself in ``__post_init__`` so a bad
value fails when it is set, not twenty minutes into a run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lbr.errors import ConfigError

DEFAULT_MODEL = "smollm2"


def _help(text: str, **kwargs: Any) -> Any:
    return field(metadata={"help": text}, **kwargs)


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(choices)}")


@dataclass
class ModelConfig:
    """The backbone, the bottleneck and how the backbone is tuned."""

    model: str = _help(
        "backbone: 'smollm2' (the embedded SmolLM2-135M-Instruct), a hub id, a local HF "
        "directory, a .gguf file, or an lbr output directory",
        default=DEFAULT_MODEL,
    )
    num_bottleneck_tokens: int = _help(
        "k, the number of bottleneck tokens <lbr_0>..<lbr_k-1> appended to every text", default=4
    )
    projector: str = _help(
        "P, the map from z to the decoder's prefix: 'identity', 'linear' (d->d, starts as the "
        "identity) or 'calibrated' (d->d, starts as the map from hidden-state to input-embedding "
        "statistics, measured on the first training texts; the default: with 'identity' the "
        "bottleneck carries almost nothing, docs/RESULTS.md)",
        default="calibrated",
    )
    decoder: str = _help(
        "the decoder for L_IB/L_gen: 'shared' (the adapted weights) or 'frozen' (base "
        "weights, adapter disabled; needs tuning=lora)",
        default="shared",
    )
    rate_beta: float = _help(
        "weight of the variational rate term KL(q(z|x) || N(0,I)) beside L_IB (stage 1) and L_gen "
        "(stage 2, when mu > 0; it is not scaled by mu there); the decoder's prefix is then sampled "
        "while training; 0 turns it off",
        default=0.0,
    )
    tuning: str = _help("'lora' (peft adapter) or 'full' (every weight)", default="lora")
    lora_r: int = _help("LoRA rank", default=16)
    lora_alpha: int = _help("LoRA alpha (scale = alpha / r)", default=32)
    lora_dropout: float = _help("LoRA dropout", default=0.0)
    lora_target_modules: str = _help("comma-separated module names to adapt, or 'all-linear'", default="all-linear")
    max_length: int = _help(
        "maximum text tokens when the saved model encodes (before the bottleneck tokens); training "
        "uses --segment-length (stage 1) and --max-query-length / --max-document-length (stage 2)",
        default=256,
    )
    trust_remote_code: bool = _help(
        "allow a model directory to run its own Python code (off unless you trust it)",
        default=False,
    )

    def __post_init__(self) -> None:
        if not 1 <= self.num_bottleneck_tokens <= 64:
            raise ConfigError("num_bottleneck_tokens must be between 1 and 64")
        _choice("projector", self.projector, ("identity", "linear", "calibrated"))
        _choice("decoder", self.decoder, ("shared", "frozen"))
        _choice("tuning", self.tuning, ("lora", "full"))
        if self.decoder == "frozen" and self.tuning != "lora":
            raise ConfigError(
                "decoder='frozen' runs the base weights by disabling the LoRA adapter, so it needs tuning='lora'"
            )
        if self.rate_beta < 0:
            raise ConfigError("rate_beta must be >= 0")
        if self.lora_r < 1:
            raise ConfigError("lora_r must be >= 1")
        if self.max_length < 1:
            raise ConfigError("max_length must be >= 1")


@dataclass
class TrainConfig:
    """Settings shared by both stages' training loops."""

    output: str = _help("output directory (never overwritten without --overwrite)", default="")
    batch_size: int = _help("examples per optimiser step and process, before accumulation", default=16)
    gradient_accumulation_steps: int = _help("micro-batches accumulated per step", default=1)
    learning_rate: float = _help("peak learning rate", default=2e-4)
    weight_decay: float = _help("AdamW weight decay", default=0.0)
    epochs: float = _help("passes over the data (ignored when max_steps > 0)", default=1.0)
    max_steps: int = _help("stop after this many optimiser steps (0: use epochs)", default=0)
    warmup_ratio: float = _help("fraction of steps with linear warm-up", default=0.05)
    lr_scheduler: str = _help("'cosine', 'linear' or 'constant'", default="cosine")
    max_grad_norm: float = _help("gradient clipping norm (0: off)", default=1.0)
    seed: int = _help("seed for initialisation, data order and sampling", default=42)
    save_steps: int = _help("write a checkpoint every N steps (0: none, so a stopped run cannot resume)", default=50)
    save_total_limit: int = _help("keep at most this many checkpoints", default=2)
    log_steps: int = _help("append losses to train_log.jsonl every N steps", default=1)
    gradient_checkpointing: bool = _help(
        "recompute activations in the backward pass: on SmolLM2 it halves stage 1's memory at no "
        "time cost, and in stage 2 saves 30% of memory at 1.35x the time on short pairs, 2.4-2.7x "
        "of memory at about the same time on long pairs or with mu > 0 (docs/PERFORMANCE.md, section 4)",
        default=True,
    )
    token_budget: int = _help(
        "run each micro-batch in length-sorted chunks of at most this many padded tokens, so "
        "little compute goes to padding (0: one pass per micro-batch)",
        default=1024,
    )
    bf16: bool = _help(
        "autocast matmuls to bfloat16 (weights and optimiser stay float32): 1.2-1.6x faster steps "
        "without gradient checkpointing on a CPU with AMX (docs/PERFORMANCE.md), much slower on one "
        "without AVX512-BF16 or AMX (lbr warns); effect on quality not yet measured",
        default=False,
    )
    merge: bool = _help(
        "save merged full weights instead of the LoRA adapter (bigger, no peft at load)",
        default=False,
    )

    def __post_init__(self) -> None:
        for name in ("batch_size", "gradient_accumulation_steps", "save_total_limit", "log_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")
        if self.learning_rate <= 0:
            raise ConfigError("learning_rate must be > 0")
        if self.max_steps < 0 or self.save_steps < 0:
            raise ConfigError("max_steps and save_steps must be >= 0")
        if self.max_steps == 0 and self.epochs <= 0:
            raise ConfigError("set epochs > 0 or max_steps > 0")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError("warmup_ratio must be in [0, 1)")
        _choice("lr_scheduler", self.lr_scheduler, ("cosine", "linear", "constant"))


@dataclass
class Stage1Config:
    """Stage 1 (Learn): L_know + lambda * L_IB on an unlabeled corpus."""

    corpus: str = _help("a .txt or .jsonl (field 'text') file, or a directory of them", default="")
    segment_length: int = _help("tokens per segment x the corpus is cut into", default=64)
    target: str = _help(
        "what the decoder must generate from z(x): 'reconstruct' (x), 'continue' (the next "
        "segment) or 'both' (the mean of the two losses)",
        default="reconstruct",
    )
    ib_weight: float = _help("lambda, the weight of L_IB (0 gives plain CLM)", default=1.0)
    know_weight: float = _help("weight of L_know (1 in the method; 0 trains only L_IB)", default=1.0)
    max_target_length: int = _help("maximum tokens of the decoder target y", default=64)
    text_field: str = _help("jsonl field holding the text", default="text")
    next_field: str = _help(
        "optional jsonl field holding the text that follows a record: the `continue` target's y for "
        "the record's last segment (a record without it continues with its own next segment)",
        default="next",
    )
    max_line_bytes: int = _help("reject corpus lines longer than this", default=1_000_000)

    def __post_init__(self) -> None:
        _choice("target", self.target, ("reconstruct", "continue", "both"))
        if self.next_field == self.text_field:
            raise ConfigError(f"next_field and text_field are both {self.text_field!r}; they must differ")
        if self.segment_length < 2 or self.max_target_length < 1:
            raise ConfigError("segment_length must be >= 2 and max_target_length >= 1")
        if self.ib_weight < 0 or self.know_weight < 0:
            raise ConfigError("ib_weight and know_weight must be >= 0")
        if self.ib_weight == 0 and self.know_weight == 0:
            raise ConfigError("ib_weight and know_weight are both 0: nothing to train")

    def decoder_targets(self) -> tuple[str, ...]:
        """The texts the decoder is trained to write from z(x): none when lambda is 0."""
        if self.ib_weight == 0:
            return ()
        return ("reconstruct", "continue") if self.target == "both" else (self.target,)


@dataclass
class Stage2Config:
    """Stage 2 (Represent): InfoNCE + mu * L_gen on (query, positive, negatives) pairs."""

    pairs: str = _help("jsonl with fields query, positive and optional negatives", default="")
    temperature: float = _help("tau of InfoNCE", default=0.05)
    gen_weight: float = _help("mu, the weight of L_gen (0 gives plain contrastive)", default=0.1)
    gen_target: str = _help(
        "L_gen terms: 'query' (-log p(d+|z(q))), 'document' (-log p(d|z(d))) or 'both'",
        default="document",
    )
    num_negatives: int = _help("hard negatives used per pair (0: in-batch only)", default=1)
    query_instruction: str = _help("instruction prefixed to every query, at training and at encode_query", default="")
    max_query_length: int = _help("maximum query tokens", default=64)
    max_document_length: int = _help("maximum document tokens", default=128)
    max_line_bytes: int = _help("reject pair lines longer than this", default=1_000_000)
    cache_mini_batch: int = _help(
        "cached (GradCache) contrastive loss: embed the batch in mini-batches of this many texts "
        "without autograd, then backpropagate each mini-batch alone, so memory no longer grows "
        "with the batch; needs mu = 0 and one process (0: off, the plain loss)",
        default=0,
    )

    def __post_init__(self) -> None:
        if self.cache_mini_batch < 0:
            raise ConfigError("cache_mini_batch must be >= 0")
        if self.cache_mini_batch > 0 and self.gen_weight > 0:
            raise ConfigError(
                f"cache_mini_batch={self.cache_mini_batch} caches only the contrastive loss: set gen_weight (--mu) to 0"
            )
        if self.temperature <= 0:
            raise ConfigError("temperature must be > 0")
        if self.gen_weight < 0:
            raise ConfigError("gen_weight must be >= 0")
        _choice("gen_target", self.gen_target, ("query", "document", "both"))
        if self.num_negatives < 0:
            raise ConfigError("num_negatives must be >= 0")


def config_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init]


def from_dict(cls: type, values: dict[str, Any], *, source: str = "config") -> Any:
    """Build ``cls`` from a dict, rejecting unknown keys with a helpful message."""
    names = {f.name for f in config_fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown {cls.__name__} option(s): {', '.join(unknown)}")
    # A config file can hold any YAML type; name the field instead of failing in __post_init__.
    values = dict(values)
    for f in config_fields(cls):
        accepted = _SCALAR_TYPES.get(str(f.type))
        value = values.get(f.name)
        if str(f.type) == "float" and isinstance(value, str):
            # YAML 1.1 reads `1e-4` (no dot) as a string.
            with contextlib.suppress(ValueError):
                values[f.name] = value = float(value)
        if f.name in values and accepted and (not isinstance(value, accepted) or _is_bool_for_number(value, accepted)):
            raise ConfigError(f"{source}: field '{f.name}': expected {f.type}, got {type(value).__name__} ({value!r})")
    try:
        return cls(**values)
    except TypeError as err:
        raise ConfigError(f"{source}: {err}") from None


_SCALAR_TYPES: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}


def _is_bool_for_number(value: Any, accepted: tuple[type, ...]) -> bool:
    return isinstance(value, bool) and bool not in accepted


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a flat dict of option names."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML/JSON: {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: invalid UTF-8 at byte {err.start}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values")
    # Allow grouped files (model_config: {...}, train: {...}, stage1: {...}, stage2: {...})
    # as well as flat ones.
    flat: dict[str, Any] = {}
    for key, value in data.items():
        grouped = key in ("model_config", "train", "stage1", "stage2") and isinstance(value, dict)
        inner = [k for k in value if not isinstance(k, str)] if grouped else []
        if not isinstance(key, str) or inner:
            raise ConfigError(f"{path}: option names must be text, found {(inner or [key])[0]!r}")
        if grouped:
            flat.update({inner.replace("-", "_"): inner_value for inner, inner_value in value.items()})
        else:
            flat[key.replace("-", "_")] = value
    return flat


def to_json(obj: Any) -> str:
    return json.dumps(dataclasses.asdict(obj), indent=2, sort_keys=True)
