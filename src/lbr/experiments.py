"""The LBR-vs-baselines experiment behind ``lbr demo`` and ``lbr benchmark``.

An experiment is a grid of cells (domain x knowledge setting x method x seed). Each method is
the same code path with other settings (the method table in README.md):

| method          | stage 1                  | stage 2                    |
|-----------------|--------------------------|----------------------------|
| base            | none                     | none                       |
| llm_cl          | none                     | mu = 0                     |
| llm_cl_matched  | none                     | mu = 0, as many tokens as LBR's two stages |
| clm_cl          | lambda = 0               | mu = 0                     |
| lbr_norefine    | lambda > 0               | mu = 0                     |
| lbr_unsup       | lambda > 0               | none                       |
| lbr             | lambda > 0               | mu > 0                     |

plus ``bm25`` and ``minilm``. Stage-1 runs are shared between the methods that start from
them. Every training run and every result is written to its own directory or JSON file, so
a stopped experiment resumes: finished cells are kept, a half-trained run continues from its
last checkpoint.

What each stage sees: stage 1 reads the knowledge records (``knowledge.{open,closed}.jsonl``)
of the documents in the benchmark corpus; stage 2 reads ``pairs.train.jsonl`` (or, with
``max_pairs``, a seeded sample of it, ``pairs.train.N.seedS.jsonl``); model
selection may read the dev split; only the final evaluation reads ``qrels/test.tsv``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import random
import statistics
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lbr.config import ModelConfig, Stage1Config, Stage2Config, TrainConfig
from lbr.data.builders import BUILDER_VERSION, built_version
from lbr.data.jsonl import iter_jsonl, write_jsonl
from lbr.errors import ConfigError
from lbr.integrations.model_card import LBR_CONFIG_NAME

DOMAINS = ("medical", "chemistry", "code")
SETTINGS = ("open", "closed")
TRAINED_METHODS = ("llm_cl", "llm_cl_matched", "clm_cl", "lbr_norefine", "lbr_unsup", "lbr")
METHODS = ("bm25", "minilm", "base", *TRAINED_METHODS)
METHOD_LABELS = {
    "bm25": "BM25",
    "minilm": "MiniLM-L6 (off the shelf)",
    "base": "base (untrained)",
    "llm_cl": "LLM+CL",
    "llm_cl_matched": "LLM+CL compute-matched",
    "clm_cl": "CLM->CL",
    "lbr_norefine": "LBR w/o refinement",
    "lbr_unsup": "LBR-unsup",
    "lbr": "LBR",
}
# Which stage-1 run each method starts from (None: the bare LLM) and whether it has a stage 2.
STAGE1_OF = {"clm_cl": "clm", "lbr_norefine": "ib", "lbr_unsup": "ib", "lbr": "ib"}
UNTRAINED = ("bm25", "minilm", "base")
# The rows that load no LLM (their own retrievers).
NO_LLM = ("bm25", "minilm")
# Methods that read no stage-1 corpus do not depend on the knowledge setting: run them once.
SETTING_FREE = (*UNTRAINED, "llm_cl", "llm_cl_matched")
# Tasks expected to take less than this many seconds say little about the machine's speed (loading
# dominates them), so the time-left estimate does not rescale by them. The demo's training runs
# (priors of 40-115 s) and its evaluations but BM25's and MiniLM's (27-41 s) are above it: at
# 60 s, the demo once never corrected its estimate, which read 2.8 times low on a slow day
# (docs/DEMO.md, 2026-12-04).
MIN_TIMED_SECONDS = 20.0
# What the time-left message's priors go by, per domain: the tokens a stage-2 training pair
# gives as the stage-2 logs count them (1,122 tokens a step of 16 on medical, 2,614 on chemistry,
# 2,647 on code; the demo's data give 70 / 175 / 171; LONG_PAIR_TOKENS's figures count a pair
# differently), and an evaluation's time against medical's (2,000 documents: 85 / 146 / 196 s on
# the Intel Xeon, 135 s for medical on the Zen 4). MiniLM's 10 s (3-11 measured) and BM25's 2 s
# are under MIN_TIMED_SECONDS: they do not set the pace.
# The seconds a step or a document are the Zen 4's (AMD EPYC family 25 model 17, 2026-12-06:
# the demo and benchmarks/results/grid-full/train-logs), where the demo took 16.4 minutes;
# the Intel Xeon of earlier sessions ran the same about 1.5 times faster. A run rescales them
# by the tasks it has finished (`run`).
PAIR_TOKENS = {"medical": 70, "chemistry": 163, "code": 165}
ENCODE_COST = {"medical": 1.0, "chemistry": 1.7, "code": 2.2}
# Settings added after an experiment directory was made take these values there.
DEFAULT_RUN_SETTINGS = {
    "gen_target": "document",
    "decoder": "shared",
    "projector": "identity",
    "knowledge_form": "record",
}
# How stage 1 reads a domain's knowledge: each record as one text ("record"), or each benchmark
# document as retrieval encodes it ("title: text") with its knowledge record as the text that
# follows ("document-next"; the `continue` target's y, docs/RESULTS.md round 7).
KNOWLEDGE_FORMS = ("record", "document-next")
# Stage 2 keeps gradient checkpointing on for pairs longer than this many tokens on average
# (docs/PERFORMANCE.md, section 4): medical about 62, chemistry 157, code 173.
LONG_PAIR_TOKENS = 100
HAS_STAGE2 = {"llm_cl", "llm_cl_matched", "clm_cl", "lbr_norefine", "lbr"}
# The order in which a cell trains and evaluates its methods: the untrained ones, LLM+CL, then
# every method that starts from the λ > 0 stage-1 run, one after the other, so that a grid
# stopped after them (a lost session) never trains that run again; then the compute-matched
# baseline, which needs only the training logs of LLM+CL and of that stage-1 run, and CLM→CL.
RUN_ORDER = ("bm25", "minilm", "base", "llm_cl", "lbr", "lbr_unsup", "lbr_norefine", "llm_cl_matched", "clm_cl")


@dataclass
class Budget:
    """How much data and compute each cell gets."""

    max_docs: int = 2000
    stage1_steps: int = 120
    stage2_steps: int = 150
    stage1_batch_size: int = 16
    stage2_batch_size: int = 32
    segment_length: int = 64
    learning_rate: float = 2e-4
    encode_batch_size: int = 32
    stage2_learning_rate: float | None = None  # None: the same as learning_rate
    stage1_epochs: float | None = None  # passes over the stage-1 corpus; replaces stage1_steps when set
    stage2_epochs: float | None = None  # passes over the training pairs; replaces stage2_steps when set
    max_pairs: int | None = None  # stage 2 reads a seeded sample of this many training pairs per domain

    def __post_init__(self) -> None:
        if self.max_pairs is not None and self.max_pairs < 1:
            raise ConfigError(f"max_pairs (--stage2-pairs) must be >= 1, got {self.max_pairs}")
        flags = {
            "learning_rate": "--learning-rate",
            "stage2_learning_rate": "--stage2-lr",
            "stage1_epochs": "--stage1-epochs",
            "stage2_epochs": "--stage2-epochs",
        }
        for name, flag in flags.items():
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name} ({flag}) must be > 0, got {value}")

    @property
    def stage2_lr(self) -> float:
        return self.learning_rate if self.stage2_learning_rate is None else self.stage2_learning_rate

    def settings(self) -> dict[str, Any]:
        """The budget as recorded in experiment.json; unset options are left out, so directories
        made before an option existed still match."""
        settings = {key: value for key, value in dataclasses.asdict(self).items() if value is not None}
        if self.stage1_epochs is not None:
            del settings["stage1_steps"]  # not used
        if self.stage2_epochs is not None:
            del settings["stage2_steps"]
        return settings

    def stage1_steps_prior(self) -> int:
        """Stage-1 steps, or a guess at them for an epoch budget (the corpus is not built yet).

        The guess takes 1.65 segments per document, as measured on the medical benchmark
        (2,000 documents gave 3,306 segments of 64 tokens); it only feeds the time-left message.
        """
        if self.stage1_epochs is None:
            return self.stage1_steps
        return math.ceil(self.stage1_epochs * self.max_docs * 1.65 / self.stage1_batch_size)


BUDGETS = {
    # Shows the workflow, not the claim. Sized for the slower of the two hosts this machine has
    # run on: an AVX2-only AMD EPYC runs these steps about 2.5x slower than the AMX Intel Xeon
    # (code alone, old budget: 20.3 against 8.2 minutes), and 8 + 8 steps took 28.2 minutes there; 6 + 6 took
    # 16.4 from a fresh clone on a Zen 4 EPYC with AVX512 (docs/DEMO.md).
    "demo": Budget(max_docs=200, stage1_steps=6, stage2_steps=6, stage1_batch_size=8, stage2_batch_size=8),
    # For trying the command: priors of about 11 minutes for the three domains (not timed).
    "tiny": Budget(max_docs=120, stage1_steps=3, stage2_steps=3, stage1_batch_size=8, stage2_batch_size=8),
    # The benchmark (docs/RESULTS.md): one epoch of stage 1, where the bottleneck starts to pay
    # (round 3); stage 2 one epoch over the training pairs at lr 5e-4 (round 5: 60 steps, the
    # earlier budget, was far from done; lr 1e-3 diverged on one of four runs in round 3).
    "full": Budget(
        max_docs=2000,
        stage1_epochs=1.0,
        stage2_epochs=1.0,
        stage1_batch_size=16,
        stage2_batch_size=16,
        stage2_learning_rate=5e-4,
    ),
}


@dataclass(frozen=True)
class PlannedTask:
    """One task of a benchmark's plan (:meth:`Experiment.plan`)."""

    kind: str  # build, stage1, stage2 or evaluate
    args: dict[str, Any]
    done: bool
    resumes: bool  # a training run stopped part-way, which continues from its last checkpoint
    resume_point: tuple[int, int] | None  # (step, total steps) of that checkpoint, if there is one
    seconds: float  # still needed (0 when done): a resumed run's steps after its checkpoint
    basis: str  # "measured": the same run finished in this directory; "prior": a rescaled prior

    @property
    def label(self) -> str:
        return task_label(self.args)


