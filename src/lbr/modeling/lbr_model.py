"""The LBR model: a causal LM, k bottleneck tokens, pooling and the z-conditioned decoder.

One forward pass over ``[x ; <lbr_0> .. <lbr_{k-1}>]`` gives both the next-token logits on x
and z(x), the final hidden states at the k bottleneck positions. Attention stays causal, so x
never sees the bottleneck tokens and the logits on x are those of the plain LM.

``build(config)`` makes a trainable model from a base LLM; ``load(path)`` reads a saved one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from lbr.config import ModelConfig, from_dict
from lbr.distributed import global_mean
from lbr.errors import ConfigError
from lbr.modeling.loading import check_no_custom_code, load_causal_lm

LBR_CONFIG_NAME = "lbr_config.json"
LBR_MODULES_NAME = "lbr_modules.safetensors"
FORMAT_VERSION = 1
STALE_WEIGHT_FILES = (
    "adapter_model.safetensors",
    "adapter_config.json",
    "model*.safetensors",
    "model.safetensors.index.json",
)


def bottleneck_token_names(k: int) -> list[str]:
    return [f"<lbr_{i}>" for i in range(k)]


class LBRModel(nn.Module):
    """A decoder-only LLM turned into an embedder through k bottleneck tokens.

    Attributes:
        backbone: the causal LM (a ``peft.PeftModel`` when tuning is LoRA).
        bottleneck: (k, d) trainable input embeddings of the bottleneck tokens.
        projector: P, the map from z to the decoder's prefix embeddings.
        rate_head: (only when rate_beta > 0) predicts log sigma^2 of q(z|x).
    """

    def __init__(self, backbone: nn.Module, tokenizer: Any, config: ModelConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.config = config
        self.query_instruction = ""
        self.metadata: dict[str, Any] = {}  # stage settings, recorded in lbr_config.json
        self._adapter_off = False  # inside a frozen-decoder pass (see checkpoint_contexts)
        names = bottleneck_token_names(config.num_bottleneck_tokens)
        ids = tokenizer.convert_tokens_to_ids(names)
        if ids != list(range(ids[0], ids[0] + len(ids))):
            raise ConfigError("bottleneck token ids are not contiguous in the tokenizer")
        self.first_bottleneck_id = ids[0]
        embeddings = self.input_embeddings.weight
        hidden = embeddings.shape[1]
        self.bottleneck = nn.Parameter(embeddings[ids].detach().clone())
        self.projector = None
        if config.projector in ("linear", "calibrated"):
            self.projector = nn.Linear(hidden, hidden)
            # Start as the identity so a fresh projector does not scramble z ("calibrated" is
            # then set from data by calibrate_projector before training).
            with torch.no_grad():
                self.projector.weight.copy_(torch.eye(hidden))
                self.projector.bias.zero_()
        self.rate_head = None
        if config.rate_beta > 0:
            self.rate_head = nn.Linear(hidden, hidden)
            with torch.no_grad():
                self.rate_head.weight.zero_()
                self.rate_head.bias.fill_(-4.0)  # sigma ~ 0.14 at the start

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, config: ModelConfig, *, seed: int | None = None) -> LBRModel:
        """A trainable model from a base LLM (the start of stage 1, or stage 2 for LLM+CL)."""
        if seed is not None:
            torch.manual_seed(seed)
        if Path(config.model).expanduser().exists():
            # Saved models record their base; a relative path would break from another directory.
            config = dataclasses.replace(config, model=str(Path(config.model).expanduser().resolve()))
        causal_lm, tokenizer = load_causal_lm(config.model, trust_remote_code=config.trust_remote_code)
        add_bottleneck_tokens(causal_lm, tokenizer, config.num_bottleneck_tokens)
        if config.tuning == "lora":
            causal_lm = wrap_lora(causal_lm, config)
        return cls(causal_lm, tokenizer, config)

    @classmethod
    def from_backbone(cls, causal_lm: nn.Module, tokenizer: Any, config: ModelConfig) -> LBRModel:
        """Wrap an already-loaded HF causal LM (used by tests and by Python users)."""
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        add_bottleneck_tokens(causal_lm, tokenizer, config.num_bottleneck_tokens)
        if config.tuning == "lora":
            causal_lm = wrap_lora(causal_lm, config)
        return cls(causal_lm, tokenizer, config)

    @classmethod
    def load(cls, path: str | Path, *, trainable: bool = False, trust_remote_code: bool = False) -> LBRModel:
        """Load a directory written by :meth:`save`.

        Args:
            path: the output directory of ``lbr learn`` / ``lbr represent``.
            trainable: keep the adapter (or all weights) trainable, to continue training.
        """
        path = Path(path)
        config_file = path / LBR_CONFIG_NAME
        if not config_file.exists():
            raise ConfigError(f"{path}: not an lbr model directory (no {LBR_CONFIG_NAME})")
        saved = _read_saved_config(config_file)
        model_values = dict(saved["model"])
        model_values["trust_remote_code"] = trust_remote_code
        config = from_dict(ModelConfig, model_values, source=str(config_file))
        try:
            return cls._load_weights(path, saved, config, trainable=trainable, trust_remote_code=trust_remote_code)
        except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as err:
            # A truncated or hand-edited file: say which directory, not a deep traceback.
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(f"{path}: damaged model directory ({type(err).__name__}: {first_line})") from None

    @classmethod
    def _load_weights(
        cls, path: Path, saved: dict[str, Any], config: ModelConfig, *, trainable: bool, trust_remote_code: bool
    ) -> LBRModel:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
        if saved["weights"] == "adapter":
            from peft import PeftModel

            causal_lm, _ = load_causal_lm(config.model, trust_remote_code=trust_remote_code)
            add_bottleneck_tokens(causal_lm, tokenizer, config.num_bottleneck_tokens, tokenizer_has_tokens=True)
            causal_lm = PeftModel.from_pretrained(causal_lm, path, is_trainable=trainable)
            if not trainable:
                # Inference only: fold the adapter into the weights, which removes the LoRA
                # matmuls from every layer (encoding measured ~20% faster; benchmarks/speed.py).
                causal_lm = causal_lm.merge_and_unload()
        else:
            check_no_custom_code(path, trust_remote_code=trust_remote_code)
            causal_lm = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
            if saved["weights"] == "merged" and trainable and config.tuning == "lora":
                raise ConfigError(f"{path}: merged LoRA weights cannot be trained further as LoRA")
            causal_lm.requires_grad_(trainable)
        model = cls(causal_lm, tokenizer, config)
        modules = load_file(path / LBR_MODULES_NAME)
        missing, unexpected = model.load_state_dict(modules, strict=False)
        unexpected = [name for name in unexpected if not name.startswith("backbone.")]
        if unexpected:
            raise ConfigError(f"{path / LBR_MODULES_NAME}: unexpected tensors {unexpected}")
        model.query_instruction = saved.get("query_instruction", "")
        model.metadata = {key: saved[key] for key in ("stages",) if key in saved}
        model.train(trainable)
        if not trainable:
            model.requires_grad_(False)
        return model

    def save(self, path: str | Path, *, merge: bool = False) -> None:
        """Write safetensors weights, the tokenizer and ``lbr_config.json`` (written last).

        With LoRA the adapter is saved unless ``merge`` is set, in which case the adapter is
        folded into full weights (a copy; the live model keeps its adapter).
        """
        path = Path(path)
        tmp = path / ".save.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        is_peft = self.is_peft
        if is_peft and not merge:
            self.backbone.save_pretrained(tmp, safe_serialization=True, save_embedding_layers=False)
            weights = "adapter"
        else:
            import copy

            full = copy.deepcopy(self.backbone)
            if is_peft:
                full = full.merge_and_unload()
            with torch.no_grad():
                full.get_input_embeddings().weight[self.bottleneck_ids] = self.bottleneck.detach()
            full.save_pretrained(tmp, safe_serialization=True)
            weights = "merged" if is_peft else "full"
        self.tokenizer.save_pretrained(tmp)
        save_file(self.module_state_dict(), tmp / LBR_MODULES_NAME)
        record = {
            "format_version": FORMAT_VERSION,
            "weights": weights,
            "model": dataclasses.asdict(self.config),
            "query_instruction": self.query_instruction,
            **self.metadata,
        }
        from lbr.integrations import write_ecosystem_files

        write_ecosystem_files(tmp, self, record, name=path.name)  # sentence-transformers files + model card
        # Unmark the directory while it changes, so a crash mid-save never leaves a directory
        # that looks complete; then drop weights of an earlier save in another form.
        (path / LBR_CONFIG_NAME).unlink(missing_ok=True)
        for stale in STALE_WEIGHT_FILES:
            for old in path.glob(stale):
                if not (tmp / old.name).exists():
                    old.unlink()
        # The config is the marker of a complete directory: move everything else first.
        for item in sorted(tmp.iterdir()):
            os.replace(item, path / item.name)
        tmp.rmdir()
        (path / (LBR_CONFIG_NAME + ".tmp")).write_text(json.dumps(record, indent=2), encoding="utf-8")
        os.replace(path / (LBR_CONFIG_NAME + ".tmp"), path / LBR_CONFIG_NAME)

    def module_state_dict(self) -> dict[str, torch.Tensor]:
        """The lbr-specific tensors: bottleneck rows, projector and rate head."""
        return {
            name: tensor.detach().clone().contiguous()
            for name, tensor in self.state_dict().items()
            if not name.startswith("backbone.")
        }

    # ------------------------------------------------------------------ properties
    @property
    def is_peft(self) -> bool:
        return hasattr(self.backbone, "disable_adapter")

    @property
    def causal_lm(self) -> nn.Module:
        return self.backbone.get_base_model() if self.is_peft else self.backbone

    @property
    def input_embeddings(self) -> nn.Embedding:
        return self.backbone.get_input_embeddings()

    @property
    def k(self) -> int:
        return self.config.num_bottleneck_tokens

    @property
    def bottleneck_ids(self) -> list[int]:
        return list(range(self.first_bottleneck_id, self.first_bottleneck_id + self.k))

    @property
    def hidden_size(self) -> int:
        return self.bottleneck.shape[1]

    @property
    def device(self) -> torch.device:
        return self.bottleneck.device

    # ------------------------------------------------------------------ tokenisation
    def tokenize(self, texts: Sequence[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
        """Tokenise texts, append the k bottleneck tokens and right-pad.

        Returns:
            input_ids, attention_mask: (B, T) with T = max(len(x_i)) + k.
            text_mask: (B, T) True on the tokens of x (where L_know applies).
        """
        max_length = max_length or self.config.max_length
        encoded = self.tokenizer(list(texts), truncation=True, max_length=max_length, add_special_tokens=True)[
            "input_ids"
        ]
        return self.pad_with_bottleneck(encoded)

    def pad_with_bottleneck(self, token_lists: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        k = self.k
        width = max(len(ids) for ids in token_lists) + k
        batch = len(token_lists)
        input_ids = torch.full((batch, width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((batch, width), dtype=torch.long)
        text_mask = torch.zeros((batch, width), dtype=torch.bool)
        for row, ids in enumerate(token_lists):
            n = len(ids)
            input_ids[row, :n] = torch.tensor(ids, dtype=torch.long)
            input_ids[row, n : n + k] = torch.tensor(self.bottleneck_ids)
            attention_mask[row, : n + k] = 1
            text_mask[row, :n] = True
        return {"input_ids": input_ids, "attention_mask": attention_mask, "text_mask": text_mask}

    # ------------------------------------------------------------------ forward passes
    def embed_inputs(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings with the bottleneck positions taken from ``self.bottleneck``."""
        embeds = self.input_embeddings(input_ids)  # (B, T, d)
        slot = input_ids - self.first_bottleneck_id  # (B, T), in [0, k) at bottleneck positions
        is_bottleneck = (slot >= 0) & (slot < self.k)
        if not bool(is_bottleneck.any()):
            return embeds
        replacement = self.bottleneck[slot.clamp(0, self.k - 1)]  # (B, T, d)
        return torch.where(is_bottleneck.unsqueeze(-1), replacement, embeds)

    def hidden_states(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Final-layer (post-norm) hidden states, (B, T, d), of the adapted model."""
        inner = self.causal_lm.base_model  # e.g. LlamaModel inside LlamaForCausalLM
        out = inner(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False)
        return out.last_hidden_state

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.causal_lm.get_output_embeddings()(hidden)

    def encode_hidden(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, token_budget: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass over ``[x ; bottleneck]``.

        Args:
            token_budget: if > 0, rows are sorted by length and run in chunks of at most this
                many (padded) tokens, each trimmed to its own longest row. Same result, much
                less compute spent on padding when lengths vary.
        Returns:
            hidden: (B, T, d) final hidden states (zero on padding trimmed away).
            z: (B, k, d) the hidden states at the bottleneck positions.
        """
        lengths = attention_mask.sum(dim=1)  # (B,)
        hidden = torch.zeros(*input_ids.shape, self.hidden_size, device=input_ids.device, dtype=self.bottleneck.dtype)
        for rows in length_chunks(lengths, token_budget):
            width = int(lengths[rows].max())
            chunk = self.hidden_states(self.embed_inputs(input_ids[rows, :width]), attention_mask[rows, :width])
            chunk = F.pad(chunk.to(hidden.dtype), (0, 0, 0, input_ids.shape[1] - width))  # autocast may give bf16
            hidden = hidden.index_copy(0, rows, chunk)
        # Right padding: row i's bottleneck occupies positions len_i - k .. len_i - 1.
        positions = lengths.unsqueeze(1) - self.k + torch.arange(self.k, device=hidden.device)
        z = hidden[torch.arange(hidden.shape[0], device=hidden.device).unsqueeze(1), positions]
        return hidden, z

    def pool(self, z: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """e(x) = normalize(mean_i z_i): (B, k, d) -> (B, d)."""
        pooled = z.mean(dim=1)
        return F.normalize(pooled, dim=-1) if normalize else pooled

    def prefix(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """P(z), the decoder's prefix, and the KL rate term when rate_beta > 0.

        With the rate term, q(z|x) = N(mu = P(z), sigma^2) and the prefix is a sample while
        training (the mean at evaluation). The KL to N(0, I) is averaged over elements.
        """
        mu = self.projector(z) if self.projector is not None else z
        if self.rate_head is None:
            return mu, None
        logvar = self.rate_head(z)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).mean()
        if self.training:
            mu = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        return mu, kl

    @torch.no_grad()
    def calibrate_projector(self, token_lists: Sequence[Sequence[int]], *, batch_size: int = 16) -> None:
        """Set P to the per-dimension affine map that moves final hidden states onto the
        distribution of input embeddings (mean and standard deviation of each dimension).

        Final hidden states are no input embeddings: SmolLM2's reach norm ~50 with one
        dimension near 38, against ~3 and |x| < 2 for its token embeddings. Fed as a prefix
        unchanged, they make the untrained decoder's loss on y far worse than no prefix at all
        (docs/RESULTS.md), and L_IB spends its steps repairing that instead of carrying x
        through z. The map stays trainable.

        Args:
            token_lists: tokenised texts; the statistics come from their text positions.
        """
        if self.projector is None or self.config.projector != "calibrated":
            raise ConfigError(f"calibrate_projector needs projector='calibrated', not {self.config.projector!r}")
        if not token_lists:
            raise ConfigError("calibrate_projector needs at least one text")
        was_training = self.training
        self.eval()
        states = []
        for start in range(0, len(token_lists), batch_size):
            batch = self.pad_with_bottleneck(token_lists[start : start + batch_size])
            hidden, _ = self.encode_hidden(batch["input_ids"], batch["attention_mask"], token_budget=1024)
            states.append(hidden[batch["text_mask"]].float())
        self.train(was_training)
        h = torch.cat(states)  # (n, d)
        embeddings = self.input_embeddings.weight.float()
        scale = embeddings.std(dim=0) / h.std(dim=0).clamp_min(1e-6)
        self.projector.weight.copy_(torch.diag(scale))
        self.projector.bias.copy_(embeddings.mean(dim=0) - h.mean(dim=0) * scale)

    def decoder_loss(
        self, prefix: torch.Tensor, target_ids: torch.Tensor, target_mask: torch.Tensor, *, token_budget: int = 0
    ) -> torch.Tensor:
        """-log p(y | P(z)): the decoder sees only the prefix, then teacher-forced y.

        Args:
            prefix: (B, k, d) prefix input embeddings P(z).
            target_ids: (B, m) tokens of y, right-padded.
            target_mask: (B, m) 1 on real tokens of y.
            token_budget: run length-sorted chunks of at most this many tokens (0: one pass).
        Returns:
            mean cross-entropy over the real tokens of y (0 if there are none).
        """
        if self.config.decoder == "frozen":
            with self._frozen_decoder():
                return self._decoder_loss(prefix, target_ids, target_mask, token_budget)
        return self._decoder_loss(prefix, target_ids, target_mask, token_budget)

    @contextlib.contextmanager
    def _frozen_decoder(self):
        """Run the base weights: the adapter off, and remembered for gradient checkpointing."""
        self._adapter_off = True
        try:
            with self.backbone.disable_adapter():
                yield
        finally:
            self._adapter_off = False

    def enable_gradient_checkpointing(self) -> None:
        """Recompute layer activations in backward instead of keeping them (less memory)."""
        self.causal_lm.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False, "context_fn": self.checkpoint_contexts}
        )

    def checkpoint_contexts(self) -> tuple[Any, Any]:
        """``context_fn`` for non-reentrant gradient checkpointing.

        Checkpointed layers are recomputed during backward, when the frozen decoder's
        ``disable_adapter`` block has long ended; recompute them with the adapter state they
        ran with, or the recomputed activations would differ from the forward ones.
        """
        if self._adapter_off:
            return contextlib.nullcontext(), self.backbone.disable_adapter()
        return contextlib.nullcontext(), contextlib.nullcontext()

    def _decoder_loss(
        self, prefix: torch.Tensor, target_ids: torch.Tensor, target_mask: torch.Tensor, token_budget: int = 0
    ) -> torch.Tensor:
        k = prefix.shape[1]
        lengths = target_mask.sum(dim=1)
        total, count = prefix.new_zeros(()), 0
        for rows in length_chunks(lengths + k, token_budget):
            width = int(lengths[rows].max())
            if width == 0:
                continue
            ids, mask = target_ids[rows, :width], target_mask[rows, :width]
            inputs = torch.cat([prefix[rows], self.input_embeddings(ids)], dim=1)  # (b, k+m, d)
            full_mask = torch.cat([torch.ones(len(rows), k, dtype=mask.dtype, device=mask.device), mask], dim=1)
            hidden = self.hidden_states(inputs, full_mask)
            # Position k-1+j predicts y_j; logits only where a real target token exists.
            predicting = hidden[:, k - 1 : -1][mask.bool()]  # (n, d)
            logits = self.lm_logits(predicting)
            total = total + F.cross_entropy(logits.float(), ids[mask.bool()], reduction="sum")
            count += int(mask.sum())
        return global_mean(total, count)

    # ------------------------------------------------------------------ encode API
    @torch.inference_mode()
    def encode(
        self,
        sentences: str | Sequence[str],
        *,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        normalize_embeddings: bool = True,
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        max_length: int | None = None,
        precision: str = "float32",
    ) -> np.ndarray | torch.Tensor:
        """Embed texts, sentence-transformers style.

        ``precision="bfloat16"`` autocasts the matmuls (about 1.9x faster on a CPU with AMX,
        see docs/PERFORMANCE.md); outputs are float32 either way.

        Texts are sorted by length so each batch carries little padding, then the output is put
        back in input order. A single string gives a 1-D result.

        Returns:
            (N, d) float32 numpy array, or a tensor with ``convert_to_tensor=True``.
        """
        single = isinstance(sentences, str)
        texts = [sentences] if single else list(sentences)
        if prompt:
            texts = [prompt + text for text in texts]
        was_training = self.training
        self.eval()
        order = np.argsort([-len(text) for text in texts], kind="stable")
        if show_progress_bar is None:
            show_progress_bar = len(texts) > 4 * batch_size
        chunks = []
        for start in tqdm(range(0, len(texts), batch_size), desc="encode", disable=not show_progress_bar, unit="batch"):
            batch_texts = [texts[i] for i in order[start : start + batch_size]]
            features = self.tokenize(batch_texts, max_length)
            with autocast(self.device, precision):
                _, z = self.encode_hidden(
                    features["input_ids"].to(self.device), features["attention_mask"].to(self.device)
                )
            chunks.append(self.pool(z, normalize=normalize_embeddings).float().cpu())
        self.train(was_training)
        if not chunks:
            embeddings = torch.zeros(0, self.hidden_size)
        else:
            sorted_embeddings = torch.cat(chunks)
            embeddings = torch.empty_like(sorted_embeddings)
            embeddings[torch.as_tensor(order)] = sorted_embeddings
        if single:
            embeddings = embeddings[0]
        if convert_to_tensor or not convert_to_numpy:
            return embeddings
        return embeddings.numpy()

    def encode_query(self, sentences: str | Sequence[str], *, instruction: str | None = None, **kwargs: Any):
        """Embed queries with the instruction prefix used in stage 2 (or ``instruction``)."""
        prefix = self.query_instruction if instruction is None else instruction
        return self.encode(sentences, prompt=prefix or None, **kwargs)

    def encode_document(self, sentences: str | Sequence[str], **kwargs: Any):
        """Embed documents (no instruction)."""
        return self.encode(sentences, **kwargs)

    def merge_for_inference(self) -> LBRModel:
        """Fold a LoRA adapter into the weights, as :meth:`load` does for inference.

        The embeddings stay the same and encoding gets faster (1.4x for an untrained adapter on
        SmolLM2, docs/PERFORMANCE.md), but the model can no longer be trained as LoRA.
        """
        from peft import PeftModel

        if isinstance(self.backbone, PeftModel):
            self.backbone = self.backbone.merge_and_unload()
        return self

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        return {name: p for name, p in self.named_parameters() if p.requires_grad}


