"""Auxiliary-loss-free load balancing and the expert-load metrics."""

from __future__ import annotations

import math

import torch

from cl.model import ModelConfig, MoETransformer, Router


def _skewed_router(cfg: ModelConfig, seed: int = 0, strength: float = 1.0) -> tuple[Router, torch.Tensor, torch.Tensor]:
    """A router whose expert 0 wins for nearly every token, a fixed batch, the input direction."""
    g = torch.Generator().manual_seed(seed)
    router = Router(cfg)
    u = torch.randn(cfg.d_model, generator=g)
    u = u / u.norm()
    with torch.no_grad():
        router.proj.weight.normal_(0.0, 0.3, generator=g)
        router.proj.weight[0] += 4.0 * strength * u  # tokens lie along u: expert 0's logit is large
        router.proj.weight[1] += 2.0 * strength * u
    fixed = torch.randn(512, cfg.d_model, generator=g) + 2.0 * u  # (N, d)
    return router, fixed, u


def _violation(router: Router, x: torch.Tensor) -> float:
    router.eval()
    router.reset_stats()
    router(x, None)
    return float(router.load_stats()["max_violation"])


def test_bias_evens_out_a_skewed_router() -> None:
    cfg = ModelConfig.preset("tiny", balance_rate=0.01)
    router, fixed, u = _skewed_router(cfg)
    before = _violation(router, fixed)
    assert before > 0.6, before  # expert 0 takes about half of all top-2 picks
    g = torch.Generator().manual_seed(1)
    router.train()
    for _ in range(300):
        router(torch.randn(256, cfg.d_model, generator=g) + 2.0 * u, None)
    after = _violation(router, fixed)
    assert after < 0.2, (before, after)
    bias = router.balance_bias[0]
    assert bias[0] < bias[2] and bias[0] < bias[3]  # the overloaded expert was pushed down


def test_gate_weights_ignore_the_bias() -> None:
    cfg = ModelConfig.preset("tiny", top_k=2)
    router, fixed, _ = _skewed_router(cfg)
    router.eval()
    x = fixed[:16]
    with torch.no_grad():
        router.balance_bias[0] = torch.tensor([-100.0, -100.0, 0.0, 0.0])  # force experts 2 and 3
    weights, experts = router(x, None)
    assert set(experts.flatten().tolist()) == {2, 3}
    scores = router.proj(x, None).sigmoid()
    expected = scores.gather(-1, experts)
    torch.testing.assert_close(weights, expected / expected.sum(-1, keepdim=True))
    torch.testing.assert_close(weights.sum(-1), torch.ones(16))


def test_softmax_scores_work() -> None:
    cfg = ModelConfig.preset("tiny", router_score="softmax", balance_rate=0.01)
    # Milder skew: softmax squashes the losers' scores to ~0, and experts whose scores are
    # all ~0 can only be told apart by the bias, which a sign update makes oscillate.
    router, fixed, u = _skewed_router(cfg, seed=3, strength=0.3)
    before = _violation(router, fixed)
    assert before > 0.5, before
    router.train()
    g = torch.Generator().manual_seed(2)
    for _ in range(300):
        router(torch.randn(256, cfg.d_model, generator=g) + 2.0 * u, None)
    assert _violation(router, fixed) < min(0.25, before / 2)


def test_manual_balance_updates_only_when_asked() -> None:
    cfg = ModelConfig.preset("tiny", balance_rate=0.05, balance_auto=False)
    router, fixed, _ = _skewed_router(cfg)
    router.train()
    router(fixed, None)
    assert torch.count_nonzero(router.balance_bias) == 0
    router.update_balance()
    assert router.balance_bias[0, 0] == -0.05  # expert 0 overloaded -> nudged down by the rate
    assert torch.count_nonzero(router.balance_bias[1:]) == 0  # slots saw no tokens


def test_eval_forward_never_moves_the_bias(cfg: ModelConfig) -> None:
    router, fixed, _ = _skewed_router(cfg)
    router.eval()
    for _ in range(3):
        router(fixed, None)
    router.update_balance()
    assert torch.count_nonzero(router.balance_bias) == 0


def test_training_a_slot_moves_only_that_slots_bias(cfg: ModelConfig, tokens) -> None:
    torch.manual_seed(0)
    model = MoETransformer(cfg.replace(balance_rate=0.01)).train()
    model(tokens=tokens(4, 8), adapter_ids=torch.full((4,), 2), head="lm")
    for block in model.blocks:
        bias = block.moe.router.balance_bias  # (L+1, E): row 0 base, row s+1 slot s
        assert torch.count_nonzero(bias[3]) > 0
        assert torch.count_nonzero(bias[[0, 1, 2, 4]]) == 0
    assert any(k.endswith("router.balance_bias") for k in model.adapter_state(2))


def test_expert_load_stats(model: MoETransformer, cfg: ModelConfig, tokens) -> None:
    t = tokens(3, 9)
    t[0, 5:] = 256  # padding is not counted
    model.reset_expert_load_stats()
    model(tokens=t, head="lm")
    stats = model.expert_load_stats()
    assert set(stats) == {f"layer{i}" for i in range(cfg.n_layers)}
    for layer in stats.values():
        assert layer["tokens"] == 3 * 9 - 4
        assert len(layer["share"]) == cfg.n_experts
        assert math.isclose(sum(layer["share"]), 1.0, rel_tol=1e-9)
        expected = max(layer["share"]) * cfg.n_experts - 1.0
        assert math.isclose(layer["max_violation"], expected, rel_tol=1e-9, abs_tol=1e-12)
        assert 0.0 < layer["entropy"] <= layer["max_entropy"] == math.log(cfg.n_experts)
    model(features=torch.randn(2, cfg.n_features))
    assert model.expert_load_stats()["layer0"]["tokens"] == 3 * 9 - 4 + 2 * (cfg.n_features + 1)
    model.reset_expert_load_stats()
    assert model.expert_load_stats()["layer0"]["tokens"] == 0


def test_bookkeeping_stays_float32_under_bfloat16(cfg: ModelConfig, tokens) -> None:
    torch.manual_seed(0)
    model = MoETransformer(cfg.replace(balance_rate=1e-3)).to(torch.bfloat16).train()
    out = model(tokens=tokens(2, 6), adapter_ids=torch.zeros(2, dtype=torch.long), head="lm")
    assert out.dtype == torch.bfloat16
    out.float().logsumexp(-1).mean().backward()
    router = model.blocks[0].moe.router
    assert router.balance_bias.dtype == torch.float32
    steps = router.balance_bias[1].abs()  # one update: each entry is 0 or exactly the rate
    assert steps.max() > 0
    assert torch.all((steps == 0) | torch.isclose(steps, torch.tensor(1e-3), rtol=1e-6, atol=0))
