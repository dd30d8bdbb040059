"""How much of x reaches the decoder through z: the information-bottleneck channel of stage 1.

    .venv/bin/python benchmarks/ib_channel.py RUN_DIR [RUN_DIR ...] --corpus STAGE1.jsonl [--base]

For each stage-1 output directory (and with ``--base``, the untrained default model with an
``identity`` and a ``calibrated`` projector), on ``--segments`` segments spread evenly over the
corpus:

- ``L_know``: next-token loss on x (the encoder pass);
- ``L_IB own``: -log p(x | P(z(x))), the stage-1 reconstruction loss;
- ``L_IB shuffled``: the same with z taken from another document's segment;
- ``L_IB no prefix``: the same with an all-zero prefix.

``shuffled - own`` (nats per token) is what z tells the decoder about x beyond what it tells
about any text of the corpus. Near 0, the bottleneck carries nothing and L_IB only trains the
decoder to ignore the prefix. Writes a markdown table to stdout and JSON next to it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from lbr.config import ModelConfig
from lbr.data.corpus import SegmentCollator, read_corpus, segment_documents
from lbr.losses.generative import knowledge_loss
from lbr.modeling.lbr_model import LBRModel
from lbr.training.stages import CALIBRATION_TEXTS

ROOT = Path(__file__).resolve().parents[1]


@torch.no_grad()
def measure(model: LBRModel, segments: list, batch_size: int) -> dict[str, float]:
    model.eval()
    collate = SegmentCollator(model, max_target_length=128)
    sums = {"know": 0.0, "ib_own": 0.0, "ib_shuffled": 0.0, "ib_no_prefix": 0.0}
    batches = 0
    for start in range(0, len(segments), batch_size):
        batch = collate(segments[start : start + batch_size])
        if len(batch["input_ids"]) < 2:
            continue  # shuffling needs another segment
        hidden, z = model.encode_hidden(batch["input_ids"], batch["attention_mask"], token_budget=1024)
        prefix, _ = model.prefix(z)
        target = (batch["reconstruct_ids"], batch["reconstruct_mask"])
        sums["know"] += float(knowledge_loss(model, hidden, batch["input_ids"], batch["text_mask"]))
        sums["ib_own"] += float(model.decoder_loss(prefix, *target, token_budget=1024))
        # Half a batch away: the sample is spread over the corpus, so this is another document.
        shuffled = prefix.roll(len(prefix) // 2, dims=0)
        sums["ib_shuffled"] += float(model.decoder_loss(shuffled, *target, token_budget=1024))
        sums["ib_no_prefix"] += float(model.decoder_loss(torch.zeros_like(prefix), *target, token_budget=1024))
        batches += 1
    means = {name: value / batches for name, value in sums.items()}
    means["z_carries"] = means["ib_shuffled"] - means["ib_own"]
    return means


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", help="stage-1 output directories")
    parser.add_argument("--corpus", required=True, help="the stage-1 jsonl corpus the runs trained on")
    parser.add_argument("--base", action="store_true", help="also measure the untrained default model")
    parser.add_argument("--segments", type=int, default=256, help="segments measured (default 256)")
    parser.add_argument("--segment-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/ib-channel.json"))
    args = parser.parse_args()
    if not args.runs and not args.base:
        parser.error("give stage-1 directories, --base, or both")

    documents = read_corpus(args.corpus)
    # (name, loader, fresh): a fresh model is built here, so a calibrated projector needs calibrating.
    models: list[tuple[str, Callable[[], LBRModel], bool]] = []
    if args.base:
        for projector in ("identity", "calibrated"):
            models.append((f"untrained, projector {projector}", lambda p=projector: _base(p), True))
    for run in args.runs:
        models.append((run, lambda r=run: LBRModel.load(r, trainable=True), False))  # unmerged: frozen decoders work

    rows = []
    for name, load, fresh in models:
        model = load()
        every = segment_documents(documents, model.tokenizer, args.segment_length, split_single=False)
        if fresh and model.config.projector == "calibrated":
            model.calibrate_projector([segment.tokens for segment in every[:CALIBRATION_TEXTS]])  # as stage 1 does
        step = max(1, len(every) // args.segments)
        segments = every[::step][: args.segments]  # spread over the corpus, not its first records
        result = measure(model, segments, args.batch_size)
        rows.append({"model": name, "decoder": model.config.decoder, "projector": model.config.projector, **result})
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in result.items()), file=sys.stderr, flush=True)

    print("| model | decoder | projector | L_know | L_IB own z | L_IB shuffled z | L_IB zero prefix | z carries |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['model']} | {row['decoder']} | {row['projector']} | {row['know']:.2f} | {row['ib_own']:.2f} | "
            f"{row['ib_shuffled']:.2f} | {row['ib_no_prefix']:.2f} | {row['z_carries']:.2f} |"
        )
    record = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "corpus": args.corpus,
        "segments": args.segments,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2), encoding="utf-8")
    return 0


def _base(projector: str) -> LBRModel:
    return LBRModel.build(dataclasses.replace(ModelConfig(), projector=projector), seed=0)


if __name__ == "__main__":
    raise SystemExit(main())