def result_file(root: Path, domain: str, setting: str, method: str, seed: int) -> Path:
    """Where the result of a cell lies under a results directory ``root``. Methods without
    training depend on neither the setting nor the seed, LLM+CL and its compute-matched run
    not on the setting: one file serves all the cells they stand in."""
    if method in UNTRAINED:
        return root / domain / f"{method}.json"
    if method in SETTING_FREE:
        return root / domain / f"{method}-seed{seed}.json"
    return root / domain / setting / f"{method}-seed{seed}.json"


@dataclass
class Experiment:
    """A grid of cells and the settings they share."""

    output: Path
    domains: tuple[str, ...] = DOMAINS
    settings: tuple[str, ...] = ("open",)
    methods: tuple[str, ...] = ("bm25", "minilm", "base", "llm_cl", "lbr")
    seeds: tuple[int, ...] = (0,)
    budget: Budget = field(default_factory=Budget)
    model: str = "smollm2"
    ib_weight: float = 1.0
    gen_weight: float = 0.1
    target: str = "reconstruct"
    gen_target: str = "document"
    num_bottleneck_tokens: int = 4
    decoder: str = "shared"
    projector: str = "calibrated"
    knowledge_form: str = "record"
    data_seed: int = 0
    eval_split: str = "test"  # "dev" for tuning: the test queries stay unseen
    show_progress: bool = True

    def __post_init__(self) -> None:
        for name, values, allowed in (
            ("domain", self.domains, DOMAINS),
            ("setting", self.settings, SETTINGS),
            ("method", self.methods, METHODS),
        ):
            unknown = [v for v in values if v not in allowed]
            if unknown:
                raise ConfigError(f"unknown {name}(s) {', '.join(unknown)}; choose from {', '.join(allowed)}")
        if not self.seeds:
            raise ConfigError("at least one seed is needed")
        if self.eval_split not in ("dev", "test"):
            raise ConfigError(f"eval_split must be dev or test, not {self.eval_split!r}")
        if self.knowledge_form not in KNOWLEDGE_FORMS:
            raise ConfigError(
                f"knowledge_form must be one of {', '.join(KNOWLEDGE_FORMS)}, not {self.knowledge_form!r}"
            )

    def run_settings(self) -> dict[str, Any]:
        """Everything that changes what a training run or a result is (not which cells run)."""
        return {
            "model": self.model,
            "budget": self.budget.settings(),
            "ib_weight": self.ib_weight,
            "gen_weight": self.gen_weight,
            "target": self.target,
            "gen_target": self.gen_target,
            "num_bottleneck_tokens": self.num_bottleneck_tokens,
            "decoder": self.decoder,
            "projector": self.projector,
            "knowledge_form": self.knowledge_form,
            "data_seed": self.data_seed,
        }

    def check_output(self, *, record: bool = True) -> None:
        """Record the run settings in the output directory, or refuse one made with others.

        Finished cells are reused by name, so resuming into a directory trained with another
        lambda, target or budget would silently mix two experiments in one table. With
        ``record=False`` a directory without settings is left as it is (nothing is written).
        """
        path = self.output / "experiment.json"
        settings = self.run_settings()
        if path.exists():
            try:
                saved = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                message = f"{path}: unreadable ({err}); move the directory away or pick another --output"
                raise ConfigError(message) from None
            differences = [
                f"{key}: this directory has {saved.get(key, DEFAULT_RUN_SETTINGS.get(key))!r}, asked {value!r}"
                for key, value in settings.items()
                if saved.get(key, DEFAULT_RUN_SETTINGS.get(key)) != value
            ]
            if differences:
                raise ConfigError(
                    f"{self.output} holds an experiment with other settings; use another --output "
                    "(or the same settings to resume):\n  " + "\n  ".join(differences)
                )
            return
        if not record:
            return
        self.output.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(settings, indent=2), encoding="utf-8")
        tmp.replace(path)

    # ------------------------------------------------------------------ paths
    def data_dir(self, domain: str) -> Path:
        return self.output / "data" / domain

    def run_dir(self, domain: str, setting: str, name: str, seed: int) -> Path:
        setting = record_setting(name, setting)
        return self.output / "runs" / domain / setting / f"{name}-seed{seed}"

    def result_path(self, domain: str, setting: str, method: str, seed: int) -> Path:
        root = self.output / ("results" if self.eval_split == "test" else f"results-{self.eval_split}")
        return result_file(root, domain, setting, method, seed)

    # ------------------------------------------------------------------ the plan
    def tasks(self) -> list[tuple[str, dict[str, Any], float]]:
        """Every task in order, as (kind, arguments, prior estimate of its seconds on 2 CPU cores).

        Cells run setting by setting, then seed by seed, then domain by domain. Within a cell,
        methods run in RUN_ORDER, and each is evaluated as soon as it is trained, so a grid
        stopped part-way (it takes many hours) has a result file for every method it finished:
        the first setting with the first seed on every domain first, and within a cell the rows
        the claim is judged on first. Untrained methods are evaluated once per domain, and the
        baselines without a stage 1 once per domain and seed, in the first setting's cell.

        The estimates only feed the time-left message (`run`). It takes a task's time from the
        same run already finished in this directory where there is one (`measured_seconds`),
        rescaled by how much slower or faster this process runs the tasks that had such a time,
        and otherwise rescales the estimate by the median measured / estimated time of that kind
        of task (stage 1, stage 2, evaluation) on that domain.
        """
        b = self.budget
        # Seconds a step: a fixed part plus a part per text (stage 1) or per token (stage 2), fitted
        # to the Zen 4's training logs (PAIR_TOKENS says which); the IB run adds the decoder pass.
        stage1_step = {"clm": 2 + 0.29 * b.stage1_batch_size, "ib": 2 + 0.72 * b.stage1_batch_size}

        def stage2_step(domain: str) -> float:
            return 2 + 0.005 * PAIR_TOKENS[domain] * b.stage2_batch_size

        def encode(domain: str) -> float:  # model load + corpus and queries
            return 15 + 120 * ENCODE_COST[domain] * b.max_docs / 2000

        # The matched run's extra steps: stage-1 tokens twice, about 100 tokens a pair (medical: 265; 275 ran).
        stage1_tokens = b.stage1_steps_prior() * b.stage1_batch_size * b.segment_length
        matched_extra = 2 * stage1_tokens / (100 * b.stage2_batch_size)
        tasks: list[tuple[str, dict[str, Any], float]] = [("build", {"domain": d}, 10) for d in self.domains]
        for setting in self.settings:
            first_setting = setting == self.settings[0]
            for seed in self.seeds:
                for domain in self.domains:
                    cell = {"domain": domain, "setting": setting}
                    stage1_listed: set[str] = set()
                    for method in sorted(self.methods, key=RUN_ORDER.index):
                        if method in UNTRAINED and not (first_setting and seed == self.seeds[0]):
                            continue
                        if method in SETTING_FREE and not first_setting:
                            continue
                        # The matched run counts the first setting's stage-1 (ib) tokens.
                        needs = STAGE1_OF.get(method) or ("ib" if method == "llm_cl_matched" else None)
                        if needs and needs not in stage1_listed:
                            stage1_listed.add(needs)
                            args = {**cell, "name": needs, "seed": seed}
                            tasks.append(("stage1", args, 10 + b.stage1_steps_prior() * stage1_step[needs]))
                        if method == "llm_cl_matched" and "llm_cl" not in self.methods:  # its steps need LLM+CL's
                            llm_cl_cost = 10 + self.stage2_base_steps(domain, prior=True) * stage2_step(domain)
                            tasks.append(("stage2", {**cell, "method": "llm_cl", "seed": seed}, llm_cl_cost))
                        if method in HAS_STAGE2:
                            steps = self.stage2_base_steps(domain, prior=True)
                            steps += matched_extra if method == "llm_cl_matched" else 0
                            # The L_gen decoder pass: 1.5-2.1x in the demo; 1.7x on chemistry and 1.4x on
                            # code in the grid, 3.4x on medical (whose LLM+CL runs without checkpointing).
                            factor = 2.0 if method == "lbr" else 1.0
                            seconds = 10 + steps * stage2_step(domain) * factor
                            tasks.append(("stage2", {**cell, "method": method, "seed": seed}, seconds))
                        cost = {"bm25": 2.0, "minilm": 10.0}.get(method, encode(domain))
                        tasks.append(("evaluate", {**cell, "method": method, "seed": seed}, cost))
        return tasks

    # ------------------------------------------------------------------ running
    def plan(self) -> list[PlannedTask]:
        """Every task in the order :meth:`run` takes them, whether each is done, and the
        seconds each still needs by the same estimate as run's time-left message. Reads the
        output directory and writes nothing."""
        self.check_output(record=False)
        tasks = self.tasks()
        measured, ratios = self._timing(tasks)
        planned = []
        for (kind, args, prior), seconds in zip(tasks, measured, strict=True):
            done = self.done(kind, args)
            point = None if done else self.resume_point(kind, args)
            left = 0.0 if done else _seconds_left(prior, seconds, _speed(ratios, kind, args["domain"]), point)
            resumes = not done and self.resumes(kind, args)
            basis = "measured" if seconds is not None else "prior"
            planned.append(PlannedTask(kind, args, done, resumes, point, left, basis))
        return planned

    def _timing(
        self, tasks: list[tuple[str, dict[str, Any], float]]
    ) -> tuple[list[float | None], dict[tuple[str, str], list[float]]]:
        """What the time-left estimate goes by: each task's measured seconds (None if the same
        run has not finished in this directory) and the measured / prior ratios by (kind,
        domain)."""
        # Seconds this machine took for each task's run in this directory (this cell or another).
        measured = [self.measured_seconds(kind, args) for kind, args, _ in tasks]
        # Measured / prior seconds by (kind, domain): the priors of stage 1, stage 2 and evaluation
        # are off by different factors on each domain. Runs finished before this process seed
        # them, one ratio per run name (the seeds and settings of a run share its measurement),
        # and each task run whole here adds its own; the median shrugs off one task that was
        # slowed (a paused process, another job on the cores).
        seeded: dict[tuple[str, str, str], float] = {}
        for (kind, args, prior), seconds in zip(tasks, measured, strict=True):
            if seconds is not None and prior >= MIN_TIMED_SECONDS:
                seeded[(kind, args["domain"], _run_name(args))] = seconds / prior
        ratios: dict[tuple[str, str], list[float]] = {}
        for (kind, domain, _), ratio in seeded.items():
            ratios.setdefault((kind, domain), []).append(ratio)
        return measured, ratios

    def run(self) -> list[dict[str, Any]]:
        """Run every task not already done; return all result records."""
        self.check_output()
        tasks = self.tasks()
        done = [self.done(kind, args) for kind, args, _ in tasks]
        measured, ratios = self._timing(tasks)

        points = [None if done[i] else self.resume_point(kind, args) for i, (kind, args, _) in enumerate(tasks)]
        # The times this directory measured before this process may come from a faster or slower
        # machine (or day): each task that had one and runs whole here says how this process's
        # pace compares, and the median of those rescales every such time.
        before = list(measured)
        paces: list[float] = []

        def estimate(i: int) -> float:
            kind, args, prior = tasks[i]
            seconds = before[i] * _median(paces) if before[i] is not None else measured[i]
            return _seconds_left(prior, seconds, _speed(ratios, kind, args["domain"]), points[i])

        started = time.perf_counter()
        if any(not done[i] and needs_model(kind, args) for i, (kind, args, _) in enumerate(tasks)):
            self._prepare_model()
        for index, (kind, args, prior) in enumerate(tasks):
            left = sum(estimate(i) for i in range(index, len(tasks)) if not done[i])
            elapsed = duration_text(time.perf_counter() - started)
            print(
                f"[{index + 1}/{len(tasks)}] {kind} {task_label(args)} (elapsed {elapsed}, "
                f"about {duration_text(left)} left)",
                flush=True,
            )
            # Checked again: a task can be done by now (another task trained it as a dependency).
            if not self.done(kind, args):
                task_start = time.perf_counter()
                resumed = self.resumes(kind, args)
                did_work = getattr(self, f"_{kind}")(**args)
                took = time.perf_counter() - task_start
                if did_work and not resumed and prior >= MIN_TIMED_SECONDS:  # part-done or tiny tasks say little
                    ratios.setdefault((kind, args["domain"]), []).append(took / prior)
                    if before[index] is not None and before[index] >= MIN_TIMED_SECONDS:
                        paces.append(took / before[index])
                        print(
                            f"tasks take {_median(paces):.2f}x the time they took before in {self.output}; "
                            "the time left counts that",
                            flush=True,
                        )
                # The same run's other seeds and settings now have this one to go by (those with a
                # time from before this process keep it, rescaled by the pace: no need to reread).
                for later in range(index + 1, len(tasks)):
                    if before[later] is None and tasks[later][0] == kind and _same_run(tasks[later][1], args):
                        measured[later] = self.measured_seconds(kind, tasks[later][1])
        return self.collect()

    def measured_seconds(self, kind: str, args: dict[str, Any]) -> float | None:
        """Seconds this machine took for the same task in this output directory: the median over
        the finished training logs, or the result files, of the same domain and run in any
        setting or seed (this cell's included). None if there is none. It only feeds the time-left
        message."""
        domain, method = args["domain"], args.get("method")
        if kind == "evaluate":
            root = self.result_path(domain, "open", "base", 0).parent
            same = root.glob(f"{method}.json" if method in UNTRAINED else f"**/{method}-seed*.json")
            seconds = [s for s in map(_result_seconds, same) if s is not None]
        elif kind in ("stage1", "stage2"):
            run = self.task_dir(kind, **args).name.rsplit("-seed", 1)[0]  # stage1-ib, lbr, ...
            logs = {}  # (setting, run-seedN) -> log: an archived copy does not count twice
            for log in (self.output / "train-logs").glob(f"{domain}-*-{run}-seed*.jsonl"):
                logs[tuple(log.stem.split("-", 2)[1:])] = log
            for run_dir in (self.output / "runs" / domain).glob(f"*/{run}-seed*"):
                if run_finished(run_dir):
                    logs[(run_dir.parent.name, run_dir.name)] = run_dir / "train_log.jsonl"
            seconds = [s for s in map(_run_seconds, logs.values()) if s is not None]
        else:
            return None
        seconds = [s for s in seconds if math.isfinite(s) and s >= 0]  # a hand-edited file must not stop a run
        return statistics.median(seconds) if seconds else None

    def done(self, kind: str, args: dict[str, Any]) -> bool:
        """Whether a task's output is already there, so that running it would skip it.

        A training run is also done when every evaluation that reads it has its result file:
        a finished grid whose run directories were deleted (they hold gigabytes of weights), or
        whose result files were copied from an archive, is not trained again.
        """
        if kind == "build":
            return self._data_ready(args["domain"])
        if kind == "evaluate":
            return self.result_path(**args).exists()
        if run_finished(self.task_dir(kind, **args)):
            return True
        return not self.needed(kind, args)

    def needed(self, kind: str, args: dict[str, Any]) -> bool:
        """Whether an evaluation not yet done still reads a training run: a stage-1 run is read by
        the methods that start from it, a stage-2 run by its own evaluation. The compute-matched
        baseline reads only the training logs of LLM+CL and of the first setting's λ > 0 run
        (to count their tokens), so it needs those runs only while neither they nor an archived
        copy of their log (`finished_log`) is there, and only until its own run has finished."""
        cell = {"domain": args["domain"], "setting": args["setting"], "seed": args["seed"]}
        if kind == "stage1":
            methods = [m for m in self.methods if STAGE1_OF.get(m) == args["name"]]
            counted = args["name"] == "ib" and args["setting"] == self.settings[0]
        elif kind == "stage2":
            methods = [args["method"]] if args["method"] in self.methods else []
            counted = args["method"] == "llm_cl"
        else:
            raise ValueError(f"only training tasks are read by evaluations, not {kind!r}")
        if any(not self.result_path(**cell, method=method).exists() for method in methods):
            return True
        if counted and "llm_cl_matched" in self.methods and self.finished_log(kind, args) is None:
            matched = {**cell, "method": "llm_cl_matched"}
            return not self.result_path(**matched).exists() and not run_finished(self.task_dir("stage2", **matched))
        return False

    def finished_log(self, kind: str, args: dict[str, Any]) -> Path | None:
        """The training log of a finished run: in its run directory, or else the copy that
        `benchmarks/archive.py --restore` puts in `train-logs/` (archive.py keeps the logs of
        finished runs only). None if neither is there."""
        run = self.task_dir(kind, **args)
        if run_finished(run):
            return run / "train_log.jsonl"
        domain, setting, name = run.parts[-3:]
        archived = self.output / "train-logs" / f"{domain}-{setting}-{name}.jsonl"
        return archived if archived.exists() else None

    def task_dir(
        self, kind: str, domain: str, setting: str, seed: int, *, name: str | None = None, method: str | None = None
    ) -> Path:
        """The run directory a training task writes: `stage1` takes the stage-1 run's name
        (clm or ib), `stage2` the method."""
        if kind == "stage1" and name:
            return self.run_dir(domain, setting, f"stage1-{name}", seed)
        if kind == "stage2" and method:
            return self.run_dir(domain, setting, method, seed)
        raise ValueError(f"no run directory for kind={kind!r}, name={name!r}, method={method!r}")

    def resume_point(self, kind: str, args: dict[str, Any]) -> tuple[int, int] | None:
        """(step, total steps) of the last complete checkpoint of a training run stopped part-way,
        or None (not stopped part-way, no checkpoint yet, or an unreadable one)."""
        if not self.resumes(kind, args):
            return None
        from lbr.training.checkpoint import STATE_NAME, complete_checkpoints

        # Newest first, as the trainer falls back to an older checkpoint when the last is broken.
        for checkpoint in reversed(complete_checkpoints(self.task_dir(kind, **args))):
            try:
                state = json.loads((checkpoint / STATE_NAME).read_text(encoding="utf-8"))
                step, total = int(state["step"]), int(state["total_steps"])
            except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
                continue  # it only shortens an estimate; the run itself reports a broken checkpoint
            if 0 <= step <= total and total > 0:
                return step, total
        return None

    def resumes(self, kind: str, args: dict[str, Any]) -> bool:
        """Whether a training task will continue a run stopped part-way (its directory exists but
        holds no finished model)."""
        if kind not in ("stage1", "stage2"):
            return False
        out = self.task_dir(kind, **args)
        return out.exists() and not run_finished(out)

    def _data_ready(self, domain: str) -> bool:
        """Whether the domain's dataset is built, by this lbr's builder version. Data of another
        version is refused: its finished cells would mix two datasets in one table."""
        version = built_version(self.data_dir(domain))
        if version is None:
            return False
        if version != BUILDER_VERSION:
            raise ConfigError(
                f"{self.data_dir(domain)}: built by data builder version {version}, and this lbr builds version "
                f"{BUILDER_VERSION} (docs/BENCHMARKS.md says what changed), and the results in {self.output} "
                "were measured on that data. Use another --output"
            )
        return True

    def _build(self, domain: str) -> bool:
        from lbr.data.builders import build

        built = not self.done("build", {"domain": domain})
        if built:
            build(domain, self.data_dir(domain), max_docs=self.budget.max_docs, seed=self.data_seed)
        if self.budget.max_pairs is not None:
            self.stage2_pairs(domain)  # a --stage2-pairs too large fails now, not hours later
        return built

    def stage1_corpus(self, domain: str, setting: str) -> Path:
        """The knowledge records of the benchmark's documents (written once per setting and form).

        With knowledge_form "document-next", each record becomes {"text": the document as
        retrieval encodes it, "next": the record's text}, in the same order.
        """
        from lbr.data.beir import format_document

        data = self.data_dir(domain)
        form = "" if self.knowledge_form == "record" else f".{self.knowledge_form}"
        path = data / f"stage1.{setting}{form}.jsonl"
        if path.exists():
            return path
        corpus = {record["_id"]: record for _, record in iter_jsonl(data / "corpus.jsonl")}
        records = [record for _, record in iter_jsonl(data / f"knowledge.{setting}.jsonl") if record["id"] in corpus]
        if self.knowledge_form == "document-next":
            documents = [corpus[record["id"]] for record in records]
            records = [
                {"id": record["id"], "text": format_document(doc.get("title", ""), doc["text"]), "next": record["text"]}
                for record, doc in zip(records, documents, strict=True)
            ]
        write_jsonl(path, records)
        return path

    def _model_config(self, **overrides: Any) -> ModelConfig:
        return ModelConfig(
            model=self.model,
            num_bottleneck_tokens=self.num_bottleneck_tokens,
            decoder=self.decoder,
            projector=self.projector,
            **overrides,
        )

    def _train_config(
        self, output: Path, seed: int, steps: int, stage: int, epochs: float = 1.0, checkpointing: bool = False
    ) -> TrainConfig:
        """Training settings of one run: `steps` optimiser steps, or `epochs` passes when steps is 0."""
        b = self.budget
        return TrainConfig(
            output=str(output),
            seed=seed,
            max_steps=steps,
            epochs=epochs,
            batch_size=b.stage1_batch_size if stage == 1 else b.stage2_batch_size,
            learning_rate=b.learning_rate if stage == 1 else b.stage2_lr,
            # A checkpoint every quarter of the run, at most 25 steps apart (5-10 minutes of a
            # full-budget run here): a session that stops mid-run loses little of it.
            save_steps=max(10, min(25, (steps or b.stage1_steps_prior()) // 4)),
            # Always in stage 1, where it makes the step faster here (less fresh memory a step);
            # in stage 2 as stage2_checkpointing decides.
            gradient_checkpointing=stage == 1 or checkpointing,
        )

    def _stage1(self, domain: str, setting: str, name: str, seed: int) -> bool:
        from lbr.training import learn

        out = self.task_dir("stage1", domain, setting, seed, name=name)
        if run_finished(out):
            return False
        stage1 = Stage1Config(
            corpus=str(self.stage1_corpus(domain, setting)),
            segment_length=self.budget.segment_length,
            target=self.target,
            ib_weight=self.ib_weight if name == "ib" else 0.0,
        )
        if self.knowledge_form == "document-next":  # a whole knowledge record is the target: room for two segments
            stage1 = dataclasses.replace(stage1, max_target_length=2 * self.budget.segment_length)
        learn(
            self._model_config(),
            stage1,
            self._stage1_train_config(out, seed),
            resume=out.exists(),
            show_progress=self.show_progress,
        )
        return True

    def _stage1_train_config(self, output: Path, seed: int) -> TrainConfig:
        b = self.budget
        if b.stage1_epochs is None:
            return self._train_config(output, seed, b.stage1_steps, stage=1)
        return self._train_config(output, seed, 0, stage=1, epochs=b.stage1_epochs)

    def stage2_base_steps(self, domain: str, prior: bool = False) -> int:
        """Stage-2 steps of every row but the compute-matched one: the budget's steps, or its epochs
        over the domain's training pairs. With prior=True, a guess when the data is not built yet
        (1.2 pairs a document, as on medical); it only feeds the time-left message."""
        b = self.budget
        if b.stage2_epochs is None:
            return b.stage2_steps
        if prior:  # no reading of records, no writing
            pairs = self.data_dir(domain) / "pairs.train.jsonl"
            if pairs.exists():
                with pairs.open("rb") as handle:
                    count = sum(1 for line in handle if line.strip())
            else:
                count = round(1.2 * b.max_docs)
            count = count if b.max_pairs is None else min(count, b.max_pairs)
        else:
            count = sum(1 for _ in iter_jsonl(self.stage2_pairs(domain)))
        return max(1, math.ceil(b.stage2_epochs * count / b.stage2_batch_size))

    def stage2_pairs_name(self) -> str:
        """The file name, in each domain's data directory, of the training pairs stage 2 reads."""
        n = self.budget.max_pairs
        return "pairs.train.jsonl" if n is None else f"pairs.train.{n}.seed{self.data_seed}.jsonl"

    def stage2_pairs(self, domain: str) -> Path:
        """The training pairs stage 2 reads: all of them, or with `max_pairs` a sample of that many
        (seeded by data_seed, in file order), written beside them and the same for every row.
        An existing sample file is used only if it is the sample these pairs and this seed give."""
        path = self.data_dir(domain) / "pairs.train.jsonl"
        n = self.budget.max_pairs
        if n is None:
            return path
        records = [record for _, record in iter_jsonl(path)]
        if n >= len(records):
            raise ConfigError(
                f"max_pairs (--stage2-pairs) is {n}, not below the {len(records)} training pairs in {path}; "
                "leave it unset to use them all"
            )
        keep = sorted(random.Random(self.data_seed).sample(range(len(records)), n))
        chosen = [records[i] for i in keep]
        sample = path.with_name(self.stage2_pairs_name())
        if not sample.exists():
            write_jsonl(sample, chosen)
        elif [record for _, record in iter_jsonl(sample)] != chosen:
            raise ConfigError(
                f"{sample} is not the sample of {n} pairs that {path} and data seed {self.data_seed} give "
                "(the pairs were rebuilt since?); move it away to draw it again"
            )
        return sample

    def _matched_sources(self, domain: str, setting: str, seed: int) -> list[tuple[str, dict[str, Any]]]:
        """The runs whose training logs the compute-matched run counts, as (kind, task arguments):
        LLM+CL's, and the first setting's λ > 0 stage-1 run (it stands for every setting; open
        and closed differ little in size)."""
        return [
            ("stage2", {"domain": domain, "setting": setting, "seed": seed, "method": "llm_cl"}),
            ("stage1", {"domain": domain, "setting": self.settings[0], "seed": seed, "name": "ib"}),
        ]

    def _stage2_steps(self, domain: str, setting: str, method: str, seed: int) -> int:
        base = self.stage2_base_steps(domain)
        if method != "llm_cl_matched":
            return base
        # As many training tokens as LBR's two stages together: stage 1's encoder input plus the
        # decoder's targets (twice the input for `reconstruct`).
        sources = self._matched_sources(domain, setting, seed)
        llm_cl_run, stage1_run = (self.task_dir(kind, **args) for kind, args in sources)
        llm_cl_log, stage1_log = (self.finished_log(kind, args) for kind, args in sources)
        if stage1_log is None or llm_cl_log is None:
            raise ConfigError(f"llm_cl_matched needs the finished runs {stage1_run} and {llm_cl_run} first")
        stage1_tokens = _stage1_tokens(stage1_log)
        steps, tokens = _logged(llm_cl_log)
        if tokens <= 0 or stage1_tokens <= 0:
            raise ConfigError(f"llm_cl_matched needs the finished runs {stage1_run} and {llm_cl_run} first")
        if steps != base:
            raise ConfigError(
                f"{llm_cl_run} ran {steps} stage-2 steps, not this budget's {base}; "
                "its tokens per step would not match the budget"
            )
        return base + math.ceil(stage1_tokens / (tokens / steps))

    def _stage2(self, domain: str, setting: str, method: str, seed: int) -> bool:
        from lbr.training import represent

        out = self.task_dir("stage2", domain, setting, seed, method=method)
        if run_finished(out):
            return False
        model = self.model
        if method in STAGE1_OF:
            self._stage1(domain, setting, STAGE1_OF[method], seed)  # returns at once if finished
            model = str(self.task_dir("stage1", domain, setting, seed, name=STAGE1_OF[method]))
        if method == "llm_cl_matched":  # its step count reads their logs: train them if no log is there
            for kind, args in self._matched_sources(domain, setting, seed):
                if self.finished_log(kind, args) is None:
                    getattr(self, f"_{kind}")(**args)
        stage2 = Stage2Config(
            pairs=str(self.stage2_pairs(domain)),
            gen_weight=self.gen_weight if method == "lbr" else 0.0,
            gen_target=self.gen_target,
        )
        steps = self._stage2_steps(domain, setting, method, seed)
        config = dataclasses.replace(self._model_config(), model=model)
        checkpointing = stage2_checkpointing(stage2, self._tokenizer)
        represent(
            config,
            stage2,
            self._train_config(out, seed, steps, stage=2, checkpointing=checkpointing),
            resume=out.exists(),
            show_progress=self.show_progress,
        )
        return True

    def _prepare_model(self) -> None:
        """Pay the process's one-offs before the first task: importing transformers and, for a
        GGUF model (the embedded default) not yet in the cache, converting it. Counted in the
        first task that loads the model, they made the demo's first evaluation take 1.4x its
        prior, and the time-left message read 20-27% high until later evaluations outvoted it
        (docs/DEMO.md, 2026-12-07)."""
        import transformers  # noqa: F401  (the import itself is the one-off)

        from lbr.modeling.loading import resolve_model_path

        resolve_model_path(self.model)

    def _tokenizer(self) -> Any:
        """The base model's tokenizer (a stage-1 run adds only the bottleneck tokens to it)."""
        from transformers import AutoTokenizer

        from lbr.modeling.loading import resolve_model_path

        return AutoTokenizer.from_pretrained(resolve_model_path(self.model))

    def _evaluate(self, domain: str, setting: str, method: str, seed: int) -> bool:
        from lbr.data.beir import load_beir
        from lbr.evaluation.baselines import DenseRetriever, load_retriever
        from lbr.evaluation.metrics import evaluate_run, per_query

        if self.done("evaluate", {"domain": domain, "setting": setting, "method": method, "seed": seed}):
            return False
        corpus, queries, qrels = load_beir(self.data_dir(domain), self.eval_split)
        started = time.perf_counter()
        if method in NO_LLM:
            retriever = load_retriever(method, show_progress_bar=self.show_progress)
        elif method == "base":
            from lbr.modeling import LBRModel

            retriever = DenseRetriever(
                LBRModel.build(self._model_config(), seed=seed).merge_for_inference(),
                name="base",
                batch_size=self.budget.encode_batch_size,
                show_progress_bar=self.show_progress,
            )
        else:
            # Each trains its run first if needed; a finished run returns at once.
            if method == "lbr_unsup":
                self._stage1(domain, setting, "ib", seed)
                model_dir = self.task_dir("stage1", domain, setting, seed, name="ib")
            else:
                self._stage2(domain, setting, method, seed)
                model_dir = self.task_dir("stage2", domain, setting, seed, method=method)
            retriever = load_retriever(
                str(model_dir), batch_size=self.budget.encode_batch_size, show_progress_bar=self.show_progress
            )
        run = retriever.retrieve(corpus, queries, top_k=100)
        record = {
            "domain": domain,
            "split": self.eval_split,
            "setting": record_setting(method, setting),
            "method": method,
            "seed": seed,
            "num_queries": len(qrels),
            "num_docs": len(corpus),
            "metrics": evaluate_run(run, qrels),
            # For paired comparisons between methods (paired_table).
            "per_query": {"nDCG@10": per_query(run, qrels, "ndcg", 10)},
            "seconds": round(time.perf_counter() - started, 1),
            "data_version": BUILDER_VERSION,  # collect() refuses results of other data
        }
        path = self.result_path(domain, setting, method, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(record, indent=2), encoding="utf-8")
        tmp.replace(path)
        return True

    # ------------------------------------------------------------------ results
    def evaluation_progress(self) -> tuple[int, int]:
        """(evaluations with a result file, evaluations in this grid)."""
        paths = [self.result_path(**args) for kind, args, _ in self.tasks() if kind == "evaluate"]
        return sum(path.exists() for path in paths), len(paths)

    def collect(self) -> list[dict[str, Any]]:
        records = []
        root = self.output / ("results" if self.eval_split == "test" else f"results-{self.eval_split}")
        for path in sorted(root.rglob("*.json")):
            record = json.loads(path.read_text(encoding="utf-8"))
            # Results from before the version was recorded carry none; they are taken as they are.
            version = record.get("data_version", BUILDER_VERSION)
            if version != BUILDER_VERSION:
                raise ConfigError(
                    f"{path}: measured on data of builder version {version}, and this lbr builds version "
                    f"{BUILDER_VERSION}; a table mixing the two would compare different test sets. "
                    "Use another --output"
                )
            if (
                record["domain"] in self.domains
                and record["method"] in self.methods
                and record["setting"] in (*self.settings, "any")
                and (record["method"] in UNTRAINED or record["seed"] in self.seeds)
            ):
                records.append(record)
        return records


def stage2_checkpointing(stage2: Stage2Config, load_tokenizer: Callable[[], Any]) -> bool:
    """Whether a stage-2 run keeps gradient checkpointing on: memory first (docs/PERFORMANCE.md,
    section 4). With the L_gen decoder pass (mu > 0): 3.7 GB against 8.8 GB on medical, at about
    the same step time over three steps. On long pairs: code 3.7 against 9.9 GB at the same step
    time; chemistry 4.4 against 10.5 GB, time cost unclear. Plain contrastive steps on short pairs
    (medical) run 1.35x faster without it, at 4.2 GB instead of 2.9 GB. The tokenizer is loaded
    only when mu is 0."""
    return stage2.gen_weight > 0 or has_long_pairs(stage2, load_tokenizer())


def has_long_pairs(stage2: Stage2Config, tokenizer: Any) -> bool:
    """Whether stage 2's examples average over LONG_PAIR_TOKENS tokens: the query, the positive
    and the hard negatives it uses, each cut at stage 2's maximum length. Tokens, not characters:
    chemistry's IUPAC names and SMILES are as long as medical's text in characters and 2.5x longer
    in tokens. The pairs are read with read_pairs, so bad input gets its usual error naming the
    file, line and field."""
    from lbr.data.pairs import read_pairs

    pairs = read_pairs(stage2.pairs)
    if not pairs:
        return False

    def tokens(texts: list[str], limit: int) -> int:
        if not texts:
            return 0
        encoded = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=limit)
        return sum(min(limit, len(ids)) for ids in encoded["input_ids"])

    queries = tokens([pair.query for pair in pairs], stage2.max_query_length)
    positives = tokens([pair.positive for pair in pairs], stage2.max_document_length)
    negatives = [negative for pair in pairs for negative in pair.negatives[: stage2.num_negatives]]
    # The collator fills a missing hard negative with another pair's positive.
    missing = len(pairs) * stage2.num_negatives - len(negatives)
    total = queries + positives + tokens(negatives, stage2.max_document_length) + missing * positives / len(pairs)
    return total / len(pairs) > LONG_PAIR_TOKENS


def record_setting(method: str, setting: str) -> str:
    """The setting a method's runs and results are filed under in a cell of `setting`: "any" for
    the methods that read no stage-1 corpus (SETTING_FREE), which run once for every setting."""
    return "any" if method in SETTING_FREE else setting


def run_finished(run_dir: Path) -> bool:
    """Whether a training run finished: its model config is written last."""
    return (run_dir / LBR_CONFIG_NAME).exists()


def needs_model(kind: str, args: dict[str, Any]) -> bool:
    """Whether a task loads the LLM: every training run and every evaluation but BM25's and MiniLM's."""
    return kind in ("stage1", "stage2") or (kind == "evaluate" and args["method"] not in NO_LLM)


def _run_name(args: dict[str, Any]) -> str:
    """The run or row a task's arguments name, whatever its setting and seed."""
    return str(args.get("name") or args.get("method") or "")


def _same_run(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["domain"] == b["domain"] and _run_name(a) == _run_name(b)


def _speed(ratios: dict[tuple[str, str], list[float]], kind: str, domain: str) -> float:
    """Measured / prior seconds for a kind of task on a domain: the median of its own, else of
    that kind on every domain, else of every task, else 1. A training task does not borrow an
    evaluation's ratio: model loading dominates those (the demo's first, untrained model took 1.8x
    its prior, while its training ran at 0.9-1.3x), so one would set every training task's pace."""
    borrows = (lambda k: True) if kind == "evaluate" else (lambda k: k != "evaluate")
    for match in (lambda k, d: (k, d) == (kind, domain), lambda k, d: k == kind, lambda k, d: borrows(k)):
        values = [ratio for (k, d), found in ratios.items() if match(k, d) for ratio in found]
        if values:
            return statistics.median(values)
    return 1.0


def _median(values: list[float]) -> float:
    """The median, 1 for none."""
    return statistics.median(values) if values else 1.0


def _run_seconds(log: Path) -> float | None:
    """Seconds a finished training run took, from its log: steps x the mean tokens a logged step
    / the throughput at the last step (measured since the run last started, so a resumed run
    counts at the speed of its last part). None if the log is unreadable or empty."""
    try:
        rows = _log_rows(log)
        tokens = statistics.mean(int(row["tokens"]) for row in rows)
        return int(rows[-1]["step"]) * tokens / float(rows[-1]["tokens_per_s"])
    except (OSError, ValueError, KeyError, TypeError, statistics.StatisticsError, ZeroDivisionError, OverflowError):
        return None


def _result_seconds(path: Path) -> float | None:
    """The seconds an evaluation took, from its result file; None for an unreadable or older file."""
    try:
        return float(json.loads(path.read_text(encoding="utf-8"))["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _log_rows(log: Path) -> list[dict[str, Any]]:
    """A training log's rows, one a logged step; none without a log."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def _logged(log: Path) -> tuple[int, int]:
    """(steps, tokens) in a training log; (0, 0) without one."""
    rows = _log_rows(log)
    return len(rows), sum(int(row.get("tokens", 0)) for row in rows)


def _stage1_tokens(log: Path) -> int:
    """The tokens a stage-1 run trained on: its encoder input plus its decoder targets.

    Logs written before the targets were counted (no `target_tokens`) count the input twice,
    which is right for a `reconstruct` run whose targets are not cut shorter than its segments;
    the run's settings (run_config.json beside the log) must say so, or the count is refused.
    """
    rows = _log_rows(log)
    if any("target_tokens" not in row for row in rows):
        config_path = (
            log.parent / "run_config.json" if log.name == "train_log.jsonl" else log.with_suffix(".run_config.json")
        )
        try:
            stage1 = json.loads(config_path.read_text(encoding="utf-8"))["stage1"]
        except (OSError, ValueError, KeyError) as err:
            raise ConfigError(
                f"{log} does not count its decoder targets and {config_path} is unreadable ({err})"
            ) from None
        if stage1["target"] != "reconstruct" or stage1["max_target_length"] < stage1["segment_length"]:
            raise ConfigError(
                f"{log} does not count its decoder targets, and its run (target {stage1['target']!r}) did not "
                "reconstruct whole segments: its tokens cannot be counted; train the stage-1 run again"
            )
    return sum(int(row.get("tokens", 0)) + int(row.get("target_tokens", row.get("tokens", 0))) for row in rows)


def task_label(args: dict[str, Any]) -> str:
    """A task's arguments as the progress lines and --plan show them: "medical open lbr 0"."""
    return " ".join(str(value) for value in args.values())


def _seconds_left(prior: float, measured: float | None, speed: float, point: tuple[int, int] | None) -> float:
    """A pending task's seconds: the same run's measured time, else its prior x the measured
    speed of its kind; for a run stopped part-way, only the part after its checkpoint."""
    whole = measured if measured is not None else prior * speed
    return whole if point is None else whole * (1 - point[0] / point[1])


def duration_text(seconds: float) -> str:
    """12m05s under an hour, 7h04m from there (a grid's time left runs to tens of hours)."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def run_on_clock(
    experiment: Experiment,
    tasks: list[tuple[str, dict[str, Any], float]],
    take: Callable[[str, dict[str, Any]], float | None],
) -> None:
    """Go through :meth:`Experiment.run` over `tasks` (what :meth:`Experiment.tasks` returns)
    with no work done and time on a fake clock, so that its progress lines show what the
    time-left message says. A task takes ``take(kind, args)`` seconds, or is skipped as already
    done when that is None. The experiment's own answers (done, resumes, measured_seconds) stand
    unless the caller replaced them; nothing is written to its output directory (its settings
    are still checked against the directory's), and the experiment is left as it was. The tests
    and benchmarks/time_left_replay.py check the estimate with it."""
    from unittest import mock

    clock = [0.0]

    def task(kind: str) -> Callable[..., bool]:
        def fake(**args: Any) -> bool:
            seconds = take(kind, args)
            if seconds is None:
                return False
            clock[0] += seconds
            return True

        return fake

    with contextlib.ExitStack() as patches:
        patches.enter_context(mock.patch.object(experiment, "tasks", lambda: tasks))
        patches.enter_context(mock.patch.object(experiment, "collect", lambda: []))
        check = experiment.check_output
        patches.enter_context(mock.patch.object(experiment, "check_output", lambda: check(record=False)))
        for kind in ("build", "stage1", "stage2", "evaluate"):
            patches.enter_context(mock.patch.object(experiment, f"_{kind}", task(kind)))
        patches.enter_context(mock.patch.object(experiment, "_prepare_model", lambda: None))
        patches.enter_context(mock.patch(f"{__name__}.time", types.SimpleNamespace(perf_counter=lambda: clock[0])))
        experiment.run()


def summarise(
    records: list[dict[str, Any]], metric: str = "nDCG@10"
) -> dict[tuple[str, str, str], tuple[float, float, int]]:
    """Mean, standard deviation and seed count per (domain, setting, method)."""
    groups: dict[tuple[str, str, str], list[float]] = {}
    for record in records:
        key = (record["domain"], record["setting"], record["method"])
        groups.setdefault(key, []).append(record["metrics"][metric])
    summary = {}
    for key, values in groups.items():
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
        summary[key] = (mean, std, len(values))
    return summary


def results_table(
    records: list[dict[str, Any]],
    domains: tuple[str, ...],
    methods: tuple[str, ...],
    settings: tuple[str, ...],
    metric: str = "nDCG@10",
    seeds: int = 0,
) -> str:
    """A markdown table: one row per method (and setting), one column per domain, plus the mean.

    A trained method's cell with fewer than ``seeds`` seeds (a grid still running) says how many it has.
    """
    summary = summarise(records, metric)
    header = ["method", *(["setting"] if len(settings) > 1 else []), *domains, "mean"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods:
        method_settings = ("any",) if method in SETTING_FREE else settings
        for setting in method_settings:
            cells, means = [], []
            for domain in domains:
                value = summary.get((domain, setting, method))
                if value is None:
                    cells.append("–")
                    continue
                mean, std, n = value
                means.append(mean)
                cell = f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if n > 1 else "")
                if method not in UNTRAINED and n < seeds:
                    cell += f" ({n} of {seeds} seeds)"
                cells.append(cell)
            overall = f"{100 * sum(means) / len(means):.1f}" if len(means) == len(domains) else "–"
            row = [METHOD_LABELS[method], *([setting] if len(settings) > 1 else []), *cells, overall]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


# The rows that carry the method, and the trained baselines each is compared with query by query.
LBR_ROWS = ("lbr", "lbr_norefine")
TRAINED_BASELINES = ("llm_cl", "llm_cl_matched", "clm_cl")


def paired_table(
    records: list[dict[str, Any]], domains: tuple[str, ...], settings: tuple[str, ...], metric: str = "nDCG@10"
) -> str:
    """The LBR rows against each trained baseline, query by query, as a markdown table.

    Over the seeds both rows have, each query's score is averaged per row, and the 95% interval
    is a paired bootstrap over the queries (lbr.evaluation.significance): the seeds of a query
    stay together, since one query's results under two seeds are not independent. Records
    without per-query scores (written before they were kept) are left out; '' if none remain.
    """
    from lbr.evaluation.significance import paired_bootstrap

    scores: dict[tuple[str, str, str], dict[int, dict[str, float]]] = {}
    for record in records:
        values = record.get("per_query", {}).get(metric)
        if values is not None:
            scores.setdefault((record["domain"], record["setting"], record["method"]), {})[record["seed"]] = values

    def seed_mean(by_seed: dict[int, dict[str, float]], seeds: list[int], queries: set[str]) -> dict[str, float]:
        return {query: sum(by_seed[seed][query] for seed in seeds) / len(seeds) for query in queries}

    lines = []
    for domain in domains:
        for setting in settings:
            for method in LBR_ROWS:
                ours = scores.get((domain, setting, method), {})
                for baseline in TRAINED_BASELINES:
                    theirs = scores.get((domain, record_setting(baseline, setting), baseline), {})
                    seeds = sorted(set(ours) & set(theirs))
                    queries = set.intersection(*(set(ours[s]) & set(theirs[s]) for s in seeds)) if seeds else set()
                    if not queries:
                        continue
                    diff = paired_bootstrap(seed_mean(ours, seeds, queries), seed_mean(theirs, seeds, queries))
                    ties = diff.n - diff.wins - diff.losses
                    lines.append(
                        f"| {domain} | {setting} | {METHOD_LABELS[method]} − {METHOD_LABELS[baseline]} | "
                        f"{len(seeds)} | {100 * diff.mean:+.1f} | [{100 * diff.low:+.1f}, {100 * diff.high:+.1f}] | "
                        f"{diff.wins} / {ties} / {diff.losses} |"
                    )
    if not lines:
        return ""
    header = [
        f"| domain | setting | difference | seeds | {metric} (points) | 95% interval | queries better / same / worse |",
        "|---|---|---|---|---|---|---|",
    ]
    return "\n".join(header + lines)


def claim_table(
    records: list[dict[str, Any]], domains: tuple[str, ...], settings: tuple[str, ...], metric: str = "nDCG@10"
) -> str:
    """The issue's target, cell by cell, as a markdown table: LBR ahead of LLM+CL, the
    compute-matched LLM+CL and CLM->CL, each by more than the seed spread (the larger standard
    deviation over seeds of the two rows). Behind any of them is a miss on any number of seeds;
    ahead of all on one seed is not yet a result. Then the row with the best mean over the
    domains, in each setting (the target wants LBR). '' without an LBR record."""
    summary = summarise(records, metric)
    lines = []
    for setting in settings:
        for domain in domains:
            ours = summary.get((domain, setting, "lbr"))
            if ours is None:
                continue
            cells, behind, within, one_seed, missing = [], [], [], [], []
            for baseline in TRAINED_BASELINES:
                theirs = summary.get((domain, record_setting(baseline, setting), baseline))
                label = METHOD_LABELS[baseline]
                if theirs is None:
                    cells.append("–")
                    missing.append(label)
                    continue
                margin = ours[0] - theirs[0]
                spread = max(ours[1], theirs[1]) if min(ours[2], theirs[2]) > 1 else None
                cells.append(f"{100 * margin:+.1f}" + ("" if spread is None else f" (spread {100 * spread:.1f})"))
                if margin <= 0:
                    behind.append(label)
                elif spread is None:
                    one_seed.append(label)
                elif margin <= spread:
                    within.append(label)
            if behind:
                verdict = f"no: behind {', '.join(behind)}"
            elif missing:
                verdict = f"not yet: no {', '.join(missing)}"
            elif one_seed:
                verdict = f"not yet: ahead of {', '.join(one_seed)} on one seed, no spread"
            elif within:
                verdict = f"no: ahead of {', '.join(within)} by no more than the seed spread"
            else:
                verdict = "yes"
            seeds = f"{ours[2]} seed" + ("s" if ours[2] > 1 else "")
            lines.append(
                f"| {domain} | {setting} | {100 * ours[0]:.1f} ({seeds}) | " + " | ".join(cells) + f" | {verdict} |"
            )
    if not lines:
        return ""
    best = []
    for setting in settings:
        means = {}
        for method in METHODS:
            cells = [summary.get((d, record_setting(method, setting), method)) for d in domains]
            if all(cells):
                means[method] = sum(cell[0] for cell in cells) / len(cells)
        if "lbr" in means:
            top = max(means, key=means.get)
            best.append(f"{setting}: {METHOD_LABELS[top]} ({100 * means[top]:.1f})")
        else:
            best.append(f"{setting}: not yet (LBR lacks a domain)")
    header = [
        "| domain | setting | LBR "
        + "".join(f"| LBR − {METHOD_LABELS[b]} " for b in TRAINED_BASELINES)
        + "| LBR ahead of all three by more than the seed spread? |",
        "|---|---|---|---|---|---|---|",
    ]
    best_line = "Best row on average over the domains (of the rows scored on all of them): " + "; ".join(best)
    return "\n".join(header + lines) + "\n\n" + best_line + "."


def plot_results(
    records: list[dict[str, Any]],
    domains: tuple[str, ...],
    methods: tuple[str, ...],
    path: Path,
    metric: str = "nDCG@10",
    split: str = "test",
) -> None:
    """A grouped bar chart of ``metric`` per domain and method (open setting, or 'any')."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarise(records, metric)
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(2.2 + 2.2 * len(domains), 4))
    for index, method in enumerate(methods):
        values, errors = [], []
        for domain in domains:
            value = (
                summary.get((domain, "any", method))
                or summary.get((domain, "open", method))
                or summary.get((domain, "closed", method))
            )
            values.append(100 * value[0] if value else 0.0)
            errors.append(100 * value[1] if value else 0.0)
        positions = [d + (index - (len(methods) - 1) / 2) * width for d in range(len(domains))]
        ax.bar(positions, values, width, yerr=errors, label=METHOD_LABELS[method])
    ax.set_xticks(range(len(domains)), domains)
    ax.set_ylabel(f"{metric} (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, ncol=2)
    ax.set_title(f"{metric} on held-out {split} queries")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(experiment: Experiment, records: list[dict[str, Any]], title: str, command: str) -> str:
    """Write report.md, results.json and ndcg.png into the output directory; return the table."""
    table = results_table(
        records, experiment.domains, experiment.methods, experiment.settings, seeds=len(experiment.seeds)
    )
    budget = experiment.budget.settings()
    pairs = experiment.stage2_pairs_name()
    if experiment.budget.max_pairs is not None:
        pairs = f"a sample of {experiment.budget.max_pairs} of pairs.train.jsonl ({pairs})"
    finished, total = experiment.evaluation_progress()
    progress = "" if finished == total else f" ({finished} of {total} evaluations finished)"
    text = (
        f"# {title}\n\n"
        f"Command: `{command}`\n\n"
        f"Model: {experiment.model}; k = {experiment.num_bottleneck_tokens}; lambda = {experiment.ib_weight}; "
        f"mu = {experiment.gen_weight} ({experiment.gen_target}); target = {experiment.target}; "
        f"decoder = {experiment.decoder}; projector = {experiment.projector}; "
        f"seeds = {list(experiment.seeds)}.\n\n"
        f"Budget: {json.dumps(budget)}\n\n"
        f"nDCG@10 (%) on the {experiment.eval_split} queries of each domain{progress}:\n\n{table}\n\n"
        "Stage 1 saw the knowledge records of the benchmark's documents (stage1.<setting>.jsonl); stage 2 saw "
        f"{pairs}; only evaluation read the qrels of the evaluated split.\n"
        "See each data/<domain>/DATASHEET.md.\n"
    )
    claim = claim_table(records, experiment.domains, experiment.settings)
    if claim:
        text += f"\nThe target (nDCG@10 points, means over each row's seeds):\n\n{claim}\n"
    paired = paired_table(records, experiment.domains, experiment.settings)
    if paired:
        text += (
            "\nQuery by query (each query's score averaged over the seeds both rows have; the interval covers "
            f"the sampling of queries, not of training runs, which the ± above shows):\n\n{paired}\n"
        )
    (experiment.output / "report.md").write_text(text, encoding="utf-8")
    (experiment.output / "results.json").write_text(json.dumps(records, indent=2), encoding="utf-8")
    chart = experiment.output / "ndcg.png"
    plot_results(records, experiment.domains, experiment.methods, chart, split=experiment.eval_split)
    return table
