from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from lbr.config import Stage1Config, Stage2Config
from lbr.data.corpus import Segment, SegmentCollator
from lbr.data.pairs import Pair, PairCollator
from lbr.losses import InfoNCELoss, Stage1Loss, Stage2Loss
from lbr.modeling import LBRModel


def test_knowledge_loss_equals_hand_computed_cross_entropy(model_config):
    model = LBRModel.build(model_config)
    texts = ["abnormal growth of the heart and bone", "acid water"]
    ids = model.tokenizer(texts)["input_ids"]
    loss_fn = Stage1Loss(model, Stage1Config(ib_weight=0.0))
    batch = SegmentCollator(model, 16)([Segment(tokens, None) for tokens in ids])
    batch.pop("num_tokens")
    ours = loss_fn(batch)["know"]
    # By hand: the plain LM on each x alone, every next-token term pooled.
    logits, targets = [], []
    for tokens in ids:
        out = model.causal_lm(input_ids=torch.tensor([tokens])).logits[0]
        logits.append(out[:-1])
        targets.append(torch.tensor(tokens[1:]))
    expected = F.cross_entropy(torch.cat(logits), torch.cat(targets))
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    assert set(loss_fn(batch)) == {"know", "loss"}


def test_stage1_loss_combines_terms_with_lambda(model_config):
    model = LBRModel.build(model_config)
    ids = model.tokenizer(["short stature of the hand", "acid water sodium"])["input_ids"]
    segments = [Segment(ids[0][:3], ids[0][3:]), Segment(ids[1], None)]
    batch = SegmentCollator(model, 16)(segments)
    batch.pop("num_tokens")
    terms = Stage1Loss(model, Stage1Config(ib_weight=0.5, target="both"))(batch)
    torch.testing.assert_close(terms["ib"], (terms["ib_reconstruct"] + terms["ib_continue"]) / 2)
    torch.testing.assert_close(terms["loss"], terms["know"] + 0.5 * terms["ib"])
    # Only the first segment has a continuation; the second must add nothing to it.
    alone = SegmentCollator(model, 16)(segments[:1])
    alone.pop("num_tokens")
    only_first = Stage1Loss(model, Stage1Config(target="continue"))(alone)["ib_continue"]
    torch.testing.assert_close(terms["ib_continue"], only_first, atol=1e-5, rtol=1e-5)


def test_segment_collator_counts_the_input_and_the_decoder_targets_it_trains_on(model_config):
    model = LBRModel.build(model_config)
    # Inputs of 5 and 3 tokens; continuations of 7 tokens and none; targets cut at 6.
    segments = [Segment(list(range(5, 10)), list(range(10, 17))), Segment([5, 6, 7], None)]
    counts = {}
    for targets in [(), ("reconstruct",), ("continue",), ("reconstruct", "continue")]:
        batch = SegmentCollator(model, 6, targets)(segments)
        counts[targets] = (int(batch["num_tokens"]), int(batch["num_target_tokens"]))
    assert counts == {
        (): (8, 0),  # lambda = 0: no decoder
        ("reconstruct",): (8, 5 + 3),
        ("continue",): (8, 6 + 0),
        ("reconstruct", "continue"): (8, 8 + 6),
    }
    assert Stage1Config(ib_weight=0.0, target="both").decoder_targets() == ()
    assert Stage1Config(target="both").decoder_targets() == ("reconstruct", "continue")
    with pytest.raises(ValueError, match="unknown decoder target"):
        SegmentCollator(model, 6, ("both",))
    assert "num_target_tokens" not in SegmentCollator(model, 6)(segments)  # not counted unless asked


@pytest.mark.parametrize("decoder", ["shared", "frozen"])
def test_stage1_gradients_are_the_same_with_gradient_checkpointing(model_config, decoder):
    # Checkpointed layers are recomputed in backward, after the frozen decoder's adapter-off
    # block has ended: they must still be recomputed with the adapter off.
    config = dataclasses.replace(model_config, decoder=decoder, projector="linear")
    grads = []
    for checkpointing in (False, True):
        model = LBRModel.build(config, seed=0)
        model.train()
        if checkpointing:
            model.enable_gradient_checkpointing()
        ids = model.tokenizer(["short stature of the hand", "acid water sodium carbon"])["input_ids"]
        batch = SegmentCollator(model, 16)([Segment(ids[0][:3], ids[0][3:]), Segment(ids[1][:2], ids[1][2:])])
        batch.pop("num_tokens")
        Stage1Loss(model, Stage1Config(target="both"))(batch)["loss"].backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_infonce_equals_hand_computed_cross_entropy():
    torch.manual_seed(0)
    q_emb = F.normalize(torch.randn(4, 8), dim=-1)
    d_emb = F.normalize(torch.randn(7, 8), dim=-1)
    labels = torch.tensor([0, 1, 2, 3])
    loss = InfoNCELoss(temperature=0.05).compute_loss_from_embeddings(q_emb, d_emb, labels)
    by_hand = 0.0
    for i in range(4):
        scores = [float(q_emb[i] @ d_emb[j]) / 0.05 for j in range(7)]
        top = max(scores)
        log_sum = top + math.log(sum(math.exp(s - top) for s in scores))
        by_hand += (log_sum - scores[i]) / 4
    assert abs(float(loss) - by_hand) < 1e-4


