from __future__ import annotations

import json

import pytest
import torch

from lbr.config import Stage2Config, TrainConfig
from lbr.data.pairs import PairCollator, read_pairs
from lbr.errors import ConfigError
from lbr.losses import CachedStage2Loss, Stage2Loss
from lbr.modeling import LBRModel


def _batch(model: LBRModel, pairs_file, size: int = 7) -> dict[str, torch.Tensor]:
    pairs = read_pairs(pairs_file)[:size]
    collate = PairCollator(
        model, pairs, num_negatives=1, query_instruction="", max_query_length=16, max_document_length=32
    )
    batch = collate(pairs, torch.Generator().manual_seed(0))
    batch.pop("num_tokens")
    return batch


def _assert_grads_close(got: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    # float32 sums in a different order differ by about 1e-7 of the largest entry; the bottleneck's
    # gradient reaches a few hundred, so a fixed atol would be float noise, not a check.
    scale = max(float(expected.abs().max()), 1.0)
    torch.testing.assert_close(got, expected, atol=1e-6 * scale, rtol=1e-5, msg=name)


def _grads(model: LBRModel) -> dict[str, torch.Tensor]:
    # Parameters the loss does not reach (the projector, with mu = 0) have no gradient in either path.
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(("mini_batch", "token_budget"), [(1, 0), (3, 0), (4, 40), (64, 0)])
def test_cached_gradients_equal_uncached(model_config, pairs_file, mini_batch, token_budget):
    model = LBRModel.build(model_config, seed=0)
    model.train()
    batch = _batch(model, pairs_file)
    config = Stage2Config(gen_weight=0.0, temperature=0.05)

    plain = Stage2Loss(model, config, token_budget=token_budget)(batch)
    plain["loss"].backward()
    expected = _grads(model)
    model.zero_grad(set_to_none=True)

    cached = CachedStage2Loss(model, config, mini_batch_size=mini_batch, token_budget=token_budget)(batch)
    cached["loss"].backward()
    got = _grads(model)

    torch.testing.assert_close(cached["loss"], plain["loss"], atol=1e-6, rtol=1e-6)
    assert set(got) == set(expected)
    assert any(float(g.abs().max()) > 0 for g in expected.values())
    for name, grad in expected.items():
        _assert_grads_close(got[name], grad, name)


def test_cached_backward_respects_the_incoming_scale(model_config, pairs_file):
    """The trainer backpropagates ``loss / accum``: the cached gradients must scale too."""
    model = LBRModel.build(model_config, seed=0)
    batch = _batch(model, pairs_file, size=5)
    loss_fn = CachedStage2Loss(model, Stage2Config(gen_weight=0.0), mini_batch_size=2)
    loss_fn(batch)["loss"].backward()
    full = _grads(model)
    model.zero_grad(set_to_none=True)
    (loss_fn(batch)["loss"] / 4).backward()
    quarter = _grads(model)
    for name, grad in full.items():
        torch.testing.assert_close(quarter[name], grad / 4, atol=1e-6, rtol=1e-5)


def test_cached_gradients_equal_uncached_with_gradient_checkpointing(model_config, pairs_file):
    model = LBRModel.build(model_config, seed=0)
    model.train()
    model.causal_lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    batch = _batch(model, pairs_file)
    config = Stage2Config(gen_weight=0.0)
    Stage2Loss(model, config)(batch)["loss"].backward()
    expected = _grads(model)
    model.zero_grad(set_to_none=True)
    CachedStage2Loss(model, config, mini_batch_size=3)(batch)["loss"].backward()
    for name, grad in _grads(model).items():
        _assert_grads_close(grad, expected[name], name)


def test_cached_loss_without_grad_returns_the_loss_only(model_config, pairs_file):
    model = LBRModel.build(model_config, seed=0)
    batch = _batch(model, pairs_file, size=4)
    config = Stage2Config(gen_weight=0.0)
    with torch.no_grad():
        expected = Stage2Loss(model, config)(batch)["loss"]
        got = CachedStage2Loss(model, config, mini_batch_size=2)(batch)
    torch.testing.assert_close(got["loss"], expected, atol=1e-6, rtol=1e-6)
    assert not got["loss"].requires_grad


def test_cached_loss_refuses_a_generative_term(model_config):
    model = LBRModel.build(model_config)
    with pytest.raises(ConfigError, match="gen_weight=0"):
        CachedStage2Loss(model, Stage2Config(gen_weight=0.1), mini_batch_size=4)
    with pytest.raises(ConfigError, match="mu"):
        Stage2Config(gen_weight=0.1, cache_mini_batch=4)
    with pytest.raises(ConfigError, match=">= 0"):
        Stage2Config(cache_mini_batch=-1)


def test_represent_with_cache_mini_batch_trains_and_records_it(model_config, pairs_file, tmp_path):
    from lbr.training import represent

    stage2 = Stage2Config(pairs=str(pairs_file), gen_weight=0.0, cache_mini_batch=3)
    train = TrainConfig(output=str(tmp_path / "s2"), max_steps=2, batch_size=6, save_steps=0)
    model = represent(model_config, stage2, train, show_progress=False)
    run = json.loads((tmp_path / "s2" / "run_config.json").read_text())
    assert run["stage2"]["cache_mini_batch"] == 3
    log = [json.loads(line) for line in (tmp_path / "s2" / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all(torch.isfinite(torch.tensor(row["loss"])) for row in log)
    # Every trainable tensor moved away from its fresh value.
    fresh = LBRModel.build(model_config, seed=train.seed).trainable_parameters()
    for name, tensor in model.trainable_parameters().items():
        assert not torch.equal(tensor.detach(), fresh[name].detach()), name
