"""The few torch.distributed helpers the losses need; all are no-ops on one process."""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def process_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def gather_across_processes(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor from every process along dim 0, keeping the gradient path.

    Under DDP this gives each query the negatives of the whole global batch, not only its own
    process's share. Every process must pass the same shape.
    """
    if not is_distributed():
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor), dim=0)


def global_mean(total: torch.Tensor, count: int) -> torch.Tensor:
    """``total / count`` where both are summed over every process.

    DDP averages gradients over processes, so each process returns ``total * world / count_all``:
    the averaged gradient is then exactly that of the mean over all processes' tokens, even when
    processes hold different numbers of tokens.
    """
    if not is_distributed():
        return total / max(count, 1)
    counts = torch.tensor([count], dtype=torch.float64, device=total.device)
    dist.all_reduce(counts)
    return total * world_size() / max(float(counts.item()), 1.0)
