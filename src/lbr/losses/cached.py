"""Stage 2 with a cached (GradCache-style) contrastive loss: a large batch in bounded memory.

InfoNCE couples every query with every document of the batch, so the plain loss keeps the
activations of the whole batch alive until its backward pass. GradCache (Gao et al., 2021)
splits the work in three:

1. embed every text without autograd, in mini-batches of ``mini_batch_size`` rows;
2. compute the loss on the full batch from those embeddings (leaf tensors) and the gradient of
   the loss with respect to each embedding: cheap, (B + N) x d numbers;
3. in the backward pass, re-run each mini-batch with autograd and backpropagate
   ``sum(embedding * cached_gradient)``, whose parameter gradient is exactly that mini-batch's
   share of the full loss's gradient (chain rule: the loss depends on the parameters only through
   the embeddings).

Peak activation memory is that of one mini-batch, whatever the batch size, at the price of one
extra forward pass without autograd. The RNG state of each mini-batch is recorded in step 1 and
restored in step 3, so dropout (if any) draws the same masks in both passes.

Only ``L_CL`` is cached: the loss refuses ``gen_weight > 0`` (the generative term would need its
own mini-batched decoder passes), and it runs on one process (no DDP). Step 3 runs inside a
hook on the returned loss, so a trainer that calls ``loss.backward()`` (or
``accelerator.backward(loss / accum)``) needs no change.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn

from lbr.config import Stage2Config
from lbr.distributed import gather_across_processes, process_rank
from lbr.errors import ConfigError
from lbr.losses.contrastive import InfoNCELoss
from lbr.modeling.lbr_model import LBRModel


class CachedStage2Loss(nn.Module):
    """``L_CL`` (InfoNCE over in-batch and hard negatives) with gradient caching.

    Gives the same loss and the same parameter gradients as :class:`~lbr.losses.Stage2Loss`
    with ``gen_weight = 0``, with activation memory bounded by ``mini_batch_size`` rows.

    Args:
        model: the model being trained.
        config: stage-2 settings; ``gen_weight`` must be 0.
        mini_batch_size: rows (queries or documents) per pass with autograd.
        token_budget: length-sorted chunking inside each mini-batch, as in ``Stage2Loss``.
    """

    def __init__(self, model: LBRModel, config: Stage2Config, *, mini_batch_size: int, token_budget: int = 0) -> None:
        super().__init__()
        if config.gen_weight > 0:
            raise ConfigError(
                f"the cached stage-2 loss supports only gen_weight=0 (mu = 0), got {config.gen_weight}; "
                "set --mu 0 or turn caching off (--cache-mini-batch 0)"
            )
        if mini_batch_size < 1:
            raise ConfigError("mini_batch_size must be >= 1")
        self.model = model
        self.config = config
        self.mini_batch_size = mini_batch_size
        self.token_budget = token_budget
        self.infonce = InfoNCELoss(config.temperature)

    # ------------------------------------------------------------------ embeddings
    def _embed(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(b, T) token rows -> (b, d) normalised embeddings, trimmed to the rows' own width."""
        width = int(mask.sum(dim=1).max())
        _, z = self.model.encode_hidden(ids[:, :width], mask[:, :width], token_budget=self.token_budget)
        return self.model.pool(z)

    def _mini_batches(self, mask: torch.Tensor) -> list[torch.Tensor]:
        """Row indices, longest rows first, ``mini_batch_size`` at a time.

        Sorting by length first means each mini-batch holds rows of similar length, so little
        compute goes to padding.
        """
        order = torch.argsort(mask.sum(dim=1), descending=True, stable=True)
        return list(order.split(self.mini_batch_size))

    def _embed_without_grad(
        self, ids: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]]]:
        """Step 1: all embeddings (in input order) without autograd, plus what step 3 needs."""
        replay = []
        embeddings: torch.Tensor | None = None
        with torch.no_grad():
            for rows in self._mini_batches(mask):
                cpu_state = torch.get_rng_state()
                cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
                emb = self._embed(ids[rows], mask[rows])  # (b, d)
                if embeddings is None:
                    embeddings = emb.new_empty(ids.shape[0], emb.shape[1])
                embeddings[rows] = emb
                replay.append((rows, cpu_state, cuda_states))
        assert embeddings is not None
        return embeddings, replay

    # ------------------------------------------------------------------ loss
    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # Step 3 runs outside DDP's forward, so DDP would not all-reduce its gradients.
            raise ConfigError("the cached stage-2 loss runs on one process only; set --cache-mini-batch 0 under DDP")
        q_emb, q_replay = self._embed_without_grad(batch["query_ids"], batch["query_mask"])  # (B, d)
        d_emb, d_replay = self._embed_without_grad(batch["doc_ids"], batch["doc_mask"])  # (B + B*n, d)
        q_emb.requires_grad_(True)
        d_emb.requires_grad_(True)
        with torch.enable_grad():
            loss = self.loss_from_embeddings(q_emb, d_emb, batch["doc_hash"])
            # Step 2: d loss / d embedding, on the full batch.
            q_grad, d_grad = torch.autograd.grad(loss, [q_emb, d_emb])  # (B, d), (B + B*n, d)
        if not torch.is_grad_enabled():  # evaluation: nothing to backpropagate
            return {"cl": loss.detach(), "loss": loss.detach()}
        replays = [
            (batch["query_ids"], batch["query_mask"], q_grad, q_replay),
            (batch["doc_ids"], batch["doc_mask"], d_grad, d_replay),
        ]
        # The returned loss is a leaf: backward() on it (or on loss / accum) calls the hook with
        # the incoming gradient, and the hook does step 3.
        cached = loss.detach().requires_grad_(True)
        cached.register_hook(self._backward_hook(replays))
        return {"cl": cached.detach(), "loss": cached}

    def loss_from_embeddings(self, q_emb: torch.Tensor, d_emb: torch.Tensor, doc_hash: torch.Tensor) -> torch.Tensor:
        """InfoNCE exactly as ``Stage2Loss`` computes ``cl`` (DDP gather, duplicate masking).

        Args:
            q_emb: (B, d) normalised query embeddings.
            d_emb: (B + B*n, d) normalised documents, positives first.
            doc_hash: (B + B*n,) text hash of each document.
        """
        local_docs = d_emb.shape[0]
        all_docs = gather_across_processes(d_emb)
        all_hashes = gather_across_processes(doc_hash)
        batch_size = q_emb.shape[0]
        labels = torch.arange(batch_size, device=q_emb.device) + process_rank() * local_docs
        positive_hash = all_hashes[labels]  # (B,)
        false_negatives = all_hashes.unsqueeze(0) == positive_hash.unsqueeze(1)  # (B, N)
        false_negatives[torch.arange(batch_size), labels] = False
        return self.infonce.compute_loss_from_embeddings(q_emb, all_docs, labels, false_negatives)

    def _backward_hook(
        self, replays: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, list]]
    ) -> Callable[[torch.Tensor], None]:
        def hook(grad_output: torch.Tensor) -> None:
            # Step 3: re-run each mini-batch with autograd; the surrogate's gradient is the
            # mini-batch's share of d(grad_output * loss)/d(parameters).
            with torch.enable_grad():
                for ids, mask, emb_grad, replay in replays:
                    for rows, cpu_state, cuda_states in replay:
                        with torch.random.fork_rng(devices=range(len(cuda_states))):
                            torch.set_rng_state(cpu_state)
                            if cuda_states:
                                torch.cuda.set_rng_state_all(cuda_states)
                            emb = self._embed(ids[rows], mask[rows])  # (b, d)
                        surrogate = (emb * emb_grad[rows]).sum() * grad_output
                        surrogate.backward()

        return hook
