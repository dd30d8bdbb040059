"""Replay a finished `lbr demo` directory through the time-left message.

Each task takes the time that directory measured for it (training logs and result files, plus
10 s to load a model for a training run), on a fake clock, and the progress lines show what
`lbr demo` would have printed with the current priors (docs/DEMO.md). Nothing is trained,
and nothing in the directory is written.

    .venv/bin/python benchmarks/time_left_replay.py /tmp/fresh/reports/demo
    .venv/bin/python benchmarks/time_left_replay.py reports/demo --domains code,medical
    .venv/bin/python benchmarks/time_left_replay.py /tmp/fresh25/reports/demo --one-off-seconds 20

A demo directory does not record the order of its --domains (give it again if it was not the
default), and a `lbr benchmark` directory, whose methods, settings and seeds are not recorded
either, is not what this replays.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import lbr.experiments as experiments
from lbr.errors import ConfigError
from lbr.experiments import BUDGETS, Budget, Experiment

LOAD_SECONDS = 10.0  # a training run's model load, which its log's throughput leaves out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="a finished lbr demo directory (its --output)")
    parser.add_argument(
        "--domains",
        type=lambda text: text.split(","),
        default=None,
        help="the demo's --domains, in its order (default: the domains it has results for, in lbr's order)",
    )
    parser.add_argument("--build-seconds", type=float, default=35.0, help="data building in all (35 s in the demo)")
    parser.add_argument(
        "--one-off-seconds",
        type=float,
        default=0.0,
        help="seconds of the first task that loads the model that were the process's one-offs (the transformers "
        "import, the GGUF conversion), which lbr now pays before the first task: the replay takes them out of "
        "that task (a directory written before 2026-12-07's change counts them in it)",
    )
    args = parser.parse_args(argv)
    settings_path = args.output / "experiment.json"
    if not settings_path.is_file():
        parser.error(f"{settings_path} does not exist: give a directory that lbr demo wrote")
    settings = json.loads(settings_path.read_text(encoding="utf-8"))
    budget = Budget(**settings["budget"]) if "budget" in settings else BUDGETS["demo"]
    domains = args.domains or [d for d in experiments.DOMAINS if (args.output / "results" / d).is_dir()]
    try:
        finished = Experiment(output=args.output, domains=domains, budget=budget, show_progress=False)
    except ConfigError as err:
        parser.error(str(err))
    tasks = finished.tasks()
    builds = sum(kind == "build" for kind, _, _ in tasks)
    took = []
    for kind, task_args, _ in tasks:
        if kind == "build":
            took.append(args.build_seconds / builds)
            continue
        seconds = finished.measured_seconds(kind, task_args)
        if seconds is None:
            parser.error(f"{args.output} has no measured time for {kind} {experiments.task_label(task_args)}")
        took.append(seconds + (LOAD_SECONDS if kind in ("stage1", "stage2") else 0.0))
    first_load = next(i for i, (kind, task_args, _) in enumerate(tasks) if experiments.needs_model(kind, task_args))
    took[first_load] -= min(args.one_off_seconds, took[first_load])

    with tempfile.TemporaryDirectory() as scratch:
        # An empty directory with every answer that would read it replaced: each task runs, and
        # its estimate starts from the priors, as on a fresh machine.
        replay = Experiment(output=Path(scratch), domains=domains, budget=budget, show_progress=False)
        replay.done = lambda kind, task_args: False
        replay.resumes = lambda kind, task_args: False
        replay.resume_point = lambda kind, task_args: None
        replay.measured_seconds = lambda kind, task_args: None
        position = iter(took)
        experiments.run_on_clock(replay, tasks, lambda kind, task_args: next(position))
    print(f"taken in all: {experiments.duration_text(sum(took))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