def autocast(device: torch.device, precision: str) -> Any:
    """A bfloat16 autocast context for ``precision="bfloat16"``, else a no-op."""
    if precision not in ("float32", "bfloat16"):
        raise ConfigError(f"precision must be float32 or bfloat16, not {precision!r}")
    if precision == "float32":
        return contextlib.nullcontext()  # leaves any autocast the caller opened in force
    if device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn(
            "bfloat16 autocast on a CPU without AVX512-BF16 or AMX: it runs slower than float32 "
            "here (about 6x slower on an AVX2-only AMD EPYC, as seen once; docs/PERFORMANCE.md); "
            "leave it off on this machine",
            RuntimeWarning,
            stacklevel=3,
        )
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 matmuls natively (AVX512-BF16 or AMX, via oneDNN)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _read_saved_config(config_file: Path) -> dict[str, Any]:
    """lbr_config.json, checked enough that loading fails with a clear message."""
    try:
        saved = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{config_file}: unreadable ({err})") from None
    if not isinstance(saved, dict):
        raise ConfigError(f"{config_file}: expected a JSON object")
    if saved.get("format_version") != FORMAT_VERSION:
        raise ConfigError(f"{config_file}: unsupported format_version {saved.get('format_version')!r}")
    for key, kind in (("model", dict), ("weights", str)):
        if not isinstance(saved.get(key), kind):
            raise ConfigError(f"{config_file}: field '{key}' is missing or not a {kind.__name__}")
    if saved["weights"] not in ("adapter", "merged", "full"):
        raise ConfigError(f"{config_file}: field 'weights' must be adapter, merged or full")
    return saved


