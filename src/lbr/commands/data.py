"""`lbr data build DOMAIN --out DIR`: build a domain dataset from installed resources."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from lbr.data.builders import DEFAULT_MAX_DOCS, DEFAULT_SEED, DOMAINS
from lbr.errors import ConfigError


def register(subparsers: Any) -> None:
    """Add the ``data`` command (with its ``build`` action) to an argparse subparsers object."""
    parser = subparsers.add_parser("data", help="build domain datasets", description="Build and inspect datasets.")
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    build = actions.add_parser(
        "build",
        help="write a BEIR dataset, stage-2 pairs and stage-1 corpora for one domain",
        description=(
            "Write corpus.jsonl, queries.jsonl, qrels/{train,dev,test}.tsv, "
            "pairs.{train,dev}.jsonl, knowledge.{open,closed}.jsonl and DATASHEET.md. "
            "Fails if a test query leaks into training text."
        ),
    )
    build.add_argument("domain", choices=DOMAINS, help="which domain to build")
    build.add_argument("--out", required=True, help="output directory (created if needed)")
    build.add_argument(
        "--max-docs",
        type=int,
        default=DEFAULT_MAX_DOCS,
        help=f"documents in the corpus (default {DEFAULT_MAX_DOCS})",
    )
    build.add_argument("--seed", type=int, default=DEFAULT_SEED, help="sampling and split seed (default 0)")
    build.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty --out that is not an earlier `lbr data build` output",
    )
    build.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the dataset and print a one-paragraph summary; returns the exit code."""
    from lbr.data.builders import build

    _check_out(Path(args.out), overwrite=args.overwrite)
    start = time.perf_counter()
    built = build(args.domain, args.out, max_docs=args.max_docs, seed=args.seed)
    stats = built.stats
    queries = stats["queries_per_split"]
    knowledge = stats["knowledge_records"]
    print(
        f"{args.domain}: {stats['documents']} documents; queries train/dev/test = "
        f"{queries['train']}/{queries['dev']}/{queries['test']}; pairs train/dev = "
        f"{stats['pairs']['train']}/{stats['pairs']['dev']}; knowledge open/closed = "
        f"{knowledge['open']}/{knowledge['closed']} records; leakage checks passed "
        f"({time.perf_counter() - start:.0f}s) -> {args.out}"
    )
    return 0


def _check_out(out: Path, *, overwrite: bool) -> None:
    """Never write over a user's files: refuse a non-empty directory we did not build.

    Rebuilding into an earlier build (it has our DATASHEET.md) is allowed: the files are
    regenerated deterministically from installed resources.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: --out exists and is not a directory")
    if overwrite or not out.exists() or (out / "DATASHEET.md").exists() or not any(out.iterdir()):
        return
    raise ConfigError(
        f"{out}: --out is a non-empty directory that is not an `lbr data build` output; "
        "pass --overwrite to write into it anyway"
    )
