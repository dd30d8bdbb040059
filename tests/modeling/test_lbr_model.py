from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from lbr.config import ModelConfig
from lbr.errors import ConfigError
from lbr.modeling import LBRModel

TEXTS = ["short stature of the hand", "acid", "abnormal growth of bone and skin with increased blood"]


def test_bottleneck_tokens_are_appended_after_the_text(model_config):
    model = LBRModel.build(model_config)
    features = model.tokenize(["heart eye", "bone"])
    k = model_config.num_bottleneck_tokens
    plain = model.tokenizer(["heart eye", "bone"], add_special_tokens=True)["input_ids"]
    for row, ids in enumerate(plain):
        n = len(ids)
        assert features["input_ids"][row, :n].tolist() == ids
        assert features["input_ids"][row, n : n + k].tolist() == model.bottleneck_ids
        assert features["attention_mask"][row].sum() == n + k
        assert features["text_mask"][row].sum() == n


def test_causal_mask_appending_bottleneck_leaves_logits_on_x_unchanged(model_config):
    model = LBRModel.build(model_config)
    model.eval()
    ids = model.tokenizer(["abnormal growth of the heart"])["input_ids"][0]
    plain = torch.tensor([ids])
    with torch.no_grad():
        reference = model.causal_lm(input_ids=plain).logits  # HF's own forward, no bottleneck
        features = model.pad_with_bottleneck([ids])
        hidden, _ = model.encode_hidden(features["input_ids"], features["attention_mask"])
        ours = model.lm_logits(hidden)[:, : len(ids)]
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_z_is_the_hidden_state_at_the_bottleneck_positions(model_config):
    model = LBRModel.build(model_config)
    features = model.tokenize(TEXTS)
    with torch.no_grad():
        hidden, z = model.encode_hidden(features["input_ids"], features["attention_mask"])
    k = model.k
    for row in range(len(TEXTS)):
        length = int(features["attention_mask"][row].sum())
        torch.testing.assert_close(z[row], hidden[row, length - k : length])


def test_embedding_does_not_depend_on_batch_padding(model_config):
    model = LBRModel.build(model_config)
    alone = np.stack([model.encode(text) for text in TEXTS])
    batched = model.encode(TEXTS, batch_size=3)
    np.testing.assert_allclose(alone, batched, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-6)


def test_decoder_reaches_x_only_through_z(model_config):
    model = LBRModel.build(model_config)
    features = model.tokenize(TEXTS)
    targets = model.tokenizer(TEXTS, add_special_tokens=False, padding=True, return_tensors="pt")

    def grad_wrt_inputs(detach_z: bool) -> torch.Tensor:
        inputs = model.embed_inputs(features["input_ids"]).detach().requires_grad_(True)
        hidden = model.hidden_states(inputs, features["attention_mask"])
        lengths = features["attention_mask"].sum(1)
        positions = lengths.unsqueeze(1) - model.k + torch.arange(model.k)
        z = hidden[torch.arange(len(TEXTS)).unsqueeze(1), positions]
        prefix, _ = model.prefix(z.detach() if detach_z else z)
        loss = model.decoder_loss(prefix, targets["input_ids"], targets["attention_mask"])
        (grad,) = torch.autograd.grad(loss, inputs, allow_unused=True)
        return torch.zeros_like(inputs) if grad is None else grad

    assert torch.count_nonzero(grad_wrt_inputs(detach_z=True)) == 0
    assert grad_wrt_inputs(detach_z=False).abs().sum() > 0


def test_linear_projector_starts_as_identity(model_config):
    import dataclasses

    model = LBRModel.build(dataclasses.replace(model_config, projector="linear"))
    z = torch.randn(2, model.k, model.hidden_size)
    prefix, rate = model.prefix(z)
    torch.testing.assert_close(prefix, z)
    assert rate is None


def test_calibrated_projector_moves_hidden_states_onto_the_embedding_statistics(model_config):
    import dataclasses

    model = LBRModel.build(dataclasses.replace(model_config, projector="calibrated"))
    token_lists = [model.tokenizer(text, add_special_tokens=False)["input_ids"] for text in TEXTS]
    model.calibrate_projector(token_lists, batch_size=2)  # two batches: statistics over both
    features = model.pad_with_bottleneck(token_lists)
    with torch.no_grad():
        hidden, _ = model.encode_hidden(features["input_ids"], features["attention_mask"])
        mapped = model.projector(hidden[features["text_mask"]])
    embeddings = model.input_embeddings.weight
    # Hand computation: each dimension of P(h) has the mean and std of that embedding dimension.
    torch.testing.assert_close(mapped.mean(0), embeddings.mean(0), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mapped.std(0), embeddings.std(0), atol=1e-4, rtol=1e-4)
    weight = model.projector.weight.detach()
    assert torch.equal(weight, torch.diag(torch.diagonal(weight)))  # per dimension: no mixing


def test_calibrate_projector_refuses_other_projectors_and_no_texts(model_config):
    import dataclasses

    with pytest.raises(ConfigError, match="needs projector='calibrated', not 'linear'"):
        LBRModel.build(dataclasses.replace(model_config, projector="linear")).calibrate_projector([[5, 6]])
    with pytest.raises(ConfigError, match="at least one text"):
        LBRModel.build(dataclasses.replace(model_config, projector="calibrated")).calibrate_projector([])


def test_rate_term_is_the_kl_to_a_standard_normal(model_config):
    import dataclasses

    model = LBRModel.build(dataclasses.replace(model_config, rate_beta=0.1))
    model.eval()  # no sampling
    z = torch.randn(2, model.k, model.hidden_size)
    prefix, rate = model.prefix(z)
    logvar = torch.full_like(z, -4.0)
    expected = 0.5 * (z.pow(2) + logvar.exp() - logvar - 1).mean()
    torch.testing.assert_close(rate, expected)
    torch.testing.assert_close(prefix, z)


