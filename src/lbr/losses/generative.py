"""Stage 1 (Learn): L_know + lambda * L_IB (+ beta * rate)."""

from __future__ import annotations

import torch
from torch import nn

from lbr.config import Stage1Config
from lbr.modeling.lbr_model import IGNORE_INDEX, LBRModel, masked_cross_entropy


def knowledge_loss(logits: torch.Tensor, input_ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
    """L_know: next-token cross-entropy on the text tokens of x only.

    Args:
        logits: (B, T, V) logits of the pass over ``[x ; bottleneck]``.
        input_ids: (B, T).
        text_mask: (B, T) True on tokens of x; bottleneck and padding are never targets.
    """
    labels = input_ids.masked_fill(~text_mask, IGNORE_INDEX)
    # Position t predicts token t+1.
    return masked_cross_entropy(logits[:, :-1], labels[:, 1:])


class Stage1Loss(nn.Module):
    """The stage-1 objective around an :class:`LBRModel`.

    ``forward(batch)`` returns a dict with ``loss`` and each term (``know``, ``ib``,
    ``ib_reconstruct``, ``ib_continue``, ``rate``), so every term can be logged.
    """

    def __init__(self, model: LBRModel, config: Stage1Config) -> None:
        super().__init__()
        self.model = model
        self.config = config

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        model, config = self.model, self.config
        hidden, z = model.encode_hidden(batch["input_ids"], batch["attention_mask"])
        terms: dict[str, torch.Tensor] = {}
        loss = hidden.new_zeros(())
        if config.know_weight > 0:
            terms["know"] = knowledge_loss(model.lm_logits(hidden), batch["input_ids"], batch["text_mask"])
            loss = loss + config.know_weight * terms["know"]
        if config.ib_weight > 0:
            prefix, rate = model.prefix(z)
            parts = []
            if config.target in ("reconstruct", "both"):
                terms["ib_reconstruct"] = model.decoder_loss(prefix, batch["reconstruct_ids"], batch["reconstruct_mask"])
                parts.append(terms["ib_reconstruct"])
            if config.target in ("continue", "both"):
                terms["ib_continue"] = model.decoder_loss(prefix, batch["continue_ids"], batch["continue_mask"])
                parts.append(terms["ib_continue"])
            terms["ib"] = torch.stack(parts).mean()
            loss = loss + config.ib_weight * terms["ib"]
            if rate is not None:
                terms["rate"] = rate
                loss = loss + model.config.rate_beta * rate
        terms["loss"] = loss
        return terms