def test_infonce_masks_duplicate_positives():
    q_emb = F.normalize(torch.randn(2, 8), dim=-1)
    d_emb = F.normalize(torch.randn(3, 8), dim=-1)
    mask = torch.tensor([[False, False, True], [False, False, False]])
    loss = InfoNCELoss(0.1).compute_loss_from_embeddings(q_emb, d_emb, torch.tensor([0, 1]), mask)
    scores = q_emb @ d_emb.T / 0.1
    expected = (
        F.cross_entropy(scores[0:1, :2], torch.tensor([0])) + F.cross_entropy(scores[1:2], torch.tensor([1]))
    ) / 2
    torch.testing.assert_close(loss, expected)


def test_stage2_loss_layout_and_gen_terms(model_config):
    model = LBRModel.build(model_config)
    pairs = [
        Pair("heart defect", "abnormal heart of the blood", ("bone",)),
        Pair("acid", "benzoic acid with water", ()),
        Pair("tall", "abnormal heart of the blood", ()),
    ]  # shares pair 0's positive
    collate = PairCollator(
        model, pairs, num_negatives=1, query_instruction="", max_query_length=16, max_document_length=16
    )
    batch = collate(pairs, torch.Generator().manual_seed(0))
    assert batch["doc_ids"].shape[0] == 6  # 3 positives + 1 negative each
    batch.pop("num_tokens")
    terms = Stage2Loss(model, Stage2Config(gen_weight=0.1, gen_target="both"))(batch)
    torch.testing.assert_close(terms["loss"], terms["cl"] + 0.1 * (terms["gen_query"] + terms["gen_document"]) / 2)
    # By hand: InfoNCE with pair 2's positive (a copy of pair 0's) masked out for query 0, and vice versa.
    with torch.no_grad():
        _, z_q = model.encode_hidden(batch["query_ids"], batch["query_mask"])
        _, z_d = model.encode_hidden(batch["doc_ids"], batch["doc_mask"])
        scores = model.pool(z_q) @ model.pool(z_d).T / 0.05
    same = batch["doc_hash"].unsqueeze(0) == batch["doc_hash"][:3].unsqueeze(1)
    same[torch.arange(3), torch.arange(3)] = False
    expected = F.cross_entropy(scores.masked_fill(same, float("-inf")), torch.arange(3))
    torch.testing.assert_close(terms["cl"], expected, atol=1e-5, rtol=1e-5)
    assert same[0, 2] and same[2, 0]


def test_stage2_rate_term_is_added_to_the_loss_beside_l_gen(model_config):
    torch.manual_seed(0)
    model = LBRModel.build(dataclasses.replace(model_config, rate_beta=0.2))
    pairs = [Pair("heart defect", "abnormal heart of the blood", ()), Pair("acid", "benzoic acid", ())]
    collate = PairCollator(
        model, pairs, num_negatives=0, query_instruction="", max_query_length=16, max_document_length=16
    )
    batch = collate(pairs, torch.Generator().manual_seed(0))
    batch.pop("num_tokens")
    terms = Stage2Loss(model, Stage2Config(gen_weight=0.1, gen_target="both"))(batch)
    with torch.no_grad():
        _, z_q = model.encode_hidden(batch["query_ids"], batch["query_mask"])
        _, z_d = model.encode_hidden(batch["doc_ids"], batch["doc_mask"])
    # The rate is the mean of the two prefixes' KLs (the KL does not depend on the sample).
    expected_rate = (model.prefix(z_q)[1] + model.prefix(z_d)[1]) / 2
    torch.testing.assert_close(terms["rate"], expected_rate, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(terms["loss"], terms["cl"] + 0.1 * terms["gen"] + 0.2 * terms["rate"])
    # Without L_gen there is no prefix, so no rate term either.
    assert "rate" not in Stage2Loss(model, Stage2Config(gen_weight=0.0))(batch)
