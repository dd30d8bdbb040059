"""``LBRTransformer``: an lbr model as the input module of a sentence-transformers model.

A saved lbr directory carries a ``modules.json`` naming this class (see
:mod:`lbr.integrations.st_files`), so with lbr installed::

    SentenceTransformer(path, trust_remote_code=True)   # ST >= 6 asks for the flag, see below
    load_sentence_transformer(path)                      # same model, no flag needed

Why the flag: sentence-transformers 6 refuses to import any module class outside its own
``sentence_transformers.*`` namespace unless ``trust_remote_code=True``, even from an installed
package and a local directory (``util.misc.import_module_class``). The class path here has
several dots, so ST never fetches code from the model directory for it; the flag only lets it
import ``lbr``. :func:`load_sentence_transformer` builds the same pipeline in code the caller
imported on purpose, so no flag is involved.

The pipeline is one module, ``LBRTransformer``: one pass over ``[x ; <lbr_0..k-1>]``, the
normalised mean of the k bottleneck states, the same numbers as ``LBRModel.encode``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from sentence_transformers.base.modules import InputModule

from lbr.modeling.lbr_model import LBR_CONFIG_NAME, LBRModel

try:
    from typing import Self
except ImportError:  # Python 3.10
    from typing_extensions import Self


class LBRTransformer(InputModule):
    """Tokenise with the bottleneck tokens appended, run the LLM, pool the k bottleneck states.

    Outputs ``sentence_embedding`` (B, d), L2-normalised like ``LBRModel.encode`` (the method
    defines e(x) normalised), and ``token_embeddings`` (B, T, d).
    """

    save_in_root = True

    def __init__(self, lbr_model: LBRModel) -> None:
        super().__init__()
        self.lbr_model = lbr_model
        self.tokenizer = lbr_model.tokenizer
        self.max_seq_length = lbr_model.config.max_length

    # ------------------------------------------------------------------ ST module API
    def preprocess(self, inputs: Sequence[str], prompt: str | None = None, **kwargs: Any) -> dict[str, torch.Tensor]:
        texts = [str(text) for text in inputs]
        if prompt:
            texts = self._prepend_prompt(texts, prompt)
        features = self.lbr_model.tokenize(texts, self.max_seq_length)
        return {"input_ids": features["input_ids"], "attention_mask": features["attention_mask"]}

    def forward(self, features: dict[str, torch.Tensor], **kwargs: Any) -> dict[str, torch.Tensor]:
        hidden, z = self.lbr_model.encode_hidden(features["input_ids"], features["attention_mask"])
        features["token_embeddings"] = hidden  # (B, T, d)
        features["sentence_embedding"] = self.lbr_model.pool(z, normalize=True)  # (B, d)
        return features

    def get_embedding_dimension(self) -> int:
        return self.lbr_model.hidden_size

    def get_word_embedding_dimension(self) -> int:
        return self.lbr_model.hidden_size

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        # LBRModel.save writes the lbr files (and, through its hook, ST's own files again).
        self.lbr_model.save(output_path)

    @classmethod
    def load(
        cls,
        model_name_or_path: str,
        subfolder: str = "",
        token: bool | str | None = None,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        **kwargs: Any,
    ) -> Self:
        """Load from a local directory or a Hub repository holding a saved lbr model.

        ``trust_remote_code`` given to ST is deliberately not passed on to the base LLM: it
        was needed to import this class, not to run the base model's own code.
        """
        local = Path(model_name_or_path) / subfolder
        if not (local / LBR_CONFIG_NAME).is_file():
            local = Path(
                cls.load_dir_path(
                    model_name_or_path,
                    subfolder=subfolder,
                    token=token,
                    cache_folder=cache_folder,
                    revision=revision,
                    local_files_only=local_files_only,
                )
            )
        return cls(LBRModel.load(local))

    def __repr__(self) -> str:
        config = self.lbr_model.config
        k, dim = config.num_bottleneck_tokens, self.lbr_model.hidden_size
        return f"LBRTransformer(model={config.model!r}, k={k}, dim={dim})"


def load_sentence_transformer(path: str | Path, device: str | None = None) -> Any:
    """A ``SentenceTransformer`` for a saved lbr directory, without ``trust_remote_code``.

    Equivalent to ``SentenceTransformer(path, trust_remote_code=True)`` for a local directory.
    """
    from sentence_transformers import SentenceTransformer

    path = Path(path)
    config_file = path / "config_sentence_transformers.json"
    saved = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    module = LBRTransformer.load(str(path))
    prompts = saved.get("prompts") or {"query": module.lbr_model.query_instruction, "document": ""}
    return SentenceTransformer(modules=[module], prompts=prompts, similarity_fn_name="cosine", device=device)
