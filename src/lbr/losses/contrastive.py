"""Stage 2 (Represent): InfoNCE over in-batch and hard negatives + mu * L_gen."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lbr.config import Stage2Config
from lbr.distributed import gather_across_processes, process_rank
from lbr.modeling.lbr_model import LBRModel


class InfoNCELoss(nn.Module):
    """InfoNCE: cross-entropy over ``q_emb . d_emb / temperature``.

    Documents that are copies of a query's positive (same text) are masked out of its
    negatives, so duplicate documents in a batch are not pushed apart.
    """

    def __init__(self, temperature: float = 0.05) -> None:
        super().__init__()
        self.temperature = temperature

    def compute_loss_from_embeddings(
        self,
        q_emb: torch.Tensor,
        d_emb: torch.Tensor,
        labels: torch.Tensor,
        false_negative_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            q_emb: (B, d) normalised query embeddings.
            d_emb: (N, d) normalised document embeddings (positives and negatives).
            labels: (B,) index in d_emb of each query's positive.
            false_negative_mask: (B, N) True where a document must not count as a negative.
        """
        # In float32 even under bf16 autocast: scores are divided by a small temperature.
        with torch.autocast(device_type=q_emb.device.type, enabled=False):
            scores = q_emb.float() @ d_emb.float().T / self.temperature  # (B, N)
        if false_negative_mask is not None:
            scores = scores.masked_fill(false_negative_mask, float("-inf"))
        return F.cross_entropy(scores, labels)


class Stage2Loss(nn.Module):
    """The stage-2 objective: ``L_CL + mu * L_gen`` on the bottleneck representation.

    Batch layout (from :class:`lbr.data.pairs.PairCollator`): queries (B rows), documents
    ``[positives (B) ; negatives (B * n)]``, and a text hash per document.
    """

    def __init__(self, model: LBRModel, config: Stage2Config, *, token_budget: int = 0) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.token_budget = token_budget
        self.infonce = InfoNCELoss(config.temperature)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        model, config = self.model, self.config
        budget = self.token_budget
        _, z_q = model.encode_hidden(batch["query_ids"], batch["query_mask"], token_budget=budget)  # (B, k, d)
        _, z_d = model.encode_hidden(batch["doc_ids"], batch["doc_mask"], token_budget=budget)  # (B + B*n, k, d)
        q_emb, d_emb = model.pool(z_q), model.pool(z_d)
        local_docs = d_emb.shape[0]
        all_docs = gather_across_processes(d_emb)
        all_hashes = gather_across_processes(batch["doc_hash"])
        batch_size = q_emb.shape[0]
        labels = torch.arange(batch_size, device=q_emb.device) + process_rank() * local_docs
        positive_hash = all_hashes[labels]  # (B,)
        false_negatives = all_hashes.unsqueeze(0) == positive_hash.unsqueeze(1)  # (B, N)
        false_negatives[torch.arange(batch_size), labels] = False
        terms = {"cl": self.infonce.compute_loss_from_embeddings(q_emb, all_docs, labels, false_negatives)}
        loss = terms["cl"]
        if config.gen_weight > 0:
            parts, rates = [], []
            targets = (batch["positive_target_ids"], batch["positive_target_mask"])
            for name, z in (("query", z_q), ("document", z_d[:batch_size])):
                if config.gen_target in (name, "both"):
                    prefix, rate = model.prefix(z)
                    terms[f"gen_{name}"] = model.decoder_loss(prefix, *targets, token_budget=budget)
                    parts.append(terms[f"gen_{name}"])
                    if rate is not None:
                        rates.append(rate)
            terms["gen"] = torch.stack(parts).mean()
            loss = loss + config.gen_weight * terms["gen"]
            if rates:  # the same variational bottleneck as stage 1's L_IB, with its KL
                terms["rate"] = torch.stack(rates).mean()
                loss = loss + model.config.rate_beta * terms["rate"]
        terms["loss"] = loss
        return terms
