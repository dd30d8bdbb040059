"""Copy an `lbr benchmark` output directory's small files into the repository.

The run directories hold gigabytes of weights; what the docs cite is small: experiment.json,
report.md, results.json, every result file (with each query's score) and each finished run's
training log. Rerun as cells finish: files are overwritten with their newer versions.

    python benchmarks/archive.py reports/benchmark benchmarks/results/grid-full
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def archive(source: Path, target: Path) -> int:
    """Copy the small files of `source` into `target`; return how many were copied."""
    if not (source / "experiment.json").exists():
        raise SystemExit(f"{source}: no experiment.json, so this is not an lbr benchmark output directory")
    copied = 0
    target.mkdir(parents=True, exist_ok=True)
    for name in ("experiment.json", "report.md", "results.json"):
        if (source / name).exists():
            shutil.copy2(source / name, target / name)
            copied += 1
    for results in sorted(source.glob("results*")):
        if results.is_dir():
            for path in sorted(results.rglob("*.json")):
                destination = target / path.relative_to(source)
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, destination)
                copied += 1
    # runs/<domain>/<setting>/<run>/train_log.jsonl, for finished runs only (linked runs included).
    for log in sorted(source.glob("runs/*/*/*/train_log.jsonl")):
        if (log.parent / "lbr_config.json").exists():
            domain, setting, run = log.parts[-4:-1]
            destination = target / "train-logs" / f"{domain}-{setting}-{run}.jsonl"
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(log, destination)
            copied += 1
    return copied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="an lbr benchmark --output directory")
    parser.add_argument("target", type=Path, help="where to copy its small files")
    args = parser.parse_args()
    print(f"copied {archive(args.source, args.target)} files to {args.target}")


if __name__ == "__main__":
    main()
