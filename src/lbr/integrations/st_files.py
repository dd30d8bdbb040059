"""The files that make an lbr model directory loadable by ``SentenceTransformer(path)``.

Kept free of any sentence-transformers import: it runs inside every ``LBRModel.save``.

Layout written (next to lbr_config.json, which stays the source of truth):

- ``modules.json``: one module, :class:`lbr.integrations.sentence_transformers.LBRTransformer`,
  saved in the root so it reads the lbr files there. It normalises itself, so no ST
  ``Normalize`` module (and no subdirectory, which ``LBRModel.save``'s file-by-file move into an
  existing directory could not replace) is needed.
- ``config_sentence_transformers.json``: the prompts (``query`` = the model's instruction,
  ``document`` = ""), cosine similarity, and ``requirements: {"lbr": ...}`` so a user without
  lbr gets an install hint instead of an import error.
"""

from __future__ import annotations

import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

LBR_MODULE_CLASS = "lbr.integrations.sentence_transformers.LBRTransformer"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _write_json(path: Path, value: Any) -> None:
    # Write-then-rename: a reader never sees a half-written file.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def sentence_transformers_config(query_instruction: str) -> dict[str, Any]:
    """The content of config_sentence_transformers.json for a model with this instruction."""
    versions = {"lbr": _version("lbr"), "transformers": _version("transformers"), "pytorch": _version("torch")}
    st_version = _version("sentence-transformers")
    if st_version:
        versions["sentence_transformers"] = st_version
    lbr_version = versions["lbr"]
    requirements: dict[str, Any] = {
        "lbr": {
            # An lbr at least as new as the writer understands the directory.
            "specifier": f">={lbr_version}" if lbr_version else "",
            "reason": "the model's first module is lbr.integrations.sentence_transformers.LBRTransformer",
        }
    }
    return {
        "model_type": "SentenceTransformer",
        "__version__": {key: value for key, value in versions.items() if value},
        "prompts": {"query": query_instruction, "document": ""},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
        "requirements": requirements,
    }


def write_sentence_transformers_files(model_dir: str | Path, lbr_model: Any) -> None:
    """Write modules.json and config_sentence_transformers.json into ``model_dir``.

    Args:
        model_dir: an lbr model directory (or the temporary directory of ``LBRModel.save``).
        lbr_model: the model; only ``query_instruction`` is read, the rest lives in lbr files.
    """
    model_dir = Path(model_dir)
    _write_json(model_dir / "modules.json", [{"idx": 0, "name": "0", "path": "", "type": LBR_MODULE_CLASS}])
    _write_json(
        model_dir / "config_sentence_transformers.json",
        sentence_transformers_config(getattr(lbr_model, "query_instruction", "") or ""),
    )
