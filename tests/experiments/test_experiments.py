from __future__ import annotations

import dataclasses
import json
import math

import pytest

from lbr.cli import main
from lbr.config import Stage2Config
from lbr.errors import ConfigError, InputError
from lbr.experiments import (
    BUDGETS,
    DOMAINS,
    ENCODE_COST,
    METHODS,
    PAIR_TOKENS,
    Experiment,
    claim_table,
    has_long_pairs,
    paired_table,
    results_table,
    stage2_checkpointing,
    summarise,
)

TINY = dataclasses.replace(BUDGETS["tiny"], stage1_steps=2, stage2_steps=2, max_docs=60, encode_batch_size=16)


@pytest.fixture
def tiny_budget(monkeypatch):
    """`--budget tiny` means TINY (2 steps a stage, 60 documents) for the test."""
    import lbr.commands.demo as demo

    monkeypatch.setitem(demo.BUDGETS, "tiny", TINY)


def _tiny_benchmark(model_dir, out, methods: str, *flags: str) -> list[str]:
    """`lbr benchmark` argv for one medical/open/seed-0 cell of the tiny model at the tiny budget,
    then `flags`."""
    return [
        "benchmark",
        "--model",
        str(model_dir),
        "--domains",
        "medical",
        "--settings",
        "open",
        "--methods",
        methods,
        "--seeds",
        "0",
        "--budget",
        "tiny",
        "--output",
        str(out),
        "--no-progress",
        "-k",
        "2",
        *flags,
    ]


def test_tasks_share_stage1_and_evaluate_untrained_methods_once(tmp_path):
    experiment = Experiment(
        output=tmp_path,
        domains=("medical",),
        settings=("open", "closed"),
        seeds=(0, 1),
        methods=("bm25", "base", "clm_cl", "lbr_norefine", "lbr_unsup", "lbr"),
    )
    tasks = experiment.tasks()
    stage1 = [args for kind, args, _ in tasks if kind == "stage1"]
    # One lambda>0 run shared by lbr, lbr_norefine and lbr_unsup, one lambda=0 run for clm_cl,
    # per setting and seed.
    assert len(stage1) == 2 * 2 * 2
    assert {args["name"] for args in stage1} == {"ib", "clm"}
    evaluations = [args["method"] for kind, args, _ in tasks if kind == "evaluate"]
    assert evaluations.count("bm25") == 1 and evaluations.count("base") == 1
    assert evaluations.count("lbr") == 4


def test_baselines_without_stage1_are_trained_once_for_both_settings(tmp_path):
    experiment = Experiment(
        output=tmp_path,
        domains=("code",),
        settings=("open", "closed"),
        seeds=(0,),
        methods=("llm_cl", "llm_cl_matched", "lbr"),
    )
    stage2 = [(args["method"], args["setting"]) for kind, args, _ in experiment.tasks() if kind == "stage2"]
    assert stage2.count(("llm_cl", "open")) == 1 and ("llm_cl", "closed") not in stage2
    assert ("lbr", "open") in stage2 and ("lbr", "closed") in stage2
    assert experiment.run_dir("code", "closed", "llm_cl", 0) == experiment.run_dir("code", "open", "llm_cl", 0)


def test_only_a_run_stopped_part_way_counts_as_resumed(tmp_path):
    # The time-left message learns speed from finished tasks; a resumed one did only part of its work.
    experiment = Experiment(output=tmp_path, domains=("medical",), methods=("llm_cl", "lbr"))
    stage1 = {"domain": "medical", "setting": "open", "name": "ib", "seed": 0}
    stage2 = {"domain": "medical", "setting": "open", "method": "llm_cl", "seed": 0}
    assert not experiment.resumes("stage1", stage1)  # not started
    run = experiment.run_dir("medical", "open", "stage1-ib", 0)
    (run / "checkpoints").mkdir(parents=True)
    assert experiment.resumes("stage1", stage1)
    (run / "lbr_config.json").write_text("{}")
    assert not experiment.resumes("stage1", stage1)  # finished: skipped, not resumed
    experiment.run_dir("medical", "open", "llm_cl", 0).mkdir(parents=True)
    assert experiment.resumes("stage2", stage2)
    assert experiment.resumes("stage2", {**stage2, "setting": "closed"})  # llm_cl: one run serves both settings
    assert not experiment.resumes("stage2", {**stage2, "method": "lbr"})
    assert not experiment.resumes("evaluate", stage2)
    # done: what running the task would skip. Untrained methods have one result for every cell.
    evaluate = {"domain": "medical", "setting": "closed", "method": "bm25", "seed": 1}
    assert not experiment.done("evaluate", evaluate) and not experiment.done("build", {"domain": "medical"})
    experiment.result_path("medical", "open", "bm25", 0).parent.mkdir(parents=True)
    experiment.result_path("medical", "open", "bm25", 0).write_text("{}")
    (experiment.data_dir("medical")).mkdir(parents=True)
    from lbr.data.builders import BUILDER_VERSION, VERSION_LINE

    sheet = experiment.data_dir("medical") / "DATASHEET.md"
    sheet.write_text("# Datasheet\n" + VERSION_LINE.format(BUILDER_VERSION) + "\n")
    assert experiment.done("evaluate", evaluate) and experiment.done("build", {"domain": "medical"})
    # Data built by another version of the builders is refused, not reused or silently mixed.
    sheet.write_text("# Datasheet, from before the version was written\n")
    refusal = f"built by data builder version 1, and this lbr builds version {BUILDER_VERSION}"
    with pytest.raises(ConfigError, match=refusal):
        experiment.done("build", {"domain": "medical"})
    sheet.write_text("# Datasheet\n" + VERSION_LINE.format(BUILDER_VERSION) + "\n")
    assert experiment.done("stage1", stage1) and not experiment.done("stage2", stage2)
    with pytest.raises(ValueError, match="evaluate"):
        experiment.task_dir("evaluate", **stage2)
    with pytest.raises(ValueError, match="method=None"):
        experiment.task_dir("stage2", "medical", "open", 0, name="ib")  # the stage-2 task names a method


def test_a_training_run_is_done_once_no_evaluation_left_needs_it(tmp_path):
    experiment = Experiment(
        output=tmp_path,
        domains=("medical",),
        settings=("open", "closed"),
        methods=("llm_cl", "llm_cl_matched", "lbr", "lbr_unsup"),
    )
    cell = {"domain": "medical", "seed": 0}

    def finish(setting, method):
        path = experiment.result_path(setting=setting, method=method, **cell)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")

    ib_open = {**cell, "setting": "open", "name": "ib"}
    ib_closed = {**cell, "setting": "closed", "name": "ib"}
    llm_cl = {**cell, "setting": "open", "method": "llm_cl"}
    finish("open", "lbr")
    finish("open", "lbr_unsup")
    # The first setting's λ > 0 run is still read by the compute-matched baseline (its tokens).
    assert not experiment.done("stage1", ib_open)
    finish("open", "llm_cl")
    assert not experiment.done("stage2", llm_cl)  # the matched run reads LLM+CL's steps too
    # ... until the matched run has finished training (only its evaluation is left) ...
    (experiment.run_dir("medical", "open", "llm_cl_matched", 0)).mkdir(parents=True)
    (experiment.run_dir("medical", "open", "llm_cl_matched", 0) / "lbr_config.json").write_text("{}")
    assert experiment.done("stage1", ib_open) and experiment.done("stage2", llm_cl)
    assert not experiment.done("stage1", ib_closed)  # read by the closed cell's methods only
    finish("closed", "lbr")
    assert not experiment.done("stage1", ib_closed)
    finish("closed", "lbr_unsup")
    assert experiment.done("stage1", ib_closed)
    with pytest.raises(ValueError, match="evaluate"):
        experiment.needed("evaluate", llm_cl)


def test_the_matched_run_needs_only_archived_logs_of_the_runs_it_counts(tmp_path):
    experiment = Experiment(output=tmp_path, domains=("medical",), methods=("llm_cl", "llm_cl_matched", "lbr"))
    cell = {"domain": "medical", "setting": "open", "seed": 0}
    for method in ("llm_cl", "lbr"):
        path = experiment.result_path(method=method, **cell)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    ib, llm_cl = {**cell, "name": "ib"}, {**cell, "method": "llm_cl"}
    assert not experiment.done("stage1", ib) and not experiment.done("stage2", llm_cl)
    # Their logs restored from an archive (benchmarks/archive.py --restore) stand in for the runs.
    logs = tmp_path / "train-logs"
    logs.mkdir()
    (logs / "medical-open-stage1-ib-seed0.jsonl").write_text('{"tokens": 500, "target_tokens": 700}\n')
    (logs / "medical-any-llm_cl-seed0.jsonl").write_text("".join('{"tokens": 100}\n' for _ in range(150)))
    assert experiment.done("stage1", ib) and experiment.done("stage2", llm_cl)
    assert experiment.finished_log("stage1", ib) == logs / "medical-open-stage1-ib-seed0.jsonl"
    # 150 + ceil((500 + 700) / 100) = 162
    assert experiment._stage2_steps("medical", "open", "llm_cl_matched", 0) == 162


