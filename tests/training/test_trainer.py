from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch

from lbr.config import Stage1Config, Stage2Config, TrainConfig
from lbr.errors import ConfigError
from lbr.modeling import LBRModel, lbr_model
from lbr.training import TrainingError, learn, represent
from lbr.training import trainer as trainer_module
from lbr.training.checkpoint import complete_checkpoints


def _snapshot(model: LBRModel) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.trainable_parameters().items()}


def _train_config(output, **overrides) -> TrainConfig:
    values = {
        "output": str(output),
        "batch_size": 4,
        "max_steps": 3,
        "learning_rate": 1e-2,
        "save_steps": 0,
        "warmup_ratio": 0.0,
        "seed": 5,
    }
    values.update(overrides)
    return TrainConfig(**values)


@pytest.mark.parametrize(
    "extra", [{}, {"projector": "linear", "rate_beta": 0.01}, {"projector": "identity"}, {"tuning": "full"}]
)
def test_stage1_changes_every_trainable_parameter(model_config, corpus_file, tmp_path, monkeypatch, extra):
    config = dataclasses.replace(model_config, **extra)
    before = _snapshot(LBRModel.build(config, seed=5))  # the same init learn() builds
    model = learn(
        config,
        Stage1Config(corpus=str(corpus_file), segment_length=8, target="both"),
        _train_config(tmp_path / "s1"),
        show_progress=False,
    )
    after = _snapshot(model)
    assert before.keys() == after.keys() and "bottleneck" in after
    unchanged = [name for name in before if torch.equal(before[name], after[name])]
    assert not unchanged, f"parameters that did not train: {unchanged}"
    log = [json.loads(line) for line in (tmp_path / "s1" / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2, 3]
    assert {"loss", "know", "ib", "ib_reconstruct", "ib_continue", "lr", "tokens_per_s"} <= set(log[0])
    # `both` trains the decoder on each input and on its continuation: more target tokens than input.
    assert sum(row["target_tokens"] for row in log) > sum(row["tokens"] for row in log) > 0


def test_calibrated_projector_is_set_before_stage1_and_kept_by_stage2(model_config, corpus_file, pairs_file, tmp_path):
    from lbr.data.corpus import read_corpus, segment_documents

    config = dataclasses.replace(model_config, projector="calibrated")
    tiny_lr = {"learning_rate": 1e-12, "max_grad_norm": 0.0}  # the weights stay where they started
    stage1 = learn(
        config,
        Stage1Config(corpus=str(corpus_file), segment_length=8),
        _train_config(tmp_path / "s1", **tiny_lr),
        show_progress=False,
    )
    expected = LBRModel.build(config, seed=5)
    segments = segment_documents(read_corpus(corpus_file), expected.tokenizer, 8, split_single=False)
    expected.calibrate_projector([segment.tokens for segment in segments[:64]])
    torch.testing.assert_close(stage1.projector.weight, expected.projector.weight)
    torch.testing.assert_close(stage1.projector.bias, expected.projector.bias)
    assert not torch.allclose(stage1.projector.weight, torch.eye(stage1.hidden_size))
    # Stage 2 from the stage-1 directory keeps the trained projector instead of recalibrating.
    stage2 = represent(
        dataclasses.replace(config, model=str(tmp_path / "s1")),
        Stage2Config(pairs=str(pairs_file)),
        _train_config(tmp_path / "s2", **tiny_lr),
        show_progress=False,
    )
    torch.testing.assert_close(stage2.projector.weight, stage1.projector.weight)


def test_stage2_from_a_base_model_calibrates_on_the_positives(model_config, pairs_file, tmp_path):
    from lbr.data.pairs import read_pairs

    config = dataclasses.replace(model_config, projector="calibrated")
    model = represent(
        config,
        Stage2Config(pairs=str(pairs_file), gen_weight=0.1),
        _train_config(tmp_path / "s2", learning_rate=1e-12, max_grad_norm=0.0),
        show_progress=False,
    )
    expected = LBRModel.build(config, seed=5)
    positives = [pair.positive for pair in read_pairs(pairs_file)][:64]
    max_length = Stage2Config().max_document_length
    tokens = expected.tokenizer(positives, add_special_tokens=False, truncation=True, max_length=max_length)
    expected.calibrate_projector(tokens["input_ids"])
    torch.testing.assert_close(model.projector.weight, expected.projector.weight)
    torch.testing.assert_close(model.projector.bias, expected.projector.bias)


def test_stage2_from_stage1_changes_every_trainable_parameter(model_config, corpus_file, pairs_file, tmp_path):
    learn(
        model_config,
        Stage1Config(corpus=str(corpus_file), segment_length=8),
        _train_config(tmp_path / "s1"),
        show_progress=False,
    )
    start = LBRModel.load(tmp_path / "s1", trainable=True)
    before = _snapshot(start)
    model = represent(
        dataclasses.replace(model_config, model=str(tmp_path / "s1")),
        Stage2Config(pairs=str(pairs_file), query_instruction="Query: "),
        _train_config(tmp_path / "s2"),
        show_progress=False,
    )
    after = _snapshot(model)
    assert before.keys() == after.keys()
    assert not [name for name in before if torch.equal(before[name], after[name])]
    saved = json.loads((tmp_path / "s2" / "lbr_config.json").read_text())
    assert [stage["stage"] for stage in saved["stages"]] == ["stage1", "stage2"]
    assert saved["query_instruction"] == "Query: "
    assert not (tmp_path / "s2" / "checkpoints").exists()


def test_stage2_refuses_an_architecture_change(model_config, corpus_file, pairs_file, tmp_path):
    learn(
        model_config,
        Stage1Config(corpus=str(corpus_file)),
        _train_config(tmp_path / "s1", max_steps=1),
        show_progress=False,
    )
    changed = dataclasses.replace(model_config, model=str(tmp_path / "s1"), num_bottleneck_tokens=5)
    with pytest.raises(ConfigError, match="num_bottleneck_tokens"):
        represent(
            changed,
            Stage2Config(pairs=str(pairs_file)),
            _train_config(tmp_path / "s2"),
            explicit={"num_bottleneck_tokens"},
            show_progress=False,
        )


class _Killed(Exception):
    pass


def test_resume_after_an_interruption_gives_identical_weights(model_config, corpus_file, tmp_path, monkeypatch):
    stage1 = Stage1Config(corpus=str(corpus_file), segment_length=8, target="continue")
    full = learn(model_config, stage1, _train_config(tmp_path / "full", max_steps=6, save_steps=2), show_progress=False)
    expected = _snapshot(full)

    # Interrupt the second run during step 5 (after the step-4 checkpoint).
    original = trainer_module.Trainer.micro_batch_indices
    calls = {"n": 0}

    def dying(self, micro_index):
        calls["n"] += 1
        if micro_index == 4:
            raise _Killed()
        return original(self, micro_index)

    monkeypatch.setattr(trainer_module.Trainer, "micro_batch_indices", dying)
    with pytest.raises(_Killed):
        learn(model_config, stage1, _train_config(tmp_path / "cut", max_steps=6, save_steps=2), show_progress=False)
    monkeypatch.setattr(trainer_module.Trainer, "micro_batch_indices", original)
    assert [p.name for p in complete_checkpoints(tmp_path / "cut")] == ["step-000002", "step-000004"]
    # A half-written checkpoint left by a kill is ignored.
    (tmp_path / "cut" / "checkpoints" / "step-000006.tmp").mkdir()
    resumed = learn(
        model_config,
        stage1,
        _train_config(tmp_path / "cut", max_steps=6, save_steps=2),
        resume=True,
        show_progress=False,
    )
    got = _snapshot(resumed)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=0)
    steps = [json.loads(line)["step"] for line in (tmp_path / "cut" / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_resume_with_changed_settings_is_refused(model_config, corpus_file, tmp_path, monkeypatch):
    stage1 = Stage1Config(corpus=str(corpus_file), segment_length=8)

    def dying(self, micro_index):
        raise _Killed()

    original = trainer_module.Trainer.micro_batch_indices
    monkeypatch.setattr(
        trainer_module.Trainer, "micro_batch_indices", lambda self, i: dying(self, i) if i == 2 else original(self, i)
    )
    with pytest.raises(_Killed):
        learn(model_config, stage1, _train_config(tmp_path / "run", save_steps=1), show_progress=False)
    monkeypatch.undo()
    with pytest.raises(ConfigError, match=r"batch_size: 4 -> 2"):
        learn(
            model_config,
            stage1,
            _train_config(tmp_path / "run", save_steps=1, batch_size=2),
            resume=True,
            show_progress=False,
        )


def test_output_directory_is_never_silently_overwritten(model_config, corpus_file, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        learn(model_config, Stage1Config(corpus=str(corpus_file)), _train_config(out, max_steps=1), show_progress=False)
    assert (out / "notes.txt").read_text() == "mine"


def test_non_finite_loss_stops_without_saving(model_config, corpus_file, tmp_path, monkeypatch):
    from lbr.losses import Stage1Loss

    original = Stage1Loss.forward

    def poisoned(self, batch):
        terms = original(self, batch)
        terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(Stage1Loss, "forward", poisoned)
    with pytest.raises(TrainingError, match="non-finite loss at step 1"):
        learn(model_config, Stage1Config(corpus=str(corpus_file)), _train_config(tmp_path / "nan"), show_progress=False)
    assert not (tmp_path / "nan" / "lbr_config.json").exists()


def test_a_setting_added_since_the_run_started_does_not_block_resume():
    from lbr.training.trainer import config_differences

    saved = {"train": {"batch_size": 4}}
    current = {"train": {"batch_size": 4, "bf16": False}}
    assert config_differences(saved, current, defaults={"train": {"bf16": False}}) == []
    current["train"]["bf16"] = True
    assert config_differences(saved, current, defaults={"train": {"bf16": False}}) == ["train.bf16: '<unset>' -> True"]


def test_bf16_autocast_trains_and_keeps_float32_weights(model_config, corpus_file, tmp_path, monkeypatch):
    monkeypatch.setattr(lbr_model, "cpu_has_native_bf16", lambda: True)  # the same on every host
    model = learn(
        model_config,
        Stage1Config(corpus=str(corpus_file), segment_length=8),
        _train_config(tmp_path / "bf16", bf16=True),
        show_progress=False,
    )
    assert all(p.dtype == torch.float32 for p in model.trainable_parameters().values())
    log = [json.loads(line) for line in (tmp_path / "bf16" / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 3 and all(np.isfinite(row["loss"]) for row in log)
    bf16 = model.encode(["heart defect", "acid"], precision="bfloat16")
    fp32 = model.encode(["heart defect", "acid"])
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(bf16, fp32, atol=0.05)
    with pytest.raises(ConfigError, match="precision"):
        model.encode(["x"], precision="fp8")


def test_bf16_on_a_cpu_without_native_bf16_warns_and_still_encodes(model_config, monkeypatch):
    tiny_model = LBRModel.build(model_config)
    monkeypatch.setattr(lbr_model, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(RuntimeWarning, match="AVX512-BF16 or AMX"):
        slow = tiny_model.encode(["heart defect"], precision="bfloat16")
    assert slow.shape == (1, tiny_model.hidden_size)
    monkeypatch.setattr(lbr_model, "cpu_has_native_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither a CPU with bf16 nor float32 warns
        tiny_model.encode(["heart defect"], precision="bfloat16")
        monkeypatch.setattr(lbr_model, "cpu_has_native_bf16", lambda: False)
        tiny_model.encode(["heart defect"])
