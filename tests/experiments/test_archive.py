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
