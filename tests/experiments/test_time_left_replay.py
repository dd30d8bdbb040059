from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lbr.experiments import BUDGETS, Experiment, duration_text, task_label
from tests.experiments import benchmark_script
from tests.experiments.test_experiments import _finished_run

# Training times whose logged throughput (100 tokens / seconds) is exact in binary floating point.
TRAIN_SECONDS = (25.0, 50.0, 100.0, 200.0, 400.0, 800.0)


def _finished_demo(output: Path) -> tuple[Experiment, list[float]]:
    """A demo directory on medical whose every task has a measured time; the seconds each task
    takes in the replay (a training run's log time + the model load, an evaluation's own)."""
    experiment = Experiment(output=output, domains=("medical",), budget=BUDGETS["demo"], show_progress=False)
    experiment.check_output()
    took = []
    for index, (kind, args, _) in enumerate(experiment.tasks()):
        if kind == "build":
            took.append(30.0)  # --build-seconds 30, one domain
        elif kind == "evaluate":
            path = experiment.result_path(**args)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"seconds": 60.0 + index}))
            took.append(60.0 + index)
        else:
            seconds = TRAIN_SECONDS[index % len(TRAIN_SECONDS)]
            _finished_run(experiment.task_dir(kind, **args), seconds)
            took.append(seconds + 10.0)  # LOAD_SECONDS
    return experiment, took


def test_replay_walks_the_measured_times_from_the_priors(tmp_path, capsys):
    experiment, took = _finished_demo(tmp_path / "demo")
    tasks = experiment.tasks()
    before = {path: path.read_bytes() for path in (tmp_path / "demo").rglob("*") if path.is_file()}

    assert benchmark_script("time_left_replay").main([str(tmp_path / "demo"), "--build-seconds", "30"]) == 0

    lines = capsys.readouterr().out.splitlines()
    progress = [line for line in lines if line.startswith("[")]
    assert len(progress) == len(tasks)
    # Each line's elapsed time is the sum of the measured times before it, in the tasks' order.
    for index, line in enumerate(progress):
        kind, args, _ = tasks[index]
        assert line.startswith(f"[{index + 1}/{len(tasks)}] {kind} ")
        assert f"(elapsed {duration_text(sum(took[:index]))}," in line
    # The first estimate is what a fresh machine would say: the sum of the priors.
    assert re.search(r"about (\S+) left\)", progress[0]).group(1) == duration_text(sum(p for _, _, p in tasks))
    assert lines[-1] == f"taken in all: {duration_text(sum(took))}"
    # Nothing in the finished directory was written or added.
    assert {path: path.read_bytes() for path in (tmp_path / "demo").rglob("*") if path.is_file()} == before


def test_replay_refuses_a_directory_with_a_task_it_has_no_time_for(tmp_path, capsys):
    experiment, _ = _finished_demo(tmp_path / "demo")
    kind, args, _ = next(task for task in experiment.tasks() if task[0] == "evaluate")
    experiment.result_path(**args).unlink()
    with pytest.raises(SystemExit) as exit_info:
        benchmark_script("time_left_replay").main([str(tmp_path / "demo")])
    assert exit_info.value.code == 2
    assert f"has no measured time for evaluate {task_label(args)}" in capsys.readouterr().err

    with pytest.raises(SystemExit):
        benchmark_script("time_left_replay").main([str(tmp_path / "missing")])
    assert "experiment.json does not exist" in capsys.readouterr().err