def test_a_cell_runs_every_reader_of_the_lambda_run_together_and_the_matched_run_after_them(tmp_path):
    every = Experiment(output=tmp_path, domains=("medical",), settings=("open", "closed"), methods=METHODS)
    order = [(kind, args["setting"], args.get("method") or args.get("name")) for kind, args, _ in every.tasks()[1:]]
    assert order == [
        ("evaluate", "open", "bm25"),
        ("evaluate", "open", "minilm"),
        ("evaluate", "open", "base"),
        ("stage2", "open", "llm_cl"),
        ("evaluate", "open", "llm_cl"),
        ("stage1", "open", "ib"),
        ("stage2", "open", "lbr"),
        ("evaluate", "open", "lbr"),
        ("evaluate", "open", "lbr_unsup"),
        ("stage2", "open", "lbr_norefine"),
        ("evaluate", "open", "lbr_norefine"),
        ("stage2", "open", "llm_cl_matched"),
        ("evaluate", "open", "llm_cl_matched"),
        ("stage1", "open", "clm"),
        ("stage2", "open", "clm_cl"),
        ("evaluate", "open", "clm_cl"),
        ("stage1", "closed", "ib"),  # no untrained method, LLM+CL or matched run in the second setting
        ("stage2", "closed", "lbr"),
        ("evaluate", "closed", "lbr"),
        ("evaluate", "closed", "lbr_unsup"),
        ("stage2", "closed", "lbr_norefine"),
        ("evaluate", "closed", "lbr_norefine"),
        ("stage1", "closed", "clm"),
        ("stage2", "closed", "clm_cl"),
        ("evaluate", "closed", "clm_cl"),
    ]
    # The matched run alone: the runs whose logs it counts are listed before it, not evaluated.
    alone = Experiment(output=tmp_path, domains=("medical",), settings=("open", "closed"), methods=("llm_cl_matched",))
    order = [(kind, args["setting"], args.get("method") or args.get("name")) for kind, args, _ in alone.tasks()[1:]]
    assert order == [
        ("stage1", "open", "ib"),
        ("stage2", "open", "llm_cl"),
        ("stage2", "open", "llm_cl_matched"),
        ("evaluate", "open", "llm_cl_matched"),
    ]
    llm_cl = {"domain": "medical", "setting": "open", "seed": 0, "method": "llm_cl"}
    assert not alone.done("stage2", llm_cl)  # needed by the matched run, though not evaluated itself


def test_tasks_finish_whole_cells_first_setting_and_seed_first(tmp_path):
    experiment = Experiment(
        output=tmp_path,
        domains=("medical", "code"),
        settings=("open", "closed"),
        seeds=(0, 1),
        methods=("bm25", "llm_cl", "clm_cl", "lbr"),
    )
    tasks = experiment.tasks()
    assert [(kind, args) for kind, args, _ in tasks[:2]] == [
        ("build", {"domain": "medical"}),
        ("build", {"domain": "code"}),
    ]
    cells = []  # (setting, seed, domain) in the order training starts
    for _kind, args, _ in tasks[2:]:
        cell = (args["setting"], args["seed"], args["domain"])
        if not cells or cells[-1] != cell:
            assert cell not in cells, f"cell {cell} was interrupted by another"
            cells.append(cell)
    assert cells == [(s, seed, d) for s in ("open", "closed") for seed in (0, 1) for d in ("medical", "code")]
    # Each method is evaluated right after its training: the first cell, then the next one's start.
    first_cell = [(kind, args.get("method") or args.get("name")) for kind, args, _ in tasks[2:14]]
    assert first_cell == [
        ("evaluate", "bm25"),
        ("stage2", "llm_cl"),
        ("evaluate", "llm_cl"),
        ("stage1", "ib"),
        ("stage2", "lbr"),
        ("evaluate", "lbr"),
        ("stage1", "clm"),
        ("stage2", "clm_cl"),
        ("evaluate", "clm_cl"),
        ("evaluate", "bm25"),  # the next cell: code/open/seed 0
        ("stage2", "llm_cl"),
        ("evaluate", "llm_cl"),
    ]
    stage2 = [(args["method"], args["setting"]) for kind, args, _ in tasks if kind == "stage2"]
    assert ("llm_cl", "closed") not in stage2 and stage2.count(("llm_cl", "open")) == 4  # 2 domains x 2 seeds
    evaluations = [(args["method"], args["setting"], args["seed"]) for kind, args, _ in tasks if kind == "evaluate"]
    assert evaluations.count(("bm25", "open", 0)) == 2 and len([e for e in evaluations if e[0] == "bm25"]) == 2
    assert not [e for e in evaluations if e[0] == "llm_cl" and e[1] == "closed"]


def test_report_only_reports_finished_cells_and_marks_missing_seeds(tmp_path, monkeypatch, tiny_budget, capsys):
    out = tmp_path / "bench"
    argv = ["benchmark", "--domains", "medical", "--settings", "open", "--budget", "tiny", "--output", str(out)]
    assert main([*argv, "--methods", "bm25", "--report-only"]) == 2
    assert f"{out}: no benchmark to report on (experiment.json is missing)" in capsys.readouterr().err
    assert not out.exists()  # nothing created
    assert main([*argv, "--methods", "bm25", "--seeds", "0", "--no-progress"]) == 0
    report = (out / "report.md").read_text()
    # Nothing finished on the dev split: refused, and the report of the test split is kept.
    assert main([*argv, "--methods", "bm25", "--eval-split", "dev", "--report-only"]) == 2
    assert "no finished evaluation on the dev split" in capsys.readouterr().err
    assert (out / "report.md").read_text() == report
    # The same grid with LLM+CL over two seeds: nothing is trained, and the report says what is missing.
    report_argv = [*argv, "--methods", "bm25,llm_cl", "--seeds", "0,1", "--report"]  # an abbreviation
    monkeypatch.setattr("sys.argv", ["lbr", *report_argv])
    assert main(report_argv) == 0
    assert not (out / "runs").exists()
    report = (out / "report.md").read_text()
    assert "(1 of 3 evaluations finished)" in report
    assert "| BM25 |" in report and "| LLM+CL | – | – |" in report
    assert "Command: `lbr benchmark --domains medical" in report and "--report" not in report
    # A cell of a trained method with fewer seeds than asked says so.
    records = [
        {"domain": "medical", "setting": "open", "method": "lbr", "seed": 0, "metrics": {"nDCG@10": 0.5}},
        {"domain": "medical", "setting": "any", "method": "bm25", "seed": 0, "metrics": {"nDCG@10": 0.25}},
    ]
    table = results_table(records, ("medical",), ("bm25", "lbr"), ("open",), seeds=2)
    assert "| LBR | 50.0 (1 of 2 seeds) | 50.0 |" in table and "| BM25 | 25.0 | 25.0 |" in table


def test_unknown_method_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown method"):
        Experiment(output=tmp_path, methods=("lbr", "magic"))


def test_summary_mean_and_spread():
    records = [{"domain": "medical", "setting": "open", "method": "lbr", "metrics": {"nDCG@10": v}} for v in (0.5, 0.7)]
    mean, std, n = summarise(records)[("medical", "open", "lbr")]
    assert mean == pytest.approx(0.6) and std == pytest.approx(0.1414213, abs=1e-6) and n == 2
    table = results_table(records, ("medical",), ("lbr",), ("open",))
    assert "| LBR | 60.0 ± 14.1 | 60.0 |" in table


