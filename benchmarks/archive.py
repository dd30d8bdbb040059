"""Copy an `lbr benchmark` output directory's small files into the repository, or back.

The run directories hold gigabytes of weights; what the docs cite is small: experiment.json,
report.md, results.json, every result file (with each query's score) and each finished run's
training log. Rerun as cells finish: files are overwritten with their newer versions.

    python benchmarks/archive.py reports/benchmark benchmarks/results/grid-full

`--restore` goes the other way, for a machine that lost the output directory (a new checkout):
it copies experiment.json, the result files and the finished runs' training logs into a new or
partial output directory, where `lbr benchmark` with the same settings then counts those
evaluations as done, trains only the rest, and counts the compute-matched baseline's steps
from the logs. A file already in the output directory is never overwritten, and an output
directory made with other settings is refused.

    python benchmarks/archive.py --restore benchmarks/results/grid-full reports/benchmark
"""

from __future__ import annotations

import argparse
import json
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


def restore(archived: Path, output: Path) -> tuple[int, int]:
    """Copy an archive's experiment.json and result files into `output`, keeping any file
    already there; return (copied, kept)."""
    settings = archived / "experiment.json"
    if not settings.exists():
        raise SystemExit(f"{archived}: no experiment.json, so this is not an archived lbr benchmark")
    mine = output / "experiment.json"
    if mine.exists() and json.loads(mine.read_text(encoding="utf-8")) != json.loads(
        settings.read_text(encoding="utf-8")
    ):
        raise SystemExit(
            f"{output} holds an experiment with other settings than {archived}; restore into another directory"
        )
    files = [*sorted(archived.glob("results*/**/*.json")), *sorted(archived.glob("train-logs/*"))]
    names = ["experiment.json", *(str(p.relative_to(archived)) for p in files)]
    copied = kept = 0
    for name in names:
        destination = output / name
        if destination.exists():
            kept += 1
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        tmp = destination.with_name(destination.name + ".tmp")
        shutil.copy2(archived / name, tmp)
        tmp.replace(destination)
        copied += 1
    return copied, kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="an lbr benchmark --output directory (with --restore: an archive)")
    parser.add_argument("target", type=Path, help="where to copy its small files (with --restore: an output directory)")
    parser.add_argument(
        "--restore", action="store_true", help="copy an archive's settings and results back into an output directory"
    )
    args = parser.parse_args()
    if args.restore:
        copied, kept = restore(args.source, args.target)
        print(f"restored {copied} files to {args.target}; kept {kept} already there")
        return
    print(f"copied {archive(args.source, args.target)} files to {args.target}")


if __name__ == "__main__":
    main()
