from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.experiments import benchmark_script


def test_archive_keeps_small_files_and_restore_puts_results_back_without_overwriting(tmp_path):
    archive = benchmark_script("archive")
    out = tmp_path / "bench"
    (out / "results/medical/open").mkdir(parents=True)
    (out / "experiment.json").write_text(json.dumps({"ib_weight": 1.0}))
    (out / "results/medical/bm25.json").write_text('{"method": "bm25"}')
    (out / "results/medical/open/lbr-seed0.json").write_text('{"method": "lbr"}')
    run = out / "runs/medical/open/lbr-seed0"
    run.mkdir(parents=True)
    (run / "lbr_config.json").write_text("{}")
    (run / "train_log.jsonl").write_text('{"step": 1}\n')
    (run / "model.safetensors").write_bytes(b"weights")
    kept = tmp_path / "kept"
    assert archive.archive(out, kept) == 4  # experiment.json, two results, one training log
    assert not list(kept.rglob("*.safetensors"))
    assert (kept / "train-logs/medical-open-lbr-seed0.jsonl").read_text() == '{"step": 1}\n'

    # A new checkout: a partial output directory with one result of its own, which is kept.
    fresh = tmp_path / "fresh"
    (fresh / "results/medical").mkdir(parents=True)
    (fresh / "results/medical/bm25.json").write_text('{"method": "bm25", "mine": true}')
    assert archive.restore(kept, fresh) == (3, 1)
    assert json.loads((fresh / "results/medical/bm25.json").read_text())["mine"]
    assert (fresh / "results/medical/open/lbr-seed0.json").read_text() == '{"method": "lbr"}'
    assert (fresh / "experiment.json").read_text() == (out / "experiment.json").read_text()
    # The finished runs' logs come back where `lbr benchmark` looks for them (Experiment.finished_log).
    assert (fresh / "train-logs/medical-open-lbr-seed0.jsonl").read_text() == '{"step": 1}\n'
    assert not list(fresh.rglob("*.tmp"))
    assert archive.restore(kept, fresh) == (0, 4)  # again: everything is there already
    with pytest.raises(SystemExit, match="no experiment.json"):
        archive.restore(tmp_path / "nowhere", fresh)
    other = tmp_path / "other"
    other.mkdir()
    (other / "experiment.json").write_text(json.dumps({"ib_weight": 0.5}))
    with pytest.raises(SystemExit, match="other settings"):
        archive.restore(kept, other)
    assert not (other / "results").exists()


def _finished_stage1(out: Path, name: str) -> Path:
    run = out / "runs/medical/closed" / name
    (run / "checkpoints/step-25").mkdir(parents=True)
    (run / "checkpoints/step-25/optimizer.safetensors").write_bytes(b"resume state")
    (run / "adapter_model.safetensors").write_bytes(b"adapter " + name.encode())
    (run / "1_Pooling").mkdir()
    (run / "1_Pooling/config.json").write_text("{}")
    (run / "train_log.jsonl").write_text('{"step": 1}\n')
    (run / "lbr_config.json").write_text("{}")
    return run


def test_stage1_weights_are_kept_while_a_reader_is_unevaluated_and_come_back_whole(tmp_path):
    archive = benchmark_script("archive")
    out = tmp_path / "bench"
    (out / "results/medical/closed").mkdir(parents=True)
    (out / "experiment.json").write_text("{}")
    ib = _finished_stage1(out, "stage1-ib-seed0")
    _finished_stage1(out, "stage1-clm-seed0")
    unfinished = out / "runs/medical/closed/stage1-ib-seed1"
    unfinished.mkdir()
    (unfinished / "adapter_model.safetensors").write_bytes(b"no config yet")
    for method in ("lbr_unsup", "lbr_norefine", "clm_cl"):  # LBR itself (reads ib, seed 0) is still to run
        (out / f"results/medical/closed/{method}-seed0.json").write_text("{}")
    assert archive.pending_readers(out, ib) == ["lbr"]

    kept = tmp_path / "kept"
    archive.archive(out, kept)
    assert not (kept / archive.WEIGHTS_DIR).exists()  # only when asked
    archive.archive(out, kept, stage1_weights=True)
    weights = kept / archive.WEIGHTS_DIR / "medical/closed"
    assert sorted(p.name for p in weights.iterdir()) == ["stage1-ib-seed0"]  # clm's reader is done; seed 1 unfinished
    assert (weights / "stage1-ib-seed0/adapter_model.safetensors").read_bytes() == b"adapter stage1-ib-seed0"
    assert (weights / "stage1-ib-seed0/1_Pooling/config.json").exists()
    assert not (weights / "stage1-ib-seed0/checkpoints").exists()  # resume state is not needed by a finished run

    # A new checkout gets the run back as a finished run; one already there is left alone.
    fresh = tmp_path / "fresh"
    mine = fresh / "runs/medical/closed/stage1-clm-seed0"
    mine.mkdir(parents=True)
    copied, _ = archive.restore(kept, fresh)
    restored = fresh / "runs/medical/closed/stage1-ib-seed0"
    assert (restored / "lbr_config.json").exists()
    assert (restored / "adapter_model.safetensors").read_bytes() == b"adapter stage1-ib-seed0"
    assert not list(fresh.rglob("*.tmp"))
    (restored / "adapter_model.safetensors").write_bytes(b"trained here")
    archive.restore(kept, fresh)
    assert (restored / "adapter_model.safetensors").read_bytes() == b"trained here"

    # Once LBR is evaluated, no method reads the run: its kept copy goes.
    (out / "results/medical/closed/lbr-seed0.json").write_text("{}")
    archive.archive(out, kept, stage1_weights=True)
    assert not list((kept / archive.WEIGHTS_DIR).rglob("*.safetensors"))


