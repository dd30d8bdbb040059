from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ARCHIVE = Path(__file__).resolve().parents[2] / "benchmarks" / "archive.py"


def _archive_module():
    spec = importlib.util.spec_from_file_location("archive", ARCHIVE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_archive_keeps_small_files_and_restore_puts_results_back_without_overwriting(tmp_path):
    archive = _archive_module()
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
