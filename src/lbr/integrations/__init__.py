"""Bridges to the wider ecosystem: sentence-transformers, MTEB, model cards and FAISS indexes.

The writers here import nothing heavy, so :meth:`lbr.modeling.LBRModel.save` can call
:func:`write_ecosystem_files` on every save. The sentence-transformers module class lives in
``lbr.integrations.sentence_transformers`` and the MTEB wrapper in ``lbr.integrations.mteb``;
each imports its library only when used.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lbr.integrations.model_card import write_model_card
from lbr.integrations.st_files import write_sentence_transformers_files

__all__ = ["write_ecosystem_files", "write_model_card", "write_sentence_transformers_files"]


def write_ecosystem_files(
    model_dir: str | Path,
    lbr_model: Any,
    record: Mapping[str, Any] | None = None,
    *,
    name: str | None = None,
) -> None:
    """Write the sentence-transformers files and the model card (README.md) of a model directory.

    Args:
        model_dir: the model directory, or the temporary directory ``LBRModel.save`` fills
            before moving its files into place (then pass ``record``: no lbr_config.json yet).
        lbr_model: the :class:`~lbr.modeling.LBRModel` being saved.
        record: the content of lbr_config.json; read from ``model_dir`` when not given.
        name: the model's name in the card (default: the directory's name).
    """
    write_sentence_transformers_files(model_dir, lbr_model)
    metadata = dict(record or {})
    if name:
        metadata.setdefault("name", name)
    write_model_card(model_dir, metadata)
