"""Under ``torch.autocast`` the dispatchers cast their float operands, as autocast casts a matmul's:
a bfloat16 base with float32 adapters trains, and the adapters get float32 gradients."""

from __future__ import annotations

import pytest
import torch

from kernels import ExpertLoRA, apply_lora, moe_experts, multi_lora_ref
from kernels.fused_moe import fused_moe_ref


def test_apply_lora_in_autocast_mixes_a_bfloat16_base_with_float32_adapters(rnd):
    x, base = rnd.randn(7, 12), rnd.randn(7, 5).to(torch.bfloat16)
    a = rnd.randn(3, 2, 12, scale=0.3).requires_grad_()
    b = rnd.randn(3, 5, 2, scale=0.3).requires_grad_()
    ids = torch.tensor([0, 1, 2, -1, 0, 1, 2])
    with pytest.raises(ValueError, match="dtype"):  # without autocast: one dtype, as before
        apply_lora(x, a, b, ids, 0.5, base)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = apply_lora(x, a, b, ids, 0.5, base)  # (7, 5)
    assert out.dtype == torch.bfloat16
    want = multi_lora_ref(x, a.detach(), b.detach(), ids, 0.5, base.float())
    torch.testing.assert_close(out.float(), want, rtol=3e-2, atol=3e-2)
    out.float().sum().backward()
    assert a.grad.dtype == b.grad.dtype == torch.float32 and b.grad.abs().sum() > 0


def test_moe_experts_in_autocast_gives_float32_expert_lora_grads(rnd):
    T, E, k, d, f, L, r = 6, 4, 2, 16, 8, 2, 2
    x = rnd.randn(T, d)
    w13, w2 = rnd.randn(E, 2 * f, d, scale=0.25).bfloat16(), rnd.randn(E, d, f, scale=0.3).bfloat16()
    wts, ids = torch.rand(T, E).softmax(-1).topk(k)
    lw = [
        rnd.randn(*s, scale=0.3).requires_grad_() for s in ((L, E, r, d), (L, E, 2 * f, r), (L, E, r, f), (L, E, d, r))
    ]
    lora = ExpertLoRA(torch.tensor([0, 1, -1, 0, 1, 1]), *lw, 0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = moe_experts(x, w13, w2, wts, ids, lora=lora)  # (T, d)
    want = fused_moe_ref(
        x, w13.float(), w2.float(), wts, ids, lora=ExpertLoRA(lora.ids, *(t.detach() for t in lw), 0.5)
    )
    torch.testing.assert_close(out.float(), want, rtol=5e-2, atol=5e-2)
    out.float().square().sum().backward()
    assert all(t.grad is not None and t.grad.dtype == torch.float32 for t in lw)
