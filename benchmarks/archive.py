"""Copy an `lbr benchmark` output directory's small files into the repository, or back.

The run directories hold gigabytes of weights; what the docs cite is small: experiment.json,
report.md, results.json, every result file (with each query's score) and each finished run's
training log. Rerun as cells finish: files are overwritten with their newer versions.

    python benchmarks/archive.py reports/benchmark benchmarks/results/grid-full

`--restore` goes the other way, for a machine that lost the output directory (a new checkout):
it copies experiment.json, the result files and the finished runs' training logs (and the runs
kept by the two options below) into a new or partial output directory, where `lbr benchmark`
with the same settings then counts those evaluations as done, trains only the rest, and counts
the compute-matched baseline's steps from the logs. A file already in the output directory is
never overwritten, and an output directory made with other settings is refused.

    python benchmarks/archive.py --restore benchmarks/results/grid-full reports/benchmark

`--stage1-weights` also keeps the final model of each finished stage-1 run that a method still
to be evaluated starts from (LBR, LBR w/o refinement and LBR-unsup read the λ > 0 run, CLM->CL
the λ = 0 one), in `stage1-weights/<domain>/<setting>/<run>/`, and drops it there once every
such method has its test result. A session that ends between a stage-1 run and its last reader
then leaves the next one the run itself, not an hour of training to repeat; `--restore` puts it
back in `runs/` as a finished run. Each kept run is about 20 MB (SmolLM2's LoRA adapter), and
it stays in the repository's history, so `benchmarks/grid.sh` keeps weights only when the
grid stops, not at every periodic save.

`--partial-runs` also keeps each training run stopped part-way (a session's end killed it) with
at least MIN_PARTIAL_MINUTES of training behind its newest readable checkpoint: that checkpoint,
the run's settings and its training log, in `partial-runs/<domain>/<setting>/<run>/`, replacing
an older kept checkpoint of the same run, and dropped once the run's result (a stage-1 run's
readers' results) exists. `--restore` puts it back in `runs/` unless that result came back too,
and `lbr benchmark` resumes the run from it instead of from step 0. A kept checkpoint is about
60 MB for SmolLM2 (the trainable tensors and the optimiser's two moments), so a shorter stretch
of training is cheaper to repeat than to keep in the history.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from lbr.experiments import STAGE1_OF, result_file, run_finished
from lbr.training.checkpoint import (
    CHECKPOINT_DIR,
    checkpoint_step,
    complete_checkpoints,
    newest_readable,
)
from lbr.training.trainer import LOG_NAME, RUN_CONFIG_NAME

WEIGHTS_DIR = "stage1-weights"
PARTIAL_DIR = "partial-runs"
# Training time behind a stopped run's checkpoint below which it is not worth ~60 MB of history.
MIN_PARTIAL_MINUTES = 10.0


def archive(source: Path, target: Path, *, stage1_weights: bool = False, partial_runs: bool = False) -> int:
    """Copy the small files of `source` into `target`; return how many were copied.

    With `stage1_weights`, also copy the finished stage-1 runs that a method not yet evaluated
    on the test split starts from, and drop the copies of those whose readers are all evaluated.
    With `partial_runs`, also keep the newest checkpoint of each run stopped part-way
    (:func:`keep_partial_runs`).
    """
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
        if run_finished(run) and not run.name.endswith(".tmp"):
            domain, setting, name = run.parts[-3:]
            for file, suffix in ((LOG_NAME, ".jsonl"), (RUN_CONFIG_NAME, ".run_config.json")):
                pairs.append((run / file, target / "train-logs" / f"{domain}-{setting}-{name}{suffix}"))
    if stage1_weights:
        pairs += stage1_weight_files(source, target)
    copied = 0
    for origin, destination in pairs:
        if origin.exists():
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, destination)
            copied += 1
    if partial_runs:
        copied += keep_partial_runs(source, target)
    return copied


def trained_minutes(log: Path, step: int) -> float:
    """Minutes of training up to `step` by a run's training log (each row's tokens over its
    tokens a second); 0 for a log that is missing or does not say."""
    seconds = 0.0
    if not log.exists():
        return seconds
    for line in log.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            if row["step"] <= step and row["tokens_per_s"] > 0:
                seconds += row["tokens"] / row["tokens_per_s"]
        except (ValueError, KeyError, TypeError):
            continue  # a row cut short by the kill, or one without timing
    return seconds / 60


def run_still_needed(output: Path, run: Path) -> bool:
    """Whether run `run` (runs/<domain>/<setting>/<run>, in `output` or in an archive) is still
    read: a stage-1 run by a method without a test result, a stage-2 run by its own method's."""
    domain, setting, run_name = run.parts[-3:]
    if run_name.startswith("stage1-"):
        return bool(pending_readers(output, run))
    method, _, seed = run_name.rpartition("-seed")
    if not method or not seed.isdigit():
        return True  # not a run the grid names; kept rather than guessed at
    return not result_file(output / "results", domain, setting, method, int(seed)).exists()


