"""Stage 1 (Learn): L_know + lambda * L_IB (+ beta * rate)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lbr.config import Stage1Config
from lbr.distributed import global_mean
from lbr.modeling.lbr_model import LBRModel


def knowledge_loss(
    model: LBRModel, hidden: torch.Tensor, input_ids: torch.Tensor, text_mask: torch.Tensor
) -> torch.Tensor:
    """L_know: next-token cross-entropy on the text tokens of x only.

    Logits are computed only where a text token is predicted: the vocabulary projection
    is a large share of the cost, and bottleneck and padding positions are never targets.

    Args:
        hidden: (B, T, d) hidden states of the pass over ``[x ; bottleneck]``.
        input_ids: (B, T).
        text_mask: (B, T) True on tokens of x.
    """
    # Position t predicts token t+1, so position t counts when t+1 is a text token.
    predicts_text = text_mask[:, 1:]  # (B, T-1)
    if not bool(predicts_text.any()):
        return hidden.sum() * 0.0
    logits = model.lm_logits(hidden[:, :-1][predicts_text])  # (n, V)
    total = F.cross_entropy(logits.float(), input_ids[:, 1:][predicts_text], reduction="sum")
    return global_mean(total, int(predicts_text.sum()))


class Stage1Loss(nn.Module):
    """The stage-1 objective around an :class:`LBRModel`.

    ``forward(batch)`` returns a dict with ``loss`` and each term (``know``, ``ib``,
    ``ib_reconstruct``, ``ib_continue``, ``rate``), so every term can be logged.
    """

    def __init__(self, model: LBRModel, config: Stage1Config, *, token_budget: int = 0) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.token_budget = token_budget

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        model, config = self.model, self.config
        budget = self.token_budget
        hidden, z = model.encode_hidden(batch["input_ids"], batch["attention_mask"], token_budget=budget)
        terms: dict[str, torch.Tensor] = {}
        loss = hidden.new_zeros(())
        if config.know_weight > 0:
            terms["know"] = knowledge_loss(model, hidden, batch["input_ids"], batch["text_mask"])
            loss = loss + config.know_weight * terms["know"]
        if config.ib_weight > 0:
            prefix, rate = model.prefix(z)
            parts = []
            if config.target in ("reconstruct", "both"):
                terms["ib_reconstruct"] = model.decoder_loss(
                    prefix, batch["reconstruct_ids"], batch["reconstruct_mask"], token_budget=budget
                )
                parts.append(terms["ib_reconstruct"])
            if config.target in ("continue", "both"):
                terms["ib_continue"] = model.decoder_loss(
                    prefix, batch["continue_ids"], batch["continue_mask"], token_budget=budget
                )
                parts.append(terms["ib_continue"])
            terms["ib"] = torch.stack(parts).mean()
            loss = loss + config.ib_weight * terms["ib"]
            if rate is not None:
                terms["rate"] = rate
                loss = loss + model.config.rate_beta * rate
        terms["loss"] = loss
        return terms
