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
    pairs: list[tuple[Path, Path]] = []
    for name in ("experiment.json", "report.md", "results.json"):
        pairs.append((source / name, target / name))
    for datasheet in sorted(source.glob("data/*/DATASHEET.md")):
        pairs.append((datasheet, target / datasheet.relative_to(source)))
    # results/ and results-dev/ are real directories (rglob would not follow a linked one).
    for path in sorted(source.glob("results*/**/*.json")):
        pairs.append((path, target / path.relative_to(source)))
    # runs/<domain>/<setting>/<run>/, finished runs only (linked runs included): the training log
    # and the run's settings (which, for one, say whether it used gradient checkpointing).
    for run in sorted(source.glob("runs/*/*/*")):
        if (run / "lbr_config.json").exists():
            domain, setting, name = run.parts[-3:]
            for file, suffix in (("train_log.jsonl", ".jsonl"), ("run_config.json", ".run_config.json")):
                pairs.append((run / file, target / "train-logs" / f"{domain}-{setting}-{name}{suffix}"))
    copied = 0
    for origin, destination in pairs:
        if origin.exists():
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, destination)
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