def length_chunks(lengths: torch.Tensor, token_budget: int) -> list[torch.Tensor]:
    """Row indices grouped so each group, padded to its longest row, fits ``token_budget``.

    Rows are taken longest first; with ``token_budget <= 0`` all rows form one group.
    """
    if token_budget <= 0 or lengths.numel() <= 1:
        return [torch.arange(lengths.numel(), device=lengths.device)]
    order = torch.argsort(lengths, descending=True, stable=True)
    chunks, start = [], 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)
        size = max(1, token_budget // longest)
        chunks.append(order[start : start + size])
        start += size
    return chunks


def add_bottleneck_tokens(causal_lm: nn.Module, tokenizer: Any, k: int, *, tokenizer_has_tokens: bool = False) -> None:
    """Add <lbr_0..k-1> to the tokenizer and give them rows initialised to the mean embedding.

    The mean (not a random draw) keeps construction deterministic, so a LoRA directory can be
    rebuilt exactly from its base model.
    """
    names = bottleneck_token_names(k)
    if not tokenizer_has_tokens:
        existing = set(tokenizer.get_vocab())
        missing = [name for name in names if name not in existing]
        if missing:
            tokenizer.add_tokens(missing, special_tokens=True)
    ids = tokenizer.convert_tokens_to_ids(names)
    embeddings = causal_lm.get_input_embeddings()
    old_rows = embeddings.weight.shape[0]
    needed = max(len(tokenizer), max(ids) + 1)
    if needed > old_rows:
        causal_lm.resize_token_embeddings(needed, mean_resizing=False)
        weight = causal_lm.get_input_embeddings().weight
        with torch.no_grad():
            weight[old_rows:] = weight[:old_rows].mean(dim=0)
        output = causal_lm.get_output_embeddings()
        if output is not None and output.weight is not weight:
            with torch.no_grad():
                output.weight[old_rows:] = output.weight[:old_rows].mean(dim=0)


def wrap_lora(causal_lm: nn.Module, config: ModelConfig) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    targets = config.lora_target_modules
    target_modules: str | list[str] = (
        targets if targets == "all-linear" else [name.strip() for name in targets.split(",") if name.strip()]
    )
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(causal_lm, lora)
