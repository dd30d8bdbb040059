"""Evaluation results: one record per (model, dataset), a readable table and JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lbr.evaluation.metrics import DEFAULT_METRICS


def make_result(
    *,
    model: str,
    data: str,
    split: str,
    seed: int,
    metrics: dict[str, float],
    num_queries: int,
    num_docs: int,
    seconds: float,
) -> dict[str, Any]:
    """The JSON record written by ``lbr evaluate``."""
    return {
        "model": model,
        "data": data,
        "split": split,
        "seed": seed,
        "num_queries": num_queries,
        "num_docs": num_docs,
        "metrics": {name: round(value, 6) for name, value in metrics.items()},
        "seconds": round(seconds, 1),
    }


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """A fixed-width table, one row per result, metrics as percentages."""
    names = [name for name, _, _ in DEFAULT_METRICS]
    header = ["model", "data", *names, "queries"]
    rows = [
        [
            str(result["model"]),
            Path(str(result["data"])).name or str(result["data"]),
            *(f"{100 * result['metrics'].get(name, float('nan')):.2f}" for name in names),
            str(result["num_queries"]),
        ]
        for result in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(header))]
    lines.append("  ".join("-" * width for width in widths))
    for row in rows:
        lines.append("  ".join(cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i]) for i, cell in enumerate(row)))
    return "\n".join(lines)


def format_markdown_row(result: dict[str, Any], domain: str) -> str:
    """One row of docs/BENCHMARKS.md's table."""
    values = " | ".join(f"{100 * result['metrics'][name]:.2f}" for name, _, _ in DEFAULT_METRICS)
    return f"| {domain} | {result['model']} | {values} | {result['num_queries']} |"


def write_json(result: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