def test_claim_table_says_where_lbr_meets_the_target_and_why_not():
    def rows(domain, setting, method, *scores):
        return [
            {"domain": domain, "setting": setting, "method": method, "seed": seed, "metrics": {"nDCG@10": score}}
            for seed, score in enumerate(scores)
        ]

    records = [
        # medical: LLM+CL and the matched run serve both settings.
        *rows("medical", "any", "llm_cl", 0.70, 0.72),
        *rows("medical", "any", "llm_cl_matched", 0.79, 0.81),
        # open: 1 point ahead of the matched run, inside the seed spread (sd of 0.80/0.82: 1.4 points).
        *rows("medical", "open", "lbr", 0.80, 0.82),
        *rows("medical", "open", "clm_cl", 0.60, 0.60),
        # closed: ahead of all three by more than the spread.
        *rows("medical", "closed", "lbr", 0.90, 0.92),
        *rows("medical", "closed", "clm_cl", 0.50, 0.52),
        # chemistry: ahead of all three, on one seed; closed has no CLM->CL yet.
        *rows("chemistry", "any", "llm_cl", 0.36),
        *rows("chemistry", "any", "llm_cl_matched", 0.35),
        *rows("chemistry", "open", "lbr", 0.40),
        *rows("chemistry", "open", "clm_cl", 0.30),
        *rows("chemistry", "closed", "lbr", 0.40),
        # code: behind LLM+CL, which decides it whatever is missing.
        *rows("code", "any", "llm_cl", 0.60),
        *rows("code", "open", "lbr", 0.50),
    ]
    table = claim_table(records, ("medical", "chemistry", "code", "law"), ("open", "closed"))
    lines = {tuple(line.split(" | ")[:2]): line for line in table.splitlines()[2:] if line.startswith("| ")}
    assert lines[("| medical", "open")].endswith(
        "| 81.0 (2 seeds) | +10.0 (spread 1.4) | +1.0 (spread 1.4) | +21.0 (spread 1.4) "
        "| no: ahead of LLM+CL compute-matched by no more than the seed spread |"
    )
    assert lines[("| medical", "closed")].endswith(
        "| 91.0 (2 seeds) | +20.0 (spread 1.4) | +11.0 (spread 1.4) | +40.0 (spread 1.4) | yes |"
    )
    assert lines[("| chemistry", "open")].endswith(
        "| 40.0 (1 seed) | +4.0 | +5.0 | +10.0 "
        "| not yet: ahead of LLM+CL, LLM+CL compute-matched, CLM->CL on one seed, no spread |"
    )
    assert lines[("| chemistry", "closed")].endswith("| +4.0 | +5.0 | – | not yet: no CLM->CL |")
    assert lines[("| code", "open")].endswith("| 50.0 (1 seed) | -10.0 | – | – | no: behind LLM+CL |")
    assert len(lines) == 5  # law has no LBR record: no line
    # LBR has no law score, so no mean. Over medical and chemistry, LBR leads open (60.5 against
    # the matched run's 57.5) and closed (65.5).
    assert table.endswith("all of them): open: not yet (LBR lacks a domain); closed: not yet (LBR lacks a domain).")
    two = claim_table(records, ("medical", "chemistry"), ("open", "closed"))
    assert two.endswith("(of the rows scored on all of them): open: LBR (60.5); closed: LBR (65.5).")
    less = [r for r in records if not (r["method"] == "lbr" and r["domain"] == "chemistry")]
    less += [
        {**r, "method": "lbr", "metrics": {"nDCG@10": 0.20}}
        for r in records
        if r["method"] == "lbr" and r["domain"] == "chemistry"
    ]
    assert claim_table(less, ("medical", "chemistry"), ("open",)).endswith("open: LLM+CL compute-matched (57.5).")
    assert claim_table(records[:4], ("medical",), ("open",)) == ""


def test_paired_table_pairs_queries_by_seed_and_skips_records_without_them():
    def record(method, seed, values, setting="open"):
        per_query = {"nDCG@10": dict(zip(("q1", "q2"), values, strict=True))} if values else {}
        return {"domain": "medical", "setting": setting, "method": method, "seed": seed, "per_query": per_query}

    records = [
        record("lbr_norefine", 0, (1.0, 0.5)),
        record("lbr_norefine", 1, (1.0, 0.0)),
        record("clm_cl", 0, (0.5, 0.5)),
        record("clm_cl", 1, (1.0, 0.5)),
        record("llm_cl", 0, (0.0, 0.0), setting="any"),  # setting-free: compared in every setting
        record("lbr", 0, None),  # written before per-query scores were kept
    ]
    table = paired_table(records, ("medical",), ("open",))
    # Seed means per query: ours q1 1.0, q2 0.25; CLM->CL q1 0.75, q2 0.5: differences +0.25, -0.25.
    assert "| medical | open | LBR w/o refinement − CLM->CL | 2 | +0.0 | [-25.0, +25.0] | 1 / 0 / 1 |" in table
    # Against LLM+CL only seed 0 is shared: differences +1.0 and +0.5.
    assert "| medical | open | LBR w/o refinement − LLM+CL | 1 | +75.0 | [+50.0, +100.0] | 2 / 0 / 0 |" in table
    assert "| LBR − " not in table
    assert paired_table(records[-1:], ("medical",), ("open",)) == ""


def test_experiment_end_to_end_on_the_tiny_model_and_resume(tiny_model_dir, tmp_path, monkeypatch, tiny_budget, capsys):
    out = tmp_path / "bench"
    argv = _tiny_benchmark(tiny_model_dir, out, "bm25,base,llm_cl,llm_cl_matched,clm_cl,lbr_unsup,lbr")
    assert main(argv) == 0
    records = json.loads((out / "results.json").read_text())
    assert {r["method"] for r in records} == {"bm25", "base", "llm_cl", "llm_cl_matched", "clm_cl", "lbr_unsup", "lbr"}
    for record in records:
        assert 0.0 <= record["metrics"]["nDCG@10"] <= 1.0 and record["num_queries"] > 0
        assert record["data_version"] == 2  # the builder version of the data it was measured on
    assert (out / "ndcg.png").stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "| LBR |" in report and "| BM25 |" in report
    # One seed: the target's line can say "no" or "not yet", never "yes".
    target = next(line for line in report.splitlines() if line.startswith("| medical | open | "))
    assert target.endswith(" |") and "| yes |" not in target and ("| no: " in target or "| not yet: " in target)
    # Per-query scores are kept, and the report compares LBR with each trained baseline on them.
    lbr_record = next(r for r in records if r["method"] == "lbr")
    per_query = lbr_record["per_query"]["nDCG@10"]
    assert len(per_query) == lbr_record["num_queries"]
    assert sum(per_query.values()) / len(per_query) == pytest.approx(lbr_record["metrics"]["nDCG@10"])

    # Stage 2 checkpoints only where it saves memory: LBR's decoder pass, not medical's short pairs.
    def checkpointing(run):
        train = json.loads((out / "runs/medical" / run / "run_config.json").read_text())["train"]
        return train["gradient_checkpointing"]

    assert checkpointing("open/lbr-seed0") and not checkpointing("any/llm_cl-seed0")
    for baseline in ("LLM+CL", "LLM+CL compute-matched", "CLM->CL"):
        assert f"| medical | open | LBR − {baseline} | 1 |" in report
    # The stage-1 corpus holds only knowledge records of the benchmark's documents.
    corpus_ids = {json.loads(line)["_id"] for line in (out / "data/medical/corpus.jsonl").read_text().splitlines()}
    stage1_ids = {json.loads(line)["id"] for line in (out / "data/medical/stage1.open.jsonl").read_text().splitlines()}
    assert stage1_ids and stage1_ids <= corpus_ids
    # lbr and lbr_unsup share one stage-1 run; the compute-matched baseline trained longer than llm_cl.
    runs = out / "runs/medical/open"
    assert sorted(p.name for p in runs.iterdir()) == [
        "clm_cl-seed0",
        "lbr-seed0",
        "stage1-clm-seed0",
        "stage1-ib-seed0",
    ]
    # Baselines that read no stage-1 corpus are trained once for every knowledge setting.
    shared = out / "runs/medical/any"
    assert sorted(p.name for p in shared.iterdir()) == ["llm_cl-seed0", "llm_cl_matched-seed0"]
    steps = {
        name: len((shared / f"{name}-seed0/train_log.jsonl").read_text().splitlines())
        for name in ("llm_cl", "llm_cl_matched")
    }
    assert steps["llm_cl_matched"] > steps["llm_cl"]
    lbr_config = json.loads((runs / "lbr-seed0/lbr_config.json").read_text())
    assert [s["stage"] for s in lbr_config["stages"]] == ["stage1", "stage2"]
    # The benchmark opens the bottleneck channel unless told otherwise.
    assert lbr_config["model"]["projector"] == "calibrated"
    assert lbr_config["stages"][0]["ib_weight"] == 1.0 and lbr_config["stages"][1]["gen_weight"] == 0.1
    clm_config = json.loads((runs / "clm_cl-seed0/lbr_config.json").read_text())
    assert clm_config["stages"][0]["ib_weight"] == 0.0 and clm_config["stages"][1]["gen_weight"] == 0.0

    # Rerunning finds every cell done and trains nothing.
    def stamps():
        return {
            p: p.stat().st_mtime_ns
            for p in [*(out / "results").rglob("*.json"), *(out / "runs").rglob("*.safetensors")]
        }

    before = stamps()
    assert main(argv) == 0
    assert stamps() == before

    # With the run directories deleted (they hold the weights), the result files alone keep
    # every cell done: nothing is trained again and the report is the same.
    import shutil

    import lbr.training

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(lbr.training, "learn", no_training)
    monkeypatch.setattr(lbr.training, "represent", no_training)
    shutil.rmtree(out / "runs")
    results = {p: p.read_bytes() for p in (out / "results").rglob("*.json")}
    assert main(argv) == 0
    assert {p: p.read_bytes() for p in (out / "results").rglob("*.json")} == results
    assert not (out / "runs").exists()
    assert (out / "report.md").read_text() == report


