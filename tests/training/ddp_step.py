"""One training step's loss and gradients, for the one- vs two-process equivalence test.

Run plainly for one process, or under ``accelerate launch --num_processes 2`` for two. Each
process takes its slice of the same global batch; rank 0 writes the loss and gradients.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import save_file

from lbr.config import ModelConfig, Stage1Config, Stage2Config
from lbr.data.corpus import Segment, SegmentCollator
from lbr.data.pairs import Pair, PairCollator
from lbr.losses import Stage1Loss, Stage2Loss
from lbr.modeling import LBRModel

WORDS = (
    "heart eye ear bone skin brain kidney liver muscle blood acid water carbon sodium short tall small large".split()
)


def main(stage: str, model_dir: str, out: str) -> None:
    accelerator = Accelerator(cpu=True)
    model = LBRModel.build(ModelConfig(model=model_dir, num_bottleneck_tokens=3, lora_r=4, projector="linear"), seed=0)
    generator = torch.Generator().manual_seed(0)
    global_batch = 8
    rank, world = accelerator.process_index, accelerator.num_processes
    per_process = global_batch // world
    lo, hi = rank * per_process, (rank + 1) * per_process

    def words(n: int) -> str:
        return " ".join(WORDS[int(i)] for i in torch.randint(len(WORDS), (n,), generator=generator))

    if stage == "stage1":
        # Different lengths per process: the loss must still be the mean over all tokens.
        texts = [words(3 + 4 * i) for i in range(global_batch)]
        ids = model.tokenizer(texts, add_special_tokens=False)["input_ids"]
        segments = [Segment(t[: len(t) // 2 + 1], t[len(t) // 2 + 1 :]) for t in ids]
        objective = Stage1Loss(model, Stage1Config(target="both"))
        batch = SegmentCollator(model, 16)(segments[lo:hi])
    else:
        pairs = [Pair(words(2 + i % 3), words(5 + i), (words(4 + i % 2),)) for i in range(global_batch)]
        objective = Stage2Loss(model, Stage2Config(gen_weight=0.1, gen_target="both", num_negatives=1))
        collate = PairCollator(
            model, pairs, num_negatives=1, query_instruction="", max_query_length=16, max_document_length=32
        )
        batch = collate(pairs[lo:hi])
    batch.pop("num_tokens")
    objective = accelerator.prepare(objective)
    terms = objective(batch)
    accelerator.backward(terms["loss"])
    loss = accelerator.reduce(terms["loss"].detach(), reduction="mean")
    if accelerator.is_main_process:
        grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
        save_file({"loss": loss.reshape(1), **{f"grad.{n}": g.contiguous() for n, g in grads.items()}}, out)
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], str(Path(sys.argv[3])))