def test_frozen_decoder_needs_lora():
    with pytest.raises(ConfigError, match="tuning='lora'"):
        ModelConfig(decoder="frozen", tuning="full")


def test_frozen_decoder_ignores_the_adapter(model_config):
    import dataclasses

    model = LBRModel.build(dataclasses.replace(model_config, decoder="frozen"))
    with torch.no_grad():  # make the adapter matter
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_()
    prefix = torch.randn(2, model.k, model.hidden_size)
    targets = model.tokenizer(TEXTS[:2], add_special_tokens=False, padding=True, return_tensors="pt")
    frozen = model.decoder_loss(prefix, targets["input_ids"], targets["attention_mask"])
    shared = model._decoder_loss(prefix, targets["input_ids"], targets["attention_mask"])
    with model.backbone.disable_adapter():
        base = model._decoder_loss(prefix, targets["input_ids"], targets["attention_mask"])
    torch.testing.assert_close(frozen, base)
    assert not torch.allclose(frozen, shared)


@pytest.mark.parametrize("tuning,merge", [("lora", False), ("lora", True), ("full", False)])
def test_save_then_load_in_a_fresh_process_gives_equal_embeddings(model_config, tmp_path, tuning, merge):
    import dataclasses

    config = dataclasses.replace(model_config, tuning=tuning, projector="linear")
    model = LBRModel.build(config, seed=3)
    with torch.no_grad():  # move away from the initialisation so the test means something
        for param in model.trainable_parameters().values():
            param.add_(torch.randn_like(param) * 0.05)
    model.query_instruction = "Find the term: "
    out = tmp_path / "model"
    model.save(out, merge=merge)
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pt")), "only safetensors are written"
    expected = model.encode_query(TEXTS)
    script = (
        "import json, sys; from lbr.modeling import LBRModel;"
        f"m = LBRModel.load({str(out)!r});"
        f"print(json.dumps(m.encode_query({TEXTS!r}).tolist()))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    loaded = np.array(json.loads(result.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(loaded, expected, atol=1e-5)
    saved = json.loads((out / "lbr_config.json").read_text())
    assert saved["weights"] == ("merged" if merge else "adapter" if tuning == "lora" else "full")
    assert saved["query_instruction"] == "Find the term: "


def test_load_refuses_a_non_lbr_directory(tmp_path):
    with pytest.raises(ConfigError, match="not an lbr model directory"):
        LBRModel.load(tmp_path)


def test_length_chunked_passes_equal_one_pass(model_config):
    model = LBRModel.build(model_config)
    features = model.tokenize(TEXTS + ["bone", "heart eye ear skin brain kidney liver muscle"])
    with torch.no_grad():
        hidden, z = model.encode_hidden(features["input_ids"], features["attention_mask"])
        hidden_c, z_c = model.encode_hidden(features["input_ids"], features["attention_mask"], token_budget=12)
        mask = features["attention_mask"].bool()
        torch.testing.assert_close(hidden_c[mask], hidden[mask], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(z_c, z, atol=1e-5, rtol=1e-5)
        targets = model.tokenizer(TEXTS, add_special_tokens=False, padding=True, return_tensors="pt")
        prefix = z[:3]
        one = model.decoder_loss(prefix, targets["input_ids"], targets["attention_mask"])
        chunked = model.decoder_loss(prefix, targets["input_ids"], targets["attention_mask"], token_budget=10)
        torch.testing.assert_close(one, chunked, atol=1e-5, rtol=1e-5)


def test_a_relative_base_path_is_recorded_absolute(model_config, tmp_path, monkeypatch):
    import dataclasses
    import os

    monkeypatch.chdir(os.path.dirname(model_config.model))
    relative = dataclasses.replace(model_config, model=os.path.basename(model_config.model))
    model = LBRModel.build(relative)
    model.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "lbr_config.json").read_text())
    assert saved["model"]["model"] == model_config.model
    monkeypatch.chdir(tmp_path)
    np.testing.assert_allclose(LBRModel.load(tmp_path / "m").encode(TEXTS), model.encode(TEXTS), atol=1e-6)


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda d: (d / "lbr_config.json").write_text("{"), "lbr_config.json: unreadable"),
        (lambda d: (d / "lbr_config.json").write_text("[]"), "expected a JSON object"),
        (lambda d: (d / "lbr_modules.safetensors").write_bytes(b"\x00" * 10), "damaged model directory"),
        (lambda d: (d / "adapter_model.safetensors").write_bytes(b"\x05\x00"), "damaged model directory"),
    ],
)
def test_a_damaged_model_directory_is_a_clear_error(model_config, tmp_path, damage, message):
    LBRModel.build(model_config).save(tmp_path / "m")
    damage(tmp_path / "m")
    with pytest.raises(ConfigError, match=message):
        LBRModel.load(tmp_path / "m")


def test_merge_for_inference_keeps_the_embeddings_and_drops_the_lora_layers(model_config):
    model = LBRModel.build(model_config, seed=0)
    with torch.no_grad():  # a trained-looking adapter: B = 0 would make merging a no-op
        for name, param in model.backbone.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    texts = ["heart defect of the septum", "acid"]
    before = model.encode(texts)
    assert model.merge_for_inference() is model
    assert not any("lora" in name for name, _ in model.backbone.named_modules())
    np.testing.assert_allclose(model.encode(texts), before, atol=1e-5)
    model.merge_for_inference()  # a second call, or a model without LoRA, changes nothing
    np.testing.assert_allclose(model.encode(texts), before, atol=1e-5)
