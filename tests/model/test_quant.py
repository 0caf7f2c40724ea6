"""Int8 weight-only expert weights, with LoRA on top."""

from __future__ import annotations

import torch

from cl.model import ModelConfig, MoETransformer, dequantize_int8, quantize_int8


def test_quantize_round_trip_error_is_half_a_step() -> None:
    w = torch.randn(4, 6, 9) * 3
    q, s = quantize_int8(w)
    assert q.dtype == torch.int8 and s.shape == (4, 6)
    assert q.abs().max() == 127  # every row uses the full range
    err = (dequantize_int8(q, s) - w).abs()
    assert (err <= s[..., None] / 2 + 1e-6).all()


def test_int8_experts_close_to_float(model: MoETransformer, cfg: ModelConfig, randomize_adapter, tokens) -> None:
    randomize_adapter(model, 1, std=0.1)
    t, f = tokens(3, 8), torch.randn(3, cfg.n_features)
    ids = torch.tensor([1, -1, 1])
    ref = [model(tokens=t, head="lm", adapter_ids=ids), model(features=f, adapter_ids=ids)]
    assert model.quantize_experts_int8() == cfg.n_layers
    moe = model.blocks[0].moe
    assert moe.w13.dtype == torch.int8 and moe.w2.dtype == torch.int8 and moe.is_int8
    out = [model(tokens=t, head="lm", adapter_ids=ids), model(features=f, adapter_ids=ids)]
    for a, b in zip(ref, out):
        rel = (a - b).norm() / a.norm()
        assert 0 < rel < 0.02, rel
    assert model.quantize_experts_int8() == 0  # already done


def test_int8_config_flag_and_lora_still_trains(cfg: ModelConfig) -> None:
    torch.manual_seed(0)
    m = MoETransformer(cfg.replace(int8_experts=True)).train()
    assert all(b.moe.is_int8 for b in m.blocks)
    assert "blocks.0.moe.w13_scale" in m.state_dict()
    m(features=torch.randn(2, cfg.n_features), adapter_ids=torch.zeros(2, dtype=torch.long)).sum().backward()
    assert m.blocks[0].moe.b13.grad is not None and m.blocks[0].moe.b13.grad[0].abs().sum() > 0


def test_merge_into_int8_experts(model: MoETransformer, cfg: ModelConfig, randomize_adapter) -> None:
    model.quantize_experts_int8()
    randomize_adapter(model, 0, std=0.1)
    f = torch.randn(3, cfg.n_features)
    before = model(features=f, adapter_ids=torch.zeros(3, dtype=torch.long))
    model.merge_adapter(0)
    after = model(features=f)
    assert (after - before).norm() / before.norm() < 0.02  # re-quantisation rounding only