def _checkpoint(run: Path, step: int) -> Path:
    """A real checkpoint of a one-tensor model at `step` (its weight is the step)."""
    import torch

    from lbr.training.checkpoint import save_checkpoint

    weight = torch.nn.Parameter(torch.full((3,), float(step)))
    optimizer = torch.optim.AdamW([weight])
    weight.grad = torch.ones(3)
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    return save_checkpoint(
        run, step, trainable={"w": weight}, optimizer=optimizer, scheduler=scheduler, extra={}, keep=10
    )


def _stopped_run(out: Path, name: str, step_seconds: float, steps: int) -> Path:
    run = out / "runs/code/closed" / name
    run.mkdir(parents=True)
    (run / "run_config.json").write_text('{"seed": 1}')
    rows = [{"step": s, "tokens": 100, "tokens_per_s": 100 / step_seconds} for s in range(1, steps + 1)]
    (run / "train_log.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows) + '{"step": ')
    return run


def test_a_run_stopped_part_way_keeps_its_newest_checkpoint_and_resumes_from_it_on_a_new_checkout(tmp_path):
    archive = benchmark_script("archive")
    from lbr.training.checkpoint import complete_checkpoints, load_checkpoint

    out = tmp_path / "bench"
    (out / "results/code/closed").mkdir(parents=True)
    (out / "experiment.json").write_text("{}")
    # 30 steps of 25 s: 12.5 minutes up to the step-30 checkpoint (the log's last row is cut short).
    stage2 = _stopped_run(out, "lbr-seed1", step_seconds=25, steps=33)
    _checkpoint(stage2, 25)
    _checkpoint(stage2, 30)
    (stage2 / "checkpoints/step-000035.tmp").mkdir()  # killed while writing
    # A newer checkpoint that does not load: the trainer would step back past it, and so does the archive.
    (stage2 / "checkpoints/step-000032").mkdir()
    (stage2 / "checkpoints/step-000032/state.json").write_text('{"step": 32, "scheduler": {}}')
    # 25 steps of 20 s: 8.3 minutes, cheaper to repeat than to keep.
    short = _stopped_run(out, "lbr_norefine-seed1", step_seconds=20, steps=25)
    _checkpoint(short, 25)
    assert archive.trained_minutes(stage2 / "train_log.jsonl", 30) == pytest.approx(12.5)
    assert archive.trained_minutes(stage2 / "missing.jsonl", 30) == 0

    kept_root = tmp_path / "kept"
    archive.archive(out, kept_root)
    assert not (kept_root / archive.PARTIAL_DIR).exists()  # only when asked
    archive.archive(out, kept_root, partial_runs=True)
    kept = kept_root / archive.PARTIAL_DIR / "code/closed"
    assert sorted(p.name for p in kept.iterdir()) == ["lbr-seed1"]
    assert sorted(p.name for p in (kept / "lbr-seed1/checkpoints").iterdir()) == ["step-000030"]
    assert (kept / "lbr-seed1/run_config.json").read_text() == '{"seed": 1}'
    assert archive.keep_partial_runs(out, kept_root) == 0  # the same checkpoint: nothing to copy again

    # The run goes on to a newer checkpoint before the next stop: it replaces the kept one, and a
    # copy a killed save left behind goes.
    _checkpoint(stage2, 50)
    (kept / "lbr-seed1.tmp").mkdir()
    assert archive.keep_partial_runs(out, kept_root) == 7  # the checkpoint's five files, settings, log
    assert sorted(p.name for p in (kept / "lbr-seed1/checkpoints").iterdir()) == ["step-000050"]
    assert not list(kept_root.rglob("*.tmp"))

    # A new checkout: the run comes back, loadable, where `lbr benchmark` resumes it; one already
    # there is left alone.
    fresh = tmp_path / "fresh"
    mine = fresh / "runs/code/closed/lbr-seed1"
    archive.restore(kept_root, fresh)
    assert [p.name for p in complete_checkpoints(mine)] == ["step-000050"]
    restored = load_checkpoint(mine / "checkpoints/step-000050")
    assert (
        restored["trainable"]["w"].tolist()
        == load_checkpoint(stage2 / "checkpoints/step-000050")["trainable"]["w"].tolist()
    )
    assert (mine / "train_log.jsonl").read_text() == (stage2 / "train_log.jsonl").read_text()
    (mine / "run_config.json").write_text("mine")
    archive.restore(kept_root, fresh)
    assert (mine / "run_config.json").read_text() == "mine"

    # Finished but not yet evaluated: the model is not archived, so the checkpoint stays kept.
    (stage2 / "lbr_config.json").write_text("{}")
    archive.archive(out, kept_root, partial_runs=True)
    assert (kept / "lbr-seed1/checkpoints/step-000050").exists()
    # Evaluated: the kept checkpoint goes, and a checkout whose result came back does not restore it.
    newer = tmp_path / "newer"
    (newer / "results/code/closed").mkdir(parents=True)
    (newer / "results/code/closed/lbr-seed1.json").write_text("{}")
    archive.restore(kept_root, newer)
    assert not (newer / "runs/code/closed/lbr-seed1").exists()
    (out / "results/code/closed/lbr-seed1.json").write_text("{}")
    archive.archive(out, kept_root, partial_runs=True)
    assert not list((kept_root / archive.PARTIAL_DIR).rglob("*.safetensors"))
