"""`lbr evaluate --model M --data DIR`: retrieval metrics of one model on one dataset."""

from __future__ import annotations

import argparse
import random
import sys
import time
from typing import Any

import numpy as np

from lbr.evaluation.baselines import BUILTIN_MODELS

RETRIEVAL_DEPTH = 100  # the deepest cut-off reported (Recall@100, MAP@100)


def register(subparsers: Any) -> None:
    """Add the ``evaluate`` command to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "evaluate",
        help="retrieval metrics of a model on a BEIR dataset",
        description=(
            "Retrieve the top 100 documents for every judged query of a split and report "
            "nDCG@10, Recall@10, Recall@100, MRR@10 and MAP@100."
        ),
    )
    parser.add_argument(
        "--model",
        required=True,
        help=f"{', '.join(BUILTIN_MODELS)} or a trained LBR model directory",
    )
    parser.add_argument("--data", required=True, help="BEIR directory (from `lbr data build`) or hf:<dataset id>")
    parser.add_argument("--split", default="test", help="qrels split to evaluate (default test)")
    parser.add_argument("--output", help="write the results as JSON to this file")
    parser.add_argument("--batch-size", type=int, default=32, help="encoding batch size for dense models")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--max-line-bytes",
        type=int,
        default=1_000_000,
        help="reject dataset lines longer than this (default 1000000)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars (for logs and CI)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate, print a table, optionally write JSON; returns the exit code."""
    from lbr.data.beir import load_beir
    from lbr.evaluation.baselines import load_retriever
    from lbr.evaluation.metrics import evaluate_run
    from lbr.evaluation.report import format_table, make_result, write_json

    _seed_everything(args.seed)
    corpus, queries, qrels = load_beir(args.data, args.split, max_line_bytes=args.max_line_bytes)
    show_progress = not getattr(args, "no_progress", False) and sys.stderr.isatty()
    retriever = load_retriever(args.model, batch_size=args.batch_size, show_progress_bar=show_progress, seed=args.seed)
    start = time.perf_counter()
    results_run = retriever.retrieve(corpus, queries, top_k=RETRIEVAL_DEPTH)
    result = make_result(
        model=args.model,
        data=str(args.data),
        split=args.split,
        seed=args.seed,
        metrics=evaluate_run(results_run, qrels),
        num_queries=len(qrels),
        num_docs=len(corpus),
        seconds=time.perf_counter() - start,
    )
    print(format_table([result]))
    if args.output:
        write_json(result, args.output)
        print(f"results written to {args.output}")
    return 0


def _seed_everything(seed: int) -> None:
    """Seed every generator a model might draw from (dropout is off, but be safe)."""
    random.seed(seed)
    np.random.seed(seed)
    if "torch" in sys.modules:  # importing torch only to seed it would cost seconds
        sys.modules["torch"].manual_seed(seed)
