"""Mean nDCG@10 of every row of one grid cell, over queries bucketed by how BM25 did on them.

Queries that share no useful word with their document (BM25 nDCG@10 = 0) are where knowledge
of the terminology should matter most; this shows whether a row's gain comes from them.

    python benchmarks/per_query_buckets.py reports/benchmark --domain medical --setting open --seed 0

It reads only the result files (their `per_query` fields); no model is run.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

ROWS = ("bm25", "minilm", "base", "llm_cl", "llm_cl_matched", "clm_cl", "lbr_norefine", "lbr", "lbr_unsup")
BUCKETS = (
    ("all", lambda score: True),
    ("BM25 = 0", lambda score: score == 0),
    ("0 < BM25 <= 0.9", lambda score: 0 < score <= 0.9),
    ("BM25 > 0.9", lambda score: score > 0.9),
)


def result_file(results: Path, domain: str, setting: str, method: str, seed: int) -> Path | None:
    """The result file of one row, wherever the grid keeps it (setting-free rows sit above)."""
    for path in (
        results / domain / f"{method}.json",
        results / domain / f"{method}-seed{seed}.json",
        results / domain / setting / f"{method}-seed{seed}.json",
    ):
        if path.exists():
            return path
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="an `lbr benchmark` output directory")
    parser.add_argument("--domain", default="medical")
    parser.add_argument("--setting", default="open")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="test", help="test (results/) or dev (results-dev/)")
    args = parser.parse_args()

    results = args.output / ("results" if args.split == "test" else f"results-{args.split}")
    scores = {}
    for method in ROWS:
        path = result_file(results, args.domain, args.setting, method, args.seed)
        if path is not None:
            scores[method] = json.loads(path.read_text(encoding="utf-8"))["per_query"]["nDCG@10"]
    if "bm25" not in scores:
        raise SystemExit(f"{results / args.domain}: no BM25 result to bucket the queries by")
    queries = sorted(scores["bm25"])
    print("| queries | n | " + " | ".join(scores) + " |")
    print("|---|---|" + "---|" * len(scores))
    for label, keep in BUCKETS:
        chosen = [q for q in queries if keep(scores["bm25"][q])]
        cells = [f"{100 * statistics.mean(scores[m][q] for q in chosen):.1f}" if chosen else "-" for m in scores]
        print(f"| {label} | {len(chosen)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