def keep_partial_runs(source: Path, target: Path) -> int:
    """Keep in `target` the newest readable checkpoint, settings and log of each run in `source`
    stopped part-way with at least MIN_PARTIAL_MINUTES of training behind that checkpoint, in
    place of an older kept one; drop the kept copies of runs no method reads any more (a run that
    finished but has no result yet keeps its copy: its model is not archived). Returns the files
    copied."""
    for leftover in target.glob(f"{PARTIAL_DIR}/*/*/*.tmp"):
        shutil.rmtree(leftover)  # a save killed part-way
    copied = 0
    for run in sorted(source.glob("runs/*/*/*")):
        # A linked run directory is kept through the run it points to.
        if run.name.endswith(".tmp") or run.is_symlink() or run_finished(run):
            continue
        found, _ = newest_readable(run)  # as the trainer's resume picks it: damaged newer ones stay behind
        newest = found[0] if found else None
        if newest is None or trained_minutes(run / LOG_NAME, checkpoint_step(newest)) < MIN_PARTIAL_MINUTES:
            continue
        kept = target / PARTIAL_DIR / run.relative_to(source / "runs")
        if [path.name for path in complete_checkpoints(kept)] == [newest.name]:
            continue  # already kept
        # Written beside the old copy and swapped in by renames: a kill leaves the old copy or
        # the new one whole, and any *.tmp left over is removed by the next save.
        tmp = kept.with_name(kept.name + ".tmp")
        old = kept.with_name(kept.name + ".old.tmp")
        shutil.copytree(newest, tmp / CHECKPOINT_DIR / newest.name)
        for name in (RUN_CONFIG_NAME, LOG_NAME):
            if (run / name).exists():
                shutil.copy2(run / name, tmp / name)
        if kept.exists():
            kept.rename(old)
        tmp.rename(kept)
        shutil.rmtree(old, ignore_errors=True)
        copied += sum(1 for path in kept.rglob("*") if path.is_file())
    for kept in sorted(target.glob(f"{PARTIAL_DIR}/*/*/*")):
        if not run_still_needed(source, kept):
            shutil.rmtree(kept)
    return copied


def pending_readers(output: Path, run: Path) -> list[str]:
    """The methods that start from stage-1 run `run` (runs/<domain>/<setting>/stage1-<name>-seed<S>,
    in `output` or in an archive) and have no test result in `output` yet."""
    domain, setting, run_name = run.parts[-3:]
    name, _, seed = run_name.removeprefix("stage1-").rpartition("-seed")
    results = output / "results" / domain / setting
    return [m for m, stage1 in STAGE1_OF.items() if stage1 == name and not (results / f"{m}-seed{seed}.json").exists()]


def stage1_weight_files(source: Path, target: Path) -> list[tuple[Path, Path]]:
    """The (origin, destination) files of the finished stage-1 runs in `source` that a method still
    reads; removes from `target` the kept runs that no method reads any more."""
    pairs: list[tuple[Path, Path]] = []
    for run in sorted(source.glob("runs/*/*/stage1-*")):
        if run.name.endswith(".tmp") or not run_finished(run) or not pending_readers(source, run):
            continue
        kept = target / WEIGHTS_DIR / run.relative_to(source / "runs")
        for path in sorted(run.rglob("*")):
            relative = path.relative_to(run)
            if path.is_file() and relative.parts[0] != CHECKPOINT_DIR:
                pairs.append((path, kept / relative))
    for kept in sorted(target.glob(f"{WEIGHTS_DIR}/*/*/*")):
        if not pending_readers(source, kept):
            shutil.rmtree(kept)
    return pairs


def restore(archived: Path, output: Path) -> tuple[int, int]:
    """Copy an archive's experiment.json, result files and training logs into `output`, then its
    kept stage-1 runs and the checkpoints of runs stopped part-way that are still needed, keeping
    any file or run directory already there; return (copied, kept)."""
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
    # Kept runs go back whole or not at all: a half-copied finished run would look like a run
    # stopped part-way, a half-copied checkpoint like a damaged one. A run directory already there
    # (finished or resuming) is left alone.
    kept_runs = [(run, WEIGHTS_DIR) for run in sorted(archived.glob(f"{WEIGHTS_DIR}/*/*/*"))]
    kept_runs += [(run, PARTIAL_DIR) for run in sorted(archived.glob(f"{PARTIAL_DIR}/*/*/*"))]
    for run, kind in kept_runs:
        if run.name.endswith(".tmp"):
            continue
        destination = output / "runs" / run.relative_to(archived / kind)
        if kind == PARTIAL_DIR and not run_still_needed(output, destination):
            continue  # its result came back above; resuming it would never finish it again
        files = sum(1 for path in run.rglob("*") if path.is_file())
        if destination.exists():
            kept += files
            continue
        tmp = destination.with_name(destination.name + ".restore.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(run, tmp)
        tmp.rename(destination)
        copied += files
    return copied, kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="an lbr benchmark --output directory (with --restore: an archive)")
    parser.add_argument("target", type=Path, help="where to copy its small files (with --restore: an output directory)")
    parser.add_argument(
        "--restore", action="store_true", help="copy an archive's settings and results back into an output directory"
    )
    parser.add_argument(
        "--stage1-weights",
        action="store_true",
        help="also keep the finished stage-1 runs that a method still to be evaluated starts from (about 20 MB each)",
    )
    parser.add_argument(
        "--partial-runs",
        action="store_true",
        help=f"also keep the newest checkpoint of each run stopped part-way after {MIN_PARTIAL_MINUTES:g}+ minutes "
        "of training (about 60 MB each), for the next checkout to resume",
    )
    args = parser.parse_args()
    if args.restore:
        copied, kept = restore(args.source, args.target)
        print(f"restored {copied} files to {args.target}; kept {kept} already there")
        return
    copied = archive(args.source, args.target, stage1_weights=args.stage1_weights, partial_runs=args.partial_runs)
    print(f"copied {copied} files to {args.target}")


if __name__ == "__main__":
    main()
