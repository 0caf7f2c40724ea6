"""The feedback objectives: values at init, hand-computed formulas, gradients, and learning."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cl.config import ModelSection
from cl.learning.example import Example, encode_examples
from cl.learning.objectives import (
    FeedbackObjective,
    KTOLoss,
    RewardWeightedLoss,
    Scored,
    SupervisedLoss,
    make_preference_loss,
    score_labels,
    score_tokens,
)
from cl.model.base_model import build_base_model


@pytest.fixture
def model():
    """The seeded tiny base with two adapter slots (slot 1 must never move)."""
    return build_base_model(ModelSection(), n_adapter_slots=2)


def features(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 8, generator=torch.Generator().manual_seed(seed))


def ids(n: int, slot: int) -> torch.Tensor:
    return torch.full((n,), slot, dtype=torch.long)


def classify_scored(model, x, labels, desirable=None, reference=True) -> Scored:
    """Policy (train mode, slot 0) and reference (eval, adapter -1, no_grad) scores."""
    ref = None
    if reference:
        model.eval()
        with torch.no_grad():
            ref = model(features=x, adapter_ids=ids(len(x), -1))
    model.train()
    logits = model(features=x, adapter_ids=ids(len(x), 0))
    return score_labels(logits, labels, ref_logits=ref, desirable=desirable)


def lm_batch(correction: bool = True):
    """Two generate examples encoded for the lm head (corrections or thumbs on served text)."""
    if correction:
        exs = [
            Example("e1", "r1", "generate", "correction", text="2+2=", served_text="5", correction="4"),
            Example("e2", "r2", "generate", "correction", text="hi", served_text="yo", correction="hello"),
        ]
    else:
        exs = [
            Example("e1", "r1", "generate", "thumbs", text="2+2=", served_text="4", desirable=True),
            Example("e2", "r2", "generate", "thumbs", text="hi", served_text="yo!", desirable=False),
        ]
    (batch,) = encode_examples(exs, max_seq_len=128)
    return batch


def lm_scored(model, batch, reference=True) -> Scored:
    ref = None
    if reference:
        model.eval()
        with torch.no_grad():
            ref = model(tokens=batch.tokens, adapter_ids=ids(2, -1), head="lm")
    model.train()
    logits = model(tokens=batch.tokens, adapter_ids=ids(2, 0), head="lm")
    return score_tokens(logits, batch.targets, batch.mask, ref_logits=ref, desirable=batch.desirable)


# ---- values ---------------------------------------------------------------------------


def test_objectives_follow_the_protocol():
    for objective in (SupervisedLoss(), KTOLoss(), RewardWeightedLoss()):
        assert isinstance(objective, FeedbackObjective)
    assert KTOLoss.needs_reference and not RewardWeightedLoss.needs_reference
    assert isinstance(make_preference_loss("kto", beta=0.3), KTOLoss)
    assert make_preference_loss("kto", beta=0.3).beta == 0.3
    assert isinstance(make_preference_loss("rwl"), RewardWeightedLoss)
    with pytest.raises(ValueError, match="'dpo' is unknown; use one of kto, rwl"):
        make_preference_loss("dpo")
    with pytest.raises(ValueError, match="beta must be a number > 0"):
        KTOLoss(beta=0)


def test_kto_is_half_lambda_at_init_on_both_heads(model):
    """Zero B matrices: policy == reference, so r = 0, z = 0 and the loss is 0.5 * lambda."""
    x = features(6)
    desirable = torch.tensor([True, False, True, True, False, False])
    scored = classify_scored(model, x, torch.tensor([0, 1, 2, 3, 0, 1]), desirable)
    assert torch.equal(scored.logp.detach(), scored.ref_logp)  # exactly the reference
    assert torch.all(scored.kl == 0)
    assert torch.equal(KTOLoss()(scored), torch.full((6,), 0.5))
    weighted = KTOLoss(beta=0.1, lambda_desirable=2.0, lambda_undesirable=0.5)(scored)
    assert torch.allclose(weighted, torch.where(desirable, 1.0, 0.25))
    lm = lm_scored(model, lm_batch(correction=False))
    assert torch.equal(KTOLoss()(lm), torch.full((2,), 0.5))


def test_kto_matches_the_formula_away_from_init():
    logits = torch.tensor([[1.0, -0.5, 0.2], [0.3, 0.9, -1.2], [2.0, 0.0, 0.0]])
    ref_logits = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.5, -0.5], [1.0, 1.0, 0.0]])
    labels, desirable = torch.tensor([0, 1, 2]), torch.tensor([True, False, True])
    beta = 0.5
    got = KTOLoss(beta=beta)(score_labels(logits, labels, ref_logits=ref_logits, desirable=desirable))
    p, q = logits.log_softmax(-1), ref_logits.log_softmax(-1)
    r = p.gather(1, labels[:, None])[:, 0] - q.gather(1, labels[:, None])[:, 0]
    z = max(0.0, float((p.exp() * (p - q)).sum(-1).mean()))
    want = [
        1 - 1 / (1 + math.exp(-beta * (r[0] - z))),
        1 - 1 / (1 + math.exp(-beta * (z - r[1]))),
        1 - 1 / (1 + math.exp(-beta * (r[2] - z))),
    ]
    assert torch.allclose(got, torch.tensor(want), atol=1e-6)


def test_kto_reference_point_is_detached():
    """The gradient of the loss flows through r only; z is a constant."""
    logits = torch.tensor([[1.0, -0.5, 0.2], [0.3, 0.9, -1.2]], requires_grad=True)
    ref_logits = torch.zeros(2, 3)
    labels, desirable = torch.tensor([0, 1]), torch.tensor([True, False])
    KTOLoss(beta=1.0)(score_labels(logits, labels, ref_logits=ref_logits, desirable=desirable)).sum().backward()
    p = logits.detach().log_softmax(-1)
    z = float((p.exp() * (p - ref_logits.log_softmax(-1))).sum(-1).mean())
    x = logits.detach().clone().requires_grad_(True)
    r = x.log_softmax(-1).gather(1, labels[:, None])[:, 0] - ref_logits.log_softmax(-1)[:, 0]
    manual = (1 - torch.sigmoid(r[0] - z)) + (1 - torch.sigmoid(z - r[1]))
    manual.backward()
    assert torch.allclose(logits.grad, x.grad, atol=1e-6)


def test_supervised_lm_loss_is_mean_nll_over_the_correction_only(model):
    batch = lm_batch(correction=True)
    model.train()
    logits = model(tokens=batch.tokens, adapter_ids=ids(2, 0), head="lm")
    got = SupervisedLoss()(score_tokens(logits, batch.targets, batch.mask))
    for row in range(2):
        m = batch.mask[row]
        want = F.cross_entropy(logits[row][m], batch.targets[row][m])
        assert torch.allclose(got[row], want, atol=1e-5)
    # The prompt's tokens carry no loss: changing their targets changes nothing.
    targets = batch.targets.masked_fill(~batch.mask, 7)
    assert torch.equal(SupervisedLoss()(score_tokens(logits, targets, batch.mask)), got)


def test_rwl_is_likelihood_and_unlikelihood():
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0]])
    scored = score_labels(logits, torch.tensor([0, 0]), desirable=torch.tensor([True, False]))
    p = logits.softmax(-1)[0, 0]
    assert torch.allclose(RewardWeightedLoss()(scored), torch.stack([-p.log(), -(1 - p).log()]))
    sure = score_labels(torch.tensor([[50.0, -50.0]]), torch.tensor([0]), desirable=torch.tensor([False]))
    assert torch.isfinite(RewardWeightedLoss(eps=1e-6)(sure)).all()


# ---- gradients and learning -----------------------------------------------------------


@pytest.mark.parametrize("objective", ["supervised", "kto", "rwl", "lm_supervised", "lm_kto"])
def test_gradients_reach_only_the_trained_slot(model, objective):
    adapter = {id(p) for p in model.adapter_parameters()}
    with torch.no_grad():  # non-zero B everywhere, so A gets gradients too
        for p in model.adapter_parameters():
            p.add_(0.01 * torch.randn_like(p))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = _loss(model, objective).mean()
    loss.backward()
    for name, p in model.named_parameters():
        if id(p) in adapter:  # the other head's adapter gets none
            assert p.grad is None or p.grad[1].abs().sum() == 0, f"{name}: gradient leaked into slot 1"
        else:
            assert p.grad is None and not p.requires_grad, f"base parameter {name} got a gradient"
    moved = [p for p in model.adapter_parameters() if p.grad is not None and p.grad[0].abs().sum() > 0]
    assert len(moved) > 10  # attention, router, experts and the head all learn
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())  # nothing stepped


def _loss(model, objective: str) -> torch.Tensor:
    x, labels = features(8, seed=3), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    desirable = torch.tensor([True, False] * 4)
    if objective == "supervised":
        return SupervisedLoss()(classify_scored(model, x, labels, reference=False))
    if objective == "kto":
        return KTOLoss()(classify_scored(model, x, labels, desirable))
    if objective == "rwl":
        return RewardWeightedLoss()(classify_scored(model, x, labels, desirable, reference=False))
    if objective == "lm_supervised":
        return SupervisedLoss()(lm_scored(model, lm_batch(True), reference=False))
    return KTOLoss()(lm_scored(model, lm_batch(False)))


@pytest.mark.parametrize("objective", ["supervised", "kto", "rwl", "lm_supervised", "lm_kto"])
def test_each_loss_decreases_when_trained_on(model, objective):
    opt = torch.optim.AdamW(model.adapter_parameters(), lr=1e-2, weight_decay=0.0)
    losses = []
    for _ in range(12):
        loss = _loss(model, objective).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    final = float(_loss(model, objective).mean().detach())
    assert final < losses[0] - 0.01 * max(1.0, abs(losses[0])), (objective, losses, final)
    assert final < min(losses[:3])


@pytest.mark.parametrize("thumbs_up", [True, False])
def test_kto_moves_probabilities_the_right_way(model, thumbs_up):
    """Training on thumbs up raises pi(y|x) of the rated outputs; thumbs down lowers it.

    One shared adapter serves all eight rows, so a row can be pulled against its rating by
    its neighbours: the mean must move the right way, and nearly every row with it.
    """
    torch.manual_seed(0)  # the fixture's adapter A matrices come from the global generator
    model.reset_adapter(0)
    x, labels = features(8, seed=5), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    desirable = torch.full((8,), thumbs_up)
    opt = torch.optim.AdamW(model.adapter_parameters(), lr=1e-2, weight_decay=0.0)
    start = classify_scored(model, x, labels, desirable).logp.detach()
    for _ in range(10):
        loss = KTOLoss()(classify_scored(model, x, labels, desirable)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    end = classify_scored(model, x, labels, desirable).logp.detach()
    moved = (end - start) if thumbs_up else (start - end)
    assert moved.mean() > 0 and int((moved > 0).sum()) >= 7, (start, end)