def test_dev_split_evaluation_is_kept_apart_from_test(tmp_path):
    experiment = Experiment(
        output=tmp_path, domains=("medical",), methods=("bm25",), eval_split="dev", budget=TINY, show_progress=False
    )
    records = experiment.run()
    assert [r["split"] for r in records] == ["dev"]
    assert (tmp_path / "results-dev/medical/bm25.json").exists()
    assert not (tmp_path / "results").exists()
    dev_queries = records[0]["num_queries"]
    test = Experiment(output=tmp_path, domains=("medical",), methods=("bm25",), budget=TINY, show_progress=False)
    assert test.run()[0]["split"] == "test" and dev_queries > 0
    with pytest.raises(ConfigError, match="eval_split"):
        Experiment(output=tmp_path, eval_split="train")


def test_demo_command_writes_the_report(tiny_model_dir, tmp_path, tiny_budget, capsys):
    out = tmp_path / "demo"
    argv = [
        "demo",
        "--model",
        str(tiny_model_dir),
        "--domains",
        "code",
        "--budget",
        "tiny",
        "--output",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for label in ("BM25", "MiniLM-L6 (off the shelf)", "base (untrained)", "LLM+CL", "| LBR |"):
        assert label in printed
    records = json.loads((out / "results.json").read_text())
    assert sorted(r["method"] for r in records) == ["base", "bm25", "lbr", "llm_cl", "minilm"]
    assert (out / "ndcg.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Code pairs are long: stage 2 keeps gradient checkpointing (medical's short pairs turn it off).
    train = json.loads((out / "runs/code/open/lbr-seed0/run_config.json").read_text())["train"]
    assert train["gradient_checkpointing"] is True


def test_output_made_with_other_settings_is_refused_and_same_settings_resume(tmp_path):
    def bm25_only(**changes):
        changes.setdefault("budget", TINY)
        return Experiment(output=tmp_path, domains=("medical",), methods=("bm25",), show_progress=False, **changes)

    bm25_only(target="continue").run()
    saved = json.loads((tmp_path / "experiment.json").read_text())
    assert saved["target"] == "continue" and saved["budget"]["stage1_steps"] == TINY.stage1_steps
    # An unset stage-2 learning rate is not recorded: directories made before the option match.
    assert "stage2_learning_rate" not in saved["budget"]
    assert bm25_only(target="continue").run()  # same settings: resumes
    with pytest.raises(ConfigError, match=r"target: this directory has 'continue', asked 'reconstruct'"):
        bm25_only().run()
    with pytest.raises(ConfigError, match="gen_target"):
        bm25_only(target="continue", gen_target="query").run()
    with pytest.raises(ConfigError, match="budget"):
        bm25_only(target="continue", budget=dataclasses.replace(TINY, stage2_learning_rate=1e-3)).run()
    with pytest.raises(ConfigError, match=r"knowledge_form: this directory has 'record', asked 'document-next'"):
        bm25_only(target="continue", knowledge_form="document-next").run()
    with pytest.raises(ConfigError, match="knowledge_form must be one of"):
        bm25_only(knowledge_form="records")
    # A directory made before knowledge_form existed holds the record form.
    del saved["knowledge_form"]
    (tmp_path / "experiment.json").write_text(json.dumps(saved))
    assert bm25_only(target="continue").run()
    (tmp_path / "experiment.json").write_text("{not json")
    with pytest.raises(ConfigError, match="experiment.json: unreadable"):
        bm25_only(target="continue").run()


def test_document_next_form_reads_each_document_then_its_knowledge_record(tiny_model_dir, tmp_path, tiny_budget):
    from lbr.data.beir import format_document

    out = tmp_path / "bench"
    argv = _tiny_benchmark(
        tiny_model_dir, out, "lbr_unsup", "--knowledge-form", "document-next", "--target", "continue"
    )
    assert main(argv) == 0
    data = out / "data/medical"
    corpus = {r["_id"]: r for r in map(json.loads, (data / "corpus.jsonl").read_text().splitlines())}
    knowledge = {r["id"]: r["text"] for r in map(json.loads, (data / "knowledge.open.jsonl").read_text().splitlines())}
    records = [json.loads(line) for line in (data / "stage1.open.document-next.jsonl").read_text().splitlines()]
    assert len(records) == len(corpus)  # every benchmark document has its knowledge record
    for record in records:
        document = corpus[record["id"]]
        assert record["text"] == format_document(document["title"], document["text"])
        assert record["next"] == knowledge[record["id"]]
    assert not (data / "stage1.open.jsonl").exists()  # the record form was not asked for
    run_config = json.loads((out / "runs/medical/open/stage1-ib-seed0/run_config.json").read_text())
    assert run_config["stage1"]["corpus"].endswith("stage1.open.document-next.jsonl")
    assert run_config["stage1"]["max_target_length"] == 2 * TINY.segment_length


def test_benchmark_step_overrides_and_gen_target_reach_the_runs(tiny_model_dir, tmp_path, tiny_budget):
    out = tmp_path / "bench"
    argv = _tiny_benchmark(
        tiny_model_dir,
        out,
        "lbr",
        "--stage1-steps",
        "3",
        "--stage2-steps",
        "1",
        "--gen-target",
        "query",
        "--decoder",
        "frozen",
        "--projector",
        "linear",
        "--eval-split",
        "dev",
        "--learning-rate",
        "3e-4",
        "--stage2-lr",
        "1e-3",
    )
    assert main(argv) == 0
    runs = out / "runs/medical/open"
    train1 = json.loads((runs / "stage1-ib-seed0/run_config.json").read_text())["train"]
    train2 = json.loads((runs / "lbr-seed0/run_config.json").read_text())["train"]
    assert (train1["learning_rate"], train2["learning_rate"]) == (3e-4, 1e-3)
    # Checkpointing is on in both: stage 1 always, and LBR's stage 2 for its L_gen decoder pass.
    assert (train1["gradient_checkpointing"], train2["gradient_checkpointing"]) == (True, True)
    assert len((runs / "stage1-ib-seed0/train_log.jsonl").read_text().splitlines()) == 3
    assert len((runs / "lbr-seed0/train_log.jsonl").read_text().splitlines()) == 1
    stage2 = json.loads((runs / "lbr-seed0/lbr_config.json").read_text())["stages"][1]
    assert stage2["gen_target"] == "query"
    model_config = json.loads((runs / "lbr-seed0/lbr_config.json").read_text())["model"]
    assert (model_config["decoder"], model_config["projector"]) == ("frozen", "linear")
    budget = json.loads((out / "experiment.json").read_text())["budget"]
    assert (budget["stage1_steps"], budget["learning_rate"], budget["stage2_learning_rate"]) == (3, 3e-4, 1e-3)
    assert (out / "results-dev/medical/open/lbr-seed0.json").exists()


def test_benchmark_stage1_epochs_runs_whole_passes_over_the_corpus(tiny_model_dir, tmp_path, tiny_budget):
    out = tmp_path / "bench"
    argv = _tiny_benchmark(tiny_model_dir, out, "lbr_unsup", "--stage1-epochs", "1")
    assert main(argv) == 0
    run = out / "runs/medical/open/stage1-ib-seed0"
    segments = json.loads((run / "lbr_config.json").read_text())["stages"][0]["segments"]
    steps = len((run / "train_log.jsonl").read_text().splitlines())
    assert segments > 2 * TINY.stage1_batch_size  # more than the budget's 2 steps would read
    assert steps == -(-segments // TINY.stage1_batch_size)
    budget = json.loads((out / "experiment.json").read_text())["budget"]
    assert budget["stage1_epochs"] == 1.0 and "stage1_steps" not in budget


def test_benchmark_stage2_epochs_sets_the_steps_of_every_row_and_the_matched_run(tiny_model_dir, tmp_path, tiny_budget):
    out = tmp_path / "bench"
    argv = _tiny_benchmark(tiny_model_dir, out, "llm_cl,llm_cl_matched", "--stage2-epochs", "1.5")
    assert main(argv) == 0

    def log(run):
        lines = (out / "runs/medical" / run / "train_log.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    pairs = len((out / "data/medical/pairs.train.jsonl").read_text().splitlines())
    base = -(-3 * pairs // (2 * TINY.stage2_batch_size))  # ceil(1.5 epochs of pairs / batch)
    assert pairs > 2 * TINY.stage2_batch_size  # more than the budget's 2 steps would read
    llm_cl = log("any/llm_cl-seed0")
    assert len(llm_cl) == base
    # The matched run adds the LBR stage-1 tokens (read twice) at LLM+CL's tokens per step.
    stage1_tokens = 2 * sum(row["tokens"] for row in log("open/stage1-ib-seed0"))
    per_step = sum(row["tokens"] for row in llm_cl) / base
    assert len(log("any/llm_cl_matched-seed0")) == base + math.ceil(stage1_tokens / per_step)
    budget = json.loads((out / "experiment.json").read_text())["budget"]
    assert budget["stage2_epochs"] == 1.5 and "stage2_steps" not in budget


def test_benchmark_stage2_pairs_trains_every_row_on_one_seeded_sample(tiny_model_dir, tmp_path, tiny_budget):
    out = tmp_path / "bench"
    argv = _tiny_benchmark(tiny_model_dir, out, "llm_cl,lbr", "--stage2-pairs", "5", "--stage2-epochs", "4")
    assert main(argv) == 0
    data = out / "data/medical"
    every = data.joinpath("pairs.train.jsonl").read_text().splitlines()
    sample = data.joinpath("pairs.train.5.seed0.jsonl").read_text().splitlines()
    assert len(sample) == 5 and len(set(sample)) == 5 and set(sample) <= set(every)
    assert [every.index(line) for line in sample] == sorted(every.index(line) for line in sample)  # file order
    for run in ("any/llm_cl-seed0", "open/lbr-seed0"):
        stage2 = json.loads((out / "runs/medical" / run / "lbr_config.json").read_text())["stages"][-1]
        assert stage2["pairs"].endswith("pairs.train.5.seed0.jsonl")
        # Four epochs of 5 pairs at 8 a step: ceil(20 / 8) = 3 steps (the budget alone says 2).
        assert len((out / "runs/medical" / run / "train_log.jsonl").read_text().splitlines()) == 3
    assert json.loads((out / "experiment.json").read_text())["budget"]["max_pairs"] == 5
    assert "a sample of 5 of pairs.train.jsonl" in (out / "report.md").read_text()
    # The same seed draws the same sample again; another seed another sample, in its own file.
    data.joinpath("pairs.train.5.seed0.jsonl").unlink()
    experiment = Experiment(output=out, domains=("medical",), budget=dataclasses.replace(TINY, max_pairs=5))
    assert experiment.stage2_pairs("medical").read_text().splitlines() == sample
    other = dataclasses.replace(experiment, data_seed=1).stage2_pairs("medical")
    assert other.name == "pairs.train.5.seed1.jsonl" and other.read_text().splitlines() != sample
    # A sample file that these pairs and this seed would not draw is refused, not used.
    other.rename(data / "pairs.train.5.seed0.jsonl")
    with pytest.raises(ConfigError, match=r"pairs.train.5.seed0.jsonl is not the sample of 5 pairs"):
        experiment.stage2_pairs("medical")
    # A sample as large as the pairs themselves is refused, naming the file.
    too_many = Experiment(output=out, domains=("medical",), budget=dataclasses.replace(TINY, max_pairs=len(every)))
    with pytest.raises(ConfigError, match=r"not below the \d+ training pairs in .*pairs.train.jsonl"):
        too_many.stage2_pairs("medical")
    with pytest.raises(ConfigError, match="not below"):  # at the build, before any training
        too_many._build("medical")
    with pytest.raises(ConfigError, match="max_pairs \\(--stage2-pairs\\) must be >= 1, got 0"):
        dataclasses.replace(TINY, max_pairs=0)


def _fake_log(run_dir, tokens_per_step, target="reconstruct"):
    """A finished run with a training log written before stage 1 counted its decoder targets."""
    run_dir.mkdir(parents=True)
    lines = [json.dumps({"step": i + 1, "loss": 1.0, "tokens": t}) for i, t in enumerate(tokens_per_step)]
    (run_dir / "train_log.jsonl").write_text("\n".join(lines) + "\n")
    stage1 = {"target": target, "segment_length": 64, "max_target_length": 64}
    (run_dir / "run_config.json").write_text(json.dumps({"stage1": stage1}))
    (run_dir / "lbr_config.json").write_text("{}")


def test_matched_steps_by_hand_and_refused_for_an_llm_cl_run_of_another_length(tmp_path):
    budget = dataclasses.replace(TINY, stage2_steps=4)
    experiment = Experiment(output=tmp_path, domains=("medical",), methods=("llm_cl", "llm_cl_matched"), budget=budget)
    _fake_log(experiment.run_dir("medical", "open", "stage1-ib", 0), [500, 500, 301])
    _fake_log(experiment.run_dir("medical", "open", "llm_cl", 0), [100, 120, 80, 100])
    # 4 + ceil(2 * 1301 / (400 / 4)) = 4 + ceil(26.02) = 31
    assert experiment._stage2_steps("medical", "open", "llm_cl_matched", 0) == 31
    assert experiment._stage2_steps("medical", "open", "llm_cl", 0) == 4
    longer = dataclasses.replace(experiment, budget=dataclasses.replace(budget, stage2_steps=3))
    with pytest.raises(ConfigError, match=r"llm_cl-seed0 ran 4 stage-2 steps, not this budget's 3"):
        longer._stage2_steps("medical", "open", "llm_cl_matched", 0)
    other_seed = Experiment(output=tmp_path, domains=("medical",), seeds=(1,), budget=budget)
    with pytest.raises(ConfigError, match=r"needs the finished runs .*stage1-ib-seed1 and .*llm_cl-seed1"):
        other_seed._stage2_steps("medical", "open", "llm_cl_matched", 1)
    # A log that counts the decoder's targets (a `continue` run whose targets are longer than
    # its input): input 1301 + targets 2000, not twice the input.
    log = experiment.run_dir("medical", "open", "stage1-ib", 0) / "train_log.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    targets = [900, 900, 200]
    rows = [{**row, "target_tokens": n} for row, n in zip(rows, targets, strict=True)]
    log.write_text("".join(json.dumps(row) + "\n" for row in rows))
    # 4 + ceil(3301 / 100) = 4 + 34 = 38
    assert experiment._stage2_steps("medical", "open", "llm_cl_matched", 0) == 38
    # An old log (no target_tokens) of a run that did not reconstruct its input: refused.
    continued = Experiment(output=tmp_path / "c", domains=("medical",), methods=("llm_cl_matched",), budget=budget)
    _fake_log(continued.run_dir("medical", "open", "stage1-ib", 0), [500], target="continue")
    _fake_log(continued.run_dir("medical", "open", "llm_cl", 0), [100, 120, 80, 100])
    with pytest.raises(ConfigError, match=r"does not count its decoder targets.*target 'continue'"):
        continued._stage2_steps("medical", "open", "llm_cl_matched", 0)
    # ... and one whose settings cannot be read says which file.
    (continued.run_dir("medical", "open", "stage1-ib", 0) / "run_config.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"does not count its decoder targets and .*run_config.json is unreadable"):
        continued._stage2_steps("medical", "open", "llm_cl_matched", 0)


def test_time_estimate_of_an_epoch_budget_reads_the_pairs_count_and_writes_nothing(tmp_path):
    budget = dataclasses.replace(TINY, stage2_epochs=1.0, stage2_batch_size=10, max_docs=100)
    experiment = Experiment(output=tmp_path, domains=("medical",), methods=("llm_cl",), budget=budget)
    assert experiment.stage2_base_steps("medical", prior=True) == 12  # no data yet: 1.2 pairs a document
    pairs = experiment.data_dir("medical") / "pairs.train.jsonl"
    pairs.parent.mkdir(parents=True)
    pairs.write_text("".join(json.dumps({"query": f"q{i}", "positive": "p"}) + "\n" for i in range(35)))
    assert experiment.stage2_base_steps("medical", prior=True) == 4  # ceil(35 / 10)
    sampled = dataclasses.replace(experiment, budget=dataclasses.replace(budget, max_pairs=21))
    assert sampled.stage2_base_steps("medical", prior=True) == 3  # ceil(21 / 10)
    sampled.tasks()
    assert sorted(p.name for p in pairs.parent.iterdir()) == ["pairs.train.jsonl"]  # the estimate wrote no sample


def test_stage2_keeps_gradient_checkpointing_only_for_long_pairs_or_the_decoder_pass(tmp_path):
    def words(texts, add_special_tokens, truncation, max_length):  # a tokenizer with one token a word
        assert add_special_tokens is False and truncation is True
        return {"input_ids": [text.split()[:max_length] for text in texts]}

    def no_tokenizer():
        raise AssertionError("the tokenizer is not needed when mu > 0")

    def text(n, word="w"):
        return " ".join([word] * n)

    pairs = tmp_path / "pairs.train.jsonl"
    stage2 = Stage2Config(pairs=str(pairs), gen_weight=0.0, max_query_length=64, max_document_length=128)
    # 100 tokens with the one hard negative stage 2 uses; the unused second one does not count.
    short = {"query": text(30), "positive": text(40), "negatives": [text(30), text(5000)]}
    pairs.write_text(json.dumps(short) + "\n")
    assert not has_long_pairs(stage2, words)  # 100 is not over 100
    assert not stage2_checkpointing(stage2, lambda: words)
    assert stage2_checkpointing(dataclasses.replace(stage2, gen_weight=0.1), no_tokenizer)  # mu > 0: the decoder pass
    # Each text counts up to its maximum length: 64 + 10 + 10 = 84, not the 110 it has.
    cut = {"query": text(90), "positive": text(10), "negatives": [text(10)]}
    pairs.write_text(json.dumps(cut) + "\n")
    assert not has_long_pairs(stage2, words)
    # Few tokens of many characters (as medical's text against chemistry's SMILES): not long.
    wordy = {"query": text(30, "x" * 40), "positive": text(40, "y" * 40), "negatives": [text(20, "z" * 40)]}
    pairs.write_text(json.dumps(wordy) + "\n")
    assert not has_long_pairs(stage2, words)
    long = {"query": text(80), "positive": text(200), "negatives": [text(30)]}  # 64 + 128 + 30 = 222
    pairs.write_text(json.dumps(short) + "\n" + json.dumps(long) + "\n")  # mean 161
    assert has_long_pairs(stage2, words) and stage2_checkpointing(stage2, lambda: words)
    # A pair without a hard negative gets another pair's positive in the batch: it counts as one.
    bare = {"query": text(10), "positive": text(60), "negatives": []}  # 10 + 60 + 60 = 130
    pairs.write_text(json.dumps(bare) + "\n")
    assert has_long_pairs(stage2, words)
    # A malformed pair gets the stage-2 reader's error, naming the file, the line and the field.
    pairs.write_text(json.dumps(long) + "\n" + json.dumps({"positive": "p"}) + "\n")
    with pytest.raises(InputError, match=r"pairs.train.jsonl:2: field 'query'"):
        has_long_pairs(stage2, words)


def test_benchmark_refuses_a_zero_step_override(capsys):
    assert main(["benchmark", "--stage1-steps", "0", "--output", "unused"]) == 2
    assert "--stage1-steps must be >= 1" in capsys.readouterr().err
    assert main(["benchmark", "--stage2-lr", "0", "--output", "unused"]) == 2
    assert "stage2_learning_rate (--stage2-lr) must be > 0, got 0.0" in capsys.readouterr().err
    assert main(["benchmark", "--stage1-epochs", "0", "--output", "unused"]) == 2
    assert "stage1_epochs (--stage1-epochs) must be > 0, got 0.0" in capsys.readouterr().err
    assert main(["benchmark", "--stage2-epochs", "-1", "--output", "unused"]) == 2
    assert "stage2_epochs (--stage2-epochs) must be > 0, got -1.0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["benchmark", "--stage2-epochs", "1", "--stage2-steps", "5", "--output", "unused"])
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["benchmark", "--stage1-epochs", "1", "--stage1-steps", "5", "--output", "unused"])
    assert "not allowed with argument" in capsys.readouterr().err


def _finished_run(run_dir, seconds: float) -> None:
    """A finished run whose training log says it took `seconds`: one step of 100 tokens."""
    run_dir.mkdir(parents=True)
    (run_dir / "train_log.jsonl").write_text(json.dumps({"step": 1, "tokens": 100, "tokens_per_s": 100 / seconds}))
    (run_dir / "lbr_config.json").write_text("{}")


def _timed_run(experiment, capsys, plan, seconds, logged=None, printed=None):
    """Run `plan` with fake tasks that take `seconds[(kind, seed)]` on a fake clock, a stage-2
    task leaving a finished run whose log says `logged[(method, seed)]` seconds; return the
    time-left part of each progress line, and put every printed line in `printed`."""
    from lbr.experiments import run_on_clock

    def take(kind, args):
        if (kind, args["seed"]) not in seconds:
            return None  # finished: skipped
        if kind == "stage2" and (args["method"], args["seed"]) in (logged or {}):
            run_dir = experiment.run_dir(args["domain"], args["setting"], args["method"], args["seed"])
            _finished_run(run_dir, logged[(args["method"], args["seed"])])
        return seconds[(kind, args["seed"])]

    run_on_clock(experiment, plan, take)
    lines = capsys.readouterr().out.splitlines()
    if printed is not None:
        printed.extend(lines)
    return [line.split("about ")[1] for line in lines if "left)" in line]


def test_priors_grow_with_each_domains_tokens_a_pair_and_encoding_cost(tmp_path):
    # The demo on the Zen 4 took 58.8 s to train LLM+CL on chemistry against 36.8 on medical: its
    # pairs are 2.3 times longer in tokens. The priors must see that, or chemistry and code read low.
    assert set(PAIR_TOKENS) == set(ENCODE_COST) == set(DOMAINS)
    experiment = Experiment(output=tmp_path, domains=("medical", "chemistry"), budget=BUDGETS["demo"])
    priors = {(kind, args["domain"], args.get("method", args.get("name"))): p for kind, args, p in experiment.tasks()}
    for kind, method in (("stage2", "llm_cl"), ("stage2", "lbr"), ("evaluate", "base")):
        assert priors[(kind, "chemistry", method)] > 1.3 * priors[(kind, "medical", method)]
    assert priors[("stage1", "chemistry", "ib")] == priors[("stage1", "medical", "ib")]  # 64-token segments
    # 10 s load + 6 steps x (2 s + 5 ms x 70 tokens a pair x 8 pairs); chemistry 163 tokens a pair.
    assert priors[("stage2", "medical", "llm_cl")] == pytest.approx(10 + 6 * (2 + 0.005 * 70 * 8))
    assert priors[("stage2", "chemistry", "llm_cl")] == pytest.approx(10 + 6 * (2 + 0.005 * 163 * 8))
    assert priors[("stage2", "chemistry", "lbr")] == pytest.approx(10 + 6 * (2 + 0.005 * 163 * 8) * 2)
    # 15 s + 120 s x the domain's cost x 200 / 2,000 documents.
    assert priors[("evaluate", "medical", "base")] == pytest.approx(15 + 12)
    assert priors[("evaluate", "chemistry", "base")] == pytest.approx(15 + 12 * 1.7)
    assert priors[("stage1", "medical", "ib")] == pytest.approx(10 + 6 * (2 + 0.72 * 8))
    # The demo's three domains: 16.7 minutes of priors, against 16.4 taken on the Zen 4 (docs/DEMO.md).
    demo = Experiment(output=tmp_path, budget=BUDGETS["demo"])
    assert 15 * 60 < sum(p for _, _, p in demo.tasks()) < 18 * 60


def test_training_tasks_do_not_take_their_pace_from_an_evaluation(tmp_path, capsys):
    experiment = Experiment(output=tmp_path, domains=("medical",), methods=("llm_cl",), show_progress=False)
    cell = {"domain": "medical", "setting": "open", "method": "llm_cl"}
    # The untrained model's evaluation takes 2x its prior (loading it first); training, not yet
    # run, keeps its prior (borrowing would read 6m40s), and the next evaluation takes 2x.
    plan = [("evaluate", {**cell, "seed": 0}, 100.0), ("stage2", {**cell, "seed": 1}, 100.0)]
    plan += [("evaluate", {**cell, "seed": 1}, 100.0)]
    seconds = {("evaluate", 0): 200.0, ("stage2", 1): 100.0, ("evaluate", 1): 100.0}
    left = _timed_run(experiment, capsys, plan, seconds)
    assert left == ["5m00s left)", "5m00s left)", "3m20s left)"]  # 3 x 100; 100 + 2 x 100; 2 x 100


@pytest.mark.parametrize(
    ("methods", "expected"),
    [(("bm25", "base"), ["prepare", "build", "evaluate", "evaluate"]), (("bm25",), ["build", "evaluate"])],
)
def test_run_converts_the_model_before_the_first_task_if_a_task_loads_it(tmp_path, monkeypatch, methods, expected):
    # The GGUF conversion and the transformers import are one-offs: paid inside the first
    # evaluation, they set the evaluations' pace 1.4x too slow in the demo (docs/DEMO.md).
    # BM25 loads no LLM: nothing to convert.
    calls = []
    experiment = Experiment(output=tmp_path, domains=("medical",), methods=methods, show_progress=False)
    monkeypatch.setattr(experiment, "_prepare_model", lambda: calls.append("prepare"))
    for kind in ("build", "evaluate"):
        monkeypatch.setattr(experiment, f"_{kind}", lambda kind=kind, **args: calls.append(kind) or True)
    monkeypatch.setattr(experiment, "collect", lambda: [])
    experiment.run()
    assert calls == expected


def test_time_left_counts_pending_tasks_only_at_the_median_observed_speed(tmp_path, capsys):
    experiment = Experiment(output=tmp_path, domains=("medical",), methods=("llm_cl",), show_progress=False)
    cell = {"domain": "medical", "setting": "open", "method": "llm_cl"}
    plan = [("stage2", {**cell, "seed": seed}, 100.0) for seed in range(5)]
    finished = experiment.run_dir("medical", "open", "llm_cl", 0)
    finished.mkdir(parents=True)
    (finished / "lbr_config.json").write_text("{}")
    # Seed 2 runs 10x slower than its prior (say, the process was paused); the others 2x.
    seconds = {("stage2", 1): 200.0, ("stage2", 2): 1000.0, ("stage2", 3): 200.0, ("stage2", 4): 200.0}
    left = _timed_run(experiment, capsys, plan, seconds)
    # 4 pending x 100 s at the prior speed; the finished seed 0 counts for nothing.
    assert left[0] == "6m40s left)" and left[1] == "6m40s left)"
    assert left[2] == "10m00s left)"  # 3 x 100 s x 2
    assert left[3] == "20m00s left)"  # median(2, 10) = 6: 2 x 100 s x 6
    assert left[4] == "3m20s left)"  # 1 x 100 s x median(2, 10, 2) = 2, where the mean would give 4.67
    assert not (tmp_path / "experiment.json").exists()  # the fake-clock run writes nothing


def test_time_left_learns_speed_per_kind_and_not_from_resumed_or_tiny_tasks(tmp_path, capsys):
    experiment = Experiment(output=tmp_path, domains=("medical",), methods=("llm_cl",), show_progress=False)
    cell = {"domain": "medical", "setting": "open", "method": "llm_cl"}
    # Stage 2 runs 3x its prior, evaluation 1x: each kind's remaining work takes its own speed,
    # and a kind with no finished task yet borrows the others'.
    plan = [(kind, {**cell, "seed": seed}, 100.0) for seed in (1, 2) for kind in ("stage2", "evaluate")]
    seconds = {("stage2", 1): 300.0, ("evaluate", 1): 100.0, ("stage2", 2): 300.0, ("evaluate", 2): 100.0}
    left = _timed_run(experiment, capsys, plan, seconds)
    assert left == ["6m40s left)", "15m00s left)", "6m40s left)", "1m40s left)"]
    # A resumed run (its directory exists, unfinished) and a task whose prior is under
    # MIN_TIMED_SECONDS (mostly loading) say nothing about speed: only seed 2 does (2x), where
    # the three would give a median of 5x.
    experiment.run_dir("medical", "open", "llm_cl", 0).mkdir(parents=True)
    plan = [("stage2", {**cell, "seed": 0}, 100.0), ("stage2", {**cell, "seed": 1}, 10.0)]
    plan += [("stage2", {**cell, "seed": seed}, 100.0) for seed in (2, 3)]
    seconds = {("stage2", 0): 500.0, ("stage2", 1): 50.0, ("stage2", 2): 200.0, ("stage2", 3): 200.0}
    left = _timed_run(experiment, capsys, plan, seconds)
    assert left[3] == "3m20s left)"  # 100 s x 2


def test_time_left_learns_speed_from_demo_sized_runs(tmp_path, capsys):
    # Training runs with priors of 40 s (the demo's were 30-50 s); on a day when they take 2.5x that, the
    # estimate must follow (it used to learn only from tasks with a prior of a minute or more).
    experiment = Experiment(output=tmp_path, domains=("medical",), methods=("llm_cl",), show_progress=False)
    cell = {"domain": "medical", "setting": "open", "method": "llm_cl"}
    plan = [("stage2", {**cell, "seed": seed}, 40.0) for seed in (1, 2, 3)]
    seconds = {("stage2", seed): 100.0 for seed in (1, 2, 3)}
    left = _timed_run(experiment, capsys, plan, seconds)
    assert left == ["2m00s left)", "3m20s left)", "1m40s left)"]  # 3 x 40 s; then 2 x 40 x 2.5; 40 x 2.5


def _llm_cl_seed0_measured(experiment) -> None:
    """LLM+CL seed 0 ran in the experiment's directory before: its archived log says 200 s, and
    its evaluation took 50 s."""
    logs = experiment.output / "train-logs"
    logs.mkdir()
    rows = [{"step": step, "tokens": 100, "tokens_per_s": 2.0} for step in range(1, 5)]  # 4 x 100 / 2
    (logs / "medical-any-llm_cl-seed0.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    result = experiment.result_path("medical", "open", "llm_cl", 0)
    result.parent.mkdir(parents=True)
    result.write_text(json.dumps({"seconds": 50.0}))


def test_time_left_starts_from_the_runs_this_directory_has_measured(tmp_path, capsys):
    experiment = Experiment(output=tmp_path, domains=("medical",), methods=("llm_cl", "lbr"), show_progress=False)
    _llm_cl_seed0_measured(experiment)  # 200 s to train, 50 s to evaluate
    cell = {"domain": "medical", "setting": "open"}
    plan = [
        ("stage2", {**cell, "method": "llm_cl", "seed": 1}, 100.0),
        ("stage2", {**cell, "method": "lbr", "seed": 1}, 100.0),
        ("stage2", {**cell, "method": "lbr", "seed": 2}, 100.0),
        ("evaluate", {**cell, "method": "llm_cl", "seed": 1}, 100.0),
    ]
    seconds = {("stage2", 1): 340.0, ("stage2", 2): 400.0, ("evaluate", 1): 50.0}
    printed: list[str] = []
    left = _timed_run(experiment, capsys, plan, seconds, logged={("lbr", 1): 400.0}, printed=printed)
    # LLM+CL seed 1 takes seed 0's 200 s, its evaluation 50 s; LBR, never run, its prior x the
    # domain's measured / prior stage-2 time (2, counted once for the run): 200 + 200 + 200 + 50.
    assert left[0] == "10m50s left)"
    # LLM+CL seed 1 took 340 s here, 1.7x seed 0's: every time measured before this process is
    # 1.7x now (the evaluation's 50 s too), and LBR goes at the median of 2 and 3.4 (2.7x).
    assert "tasks take 1.70x the time they took before in" in "\n".join(printed)
    assert left[1] == "10m25s left)"  # 270 + 270 + 85
    # LBR seed 1 logged 400 s: seed 2 takes that, not a rescaled prior.
    assert left[2] == "8m05s left)"  # 400 + 85
    assert left[3] == "1m25s left)"


def test_the_pace_is_the_median_over_the_tasks_measured_before(tmp_path, capsys):
    experiment = Experiment(output=tmp_path, domains=("medical",), methods=("llm_cl",), show_progress=False)
    _llm_cl_seed0_measured(experiment)  # 200 s to train
    plan = [
        ("stage2", {"domain": "medical", "setting": "open", "method": "llm_cl", "seed": s}, 100.0) for s in (1, 2, 3, 4)
    ]
    # Seed 2 is paused for a while (2000 s, 10x); the others run at 2x: the median keeps 2x.
    seconds = {("stage2", 1): 400.0, ("stage2", 2): 2000.0, ("stage2", 3): 400.0, ("stage2", 4): 400.0}
    left = _timed_run(experiment, capsys, plan, seconds)
    assert left == ["13m20s left)", "20m00s left)", "40m00s left)", "6m40s left)"]  # 4 x 200, 3 x 400, 2 x 1200, 400


def test_long_runs_checkpoint_at_most_25_steps_apart(tmp_path):
    experiment = Experiment(output=tmp_path, domains=("medical",), methods=("llm_cl",))
    saves = {steps: experiment._train_config(tmp_path, 0, steps, stage=2).save_steps for steps in (8, 60, 487)}
    assert saves == {8: 10, 60: 15, 487: 25}


def test_durations_read_in_minutes_then_hours():
    from lbr.experiments import duration_text

    assert [duration_text(s) for s in (0, 59.9, 725, 3599, 3600, 25_440, 180_000)] == [
        "0m00s",
        "0m59s",
        "12m05s",
        "59m59s",
        "1h00m",
        "7h04m",
        "50h00m",
    ]


def test_measured_seconds_reads_the_same_finished_run_only(tmp_path):
    experiment = Experiment(output=tmp_path, domains=("medical",), methods=("llm_cl",), show_progress=False)
    task = {"domain": "medical", "setting": "open", "method": "llm_cl", "seed": 1}
    assert experiment.measured_seconds("stage2", task) is None
    unfinished = experiment.run_dir("medical", "open", "llm_cl", 0)
    unfinished.mkdir(parents=True)
    (unfinished / "train_log.jsonl").write_text(json.dumps({"step": 1, "tokens": 100, "tokens_per_s": 1.0}))
    assert experiment.measured_seconds("stage2", task) is None  # not finished: not a measurement
    # Runs whose names start like LLM+CL's and LBR's are other runs.
    _finished_run(experiment.run_dir("medical", "open", "llm_cl_matched", 0), 1000.0)
    _finished_run(experiment.run_dir("medical", "open", "lbr_norefine", 0), 1000.0)
    assert experiment.measured_seconds("stage2", task) is None
    assert experiment.measured_seconds("stage2", {**task, "method": "lbr"}) is None
    # Seed 2 finished (3 steps x a mean of 60 tokens / 10 tokens/s = 18 s), and an archived copy
    # of its log does not count twice: the median of 18, 18 and 30 would be 18 as well, so seed 3
    # (30 s) is archived only, and the median of the two runs is 24.
    rows = [{"step": step, "tokens": 30 * step, "tokens_per_s": 10.0} for step in range(1, 4)]
    _finished_run(experiment.run_dir("medical", "open", "llm_cl", 2), 1.0)
    log = "\n".join(json.dumps(row) for row in rows) + "\n"
    (experiment.run_dir("medical", "open", "llm_cl", 2) / "train_log.jsonl").write_text(log)
    (tmp_path / "train-logs").mkdir()
    (tmp_path / "train-logs" / "medical-any-llm_cl-seed2.jsonl").write_text(log)
    (tmp_path / "train-logs" / "medical-any-llm_cl-seed3.jsonl").write_text(json.dumps(rows[0] | {"step": 10}))
    assert experiment.measured_seconds("stage2", task) == pytest.approx(24.0)
    # A log with an impossible throughput is no measurement, not a crash.
    (tmp_path / "train-logs" / "medical-any-llm_cl-seed3.jsonl").write_text(
        '{"step": 1, "tokens": 1, "tokens_per_s": 0}'
    )
    assert experiment.measured_seconds("stage2", task) == pytest.approx(18.0)


def test_time_left_on_a_domain_with_nothing_measured_borrows_the_others(tmp_path, capsys):
    experiment = Experiment(output=tmp_path, domains=("chemistry", "code"), methods=("llm_cl",), show_progress=False)
    _finished_run(experiment.run_dir("chemistry", "open", "llm_cl", 0), 300.0)  # 3x its prior
    plan = [
        ("stage2", {"domain": "chemistry", "setting": "open", "method": "llm_cl", "seed": 1}, 100.0),
        ("stage2", {"domain": "code", "setting": "open", "method": "llm_cl", "seed": 1}, 100.0),
    ]
    left = _timed_run(experiment, capsys, plan, {})
    assert left[0] == "10m00s left)"  # chemistry's run measured (300 s); code's at chemistry's 3x


def test_plan_lists_each_task_with_the_time_left_estimate_and_writes_nothing(tmp_path, monkeypatch):
    experiment = Experiment(output=tmp_path, domains=("medical",), methods=("llm_cl", "lbr"), show_progress=False)
    _llm_cl_seed0_measured(experiment)  # 200 s to train, 50 s to evaluate
    _checkpoint_at(experiment.run_dir("medical", "open", "lbr", 1), step=10, total=40)  # stopped part-way
    cell = {"domain": "medical", "setting": "open"}
    tasks = [
        ("stage2", {**cell, "method": "llm_cl", "seed": 0}, 100.0),
        ("evaluate", {**cell, "method": "llm_cl", "seed": 0}, 100.0),
        ("stage2", {**cell, "method": "llm_cl", "seed": 1}, 100.0),
        ("stage2", {**cell, "method": "lbr", "seed": 1}, 300.0),
        ("evaluate", {**cell, "method": "llm_cl", "seed": 1}, 100.0),
    ]
    monkeypatch.setattr(experiment, "tasks", lambda: tasks)
    planned = experiment.plan()
    assert [task.done for task in planned] == [True, True, False, False, False]
    # Seed 1 takes seed 0's measured 200 s and 50 s; LBR, never run, its prior x LLM+CL's 2x,
    # for the 30 of its 40 steps after its checkpoint.
    assert [task.seconds for task in planned] == [0.0, 0.0, 200.0, 450.0, 50.0]
    assert [task.basis for task in planned[2:]] == ["measured", "prior", "measured"]
    assert [task.resumes for task in planned] == [False, False, False, True, False]
    assert planned[3].resume_point == (10, 40)
    assert planned[3].label == "medical open lbr 1"
    assert not (tmp_path / "experiment.json").exists()


def test_plan_command_prints_the_pending_tasks_and_creates_nothing(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["benchmark", "--domains", "medical", "--methods", "llm_cl", "--seeds", "0", "--output", str(out)]
    assert main([*argv, "--plan"]) == 0
    printed = capsys.readouterr().out
    assert "lbr benchmark --plan for" in printed and ", 0 done, " in printed
    assert "| stage2 medical open llm_cl 0 | to run |" in printed
    assert "| build medical |" in printed
    assert not out.exists()
    assert main([*argv, "--plan", "--report-only"]) == 2
    assert "--plan and --report-only do not go together" in capsys.readouterr().err
    # A directory made with other settings is refused, as a run would refuse it.
    Experiment(output=out, domains=("medical",), methods=("llm_cl",), seeds=(0,), ib_weight=0.5).check_output()
    assert main([*argv, "--plan"]) == 2
    assert "holds an experiment with other settings" in capsys.readouterr().err


def _checkpoint_at(run_dir, step: int, total: int) -> None:
    """A run stopped part-way, with a complete checkpoint at `step` of `total`."""
    checkpoint = run_dir / "checkpoints" / f"step-{step:06d}"
    checkpoint.mkdir(parents=True)
    (checkpoint / "state.json").write_text(json.dumps({"step": step, "total_steps": total}))


def test_time_left_counts_a_resumed_run_from_its_checkpoint(tmp_path, capsys):
    experiment = Experiment(output=tmp_path, domains=("medical",), methods=("llm_cl",), show_progress=False)
    cell = {"domain": "medical", "setting": "open", "method": "llm_cl"}
    _checkpoint_at(experiment.run_dir("medical", "open", "llm_cl", 1), step=30, total=40)
    plan = [("stage2", {**cell, "seed": seed}, 100.0) for seed in (1, 2)]
    left = _timed_run(experiment, capsys, plan, {("stage2", 1): 100.0, ("stage2", 2): 100.0})
    assert left[0] == "2m05s left)"  # a quarter of seed 1's 100 s, then seed 2's 100 s
    # A checkpoint that cannot be read only stops the shortening.
    (tmp_path / "runs").rename(tmp_path / "old-runs")
    _checkpoint_at(experiment.run_dir("medical", "open", "llm_cl", 1), step=30, total=40)
    next((tmp_path / "runs").rglob("state.json")).write_text("{not json")
    left = _timed_run(experiment, capsys, plan, {("stage2", 1): 100.0, ("stage2", 2): 100.0})
    assert left[0] == "3m20s left)"


def test_results_of_another_data_version_are_refused_and_old_ones_without_it_kept(tmp_path):
    from lbr.data.builders import BUILDER_VERSION

    experiment = Experiment(output=tmp_path, domains=("medical",), methods=("bm25", "llm_cl"), seeds=(0,))
    record = {"domain": "medical", "setting": "any", "method": "bm25", "seed": 0, "metrics": {"nDCG@10": 0.5}}
    path = experiment.result_path("medical", "open", "bm25", 0)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))  # written before the version was recorded
    assert experiment.collect() == [record]
    path.write_text(json.dumps({**record, "data_version": BUILDER_VERSION}))
    assert len(experiment.collect()) == 1
    path.write_text(json.dumps({**record, "data_version": BUILDER_VERSION + 1}))
    with pytest.raises(ConfigError, match=f"measured on data of builder version {BUILDER_VERSION + 1}"):
        experiment.collect()
