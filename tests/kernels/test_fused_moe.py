"""fused_moe (Triton) vs fused_moe_ref (torch) vs a naive per-token oracle."""

from __future__ import annotations

import dataclasses
import importlib

import pytest
import torch
import torch.nn.functional as F

from kernels import ExpertLoRA, fused_moe, fused_moe_ref, moe_experts
from kernels._private.moe_align import moe_align_block_size

# Odd sizes on purpose: nothing is a multiple of a block.
T, K, FF, E, TOPK, R, L = 37, 48, 40, 5, 2, 4, 3


def make_case(rnd, *, dtype=torch.float32, int8=False, lora=False, t=T, k=TOPK, e=E, skew=False):
    """Random inputs of :func:`fused_moe_ref` as ``(args, kwargs)``; every expert routed to."""
    x = rnd.randn(t, K, dtype=dtype)
    if skew:  # every token to expert 0 first: many blocks for one expert
        ids = torch.stack([torch.zeros(t, dtype=torch.long)] + [torch.randint(1, e, (t,)) for _ in range(k - 1)], 1)
    else:
        ids = torch.rand(t, e).argsort(-1)[:, :k].contiguous()  # (t, k) distinct experts per token
        first = min(t, e)
        ids[:first] = (torch.arange(first)[:, None] + torch.arange(k)) % e  # every expert used if t >= e
    wts = torch.softmax(rnd.randn(t, k), -1).to(dtype)
    kwargs = {}
    if int8:
        w13, w2 = rnd.int8(e, 2 * FF, K), rnd.int8(e, K, FF)
        kwargs["w13_scale"] = (torch.rand(e, 2 * FF) + 0.5) / (127 * K**0.5)
        kwargs["w2_scale"] = (torch.rand(e, K) + 0.5) / (127 * FF**0.5)
    else:
        w13, w2 = rnd.randn(e, 2 * FF, K, dtype=dtype, scale=K**-0.5), rnd.randn(e, K, FF, dtype=dtype, scale=FF**-0.5)
    if lora:
        kwargs["lora"] = ExpertLoRA(
            ids=rnd.ids(t, -1, L) if t >= L + 1 else torch.randint(-1, L, (t,)),
            a13=rnd.randn(L, e, R, K, dtype=dtype, scale=K**-0.5),
            b13=rnd.randn(L, e, 2 * FF, R, dtype=dtype, scale=R**-0.5),
            a2=rnd.randn(L, e, R, FF, dtype=dtype, scale=FF**-0.5),
            b2=rnd.randn(L, e, K, R, dtype=dtype, scale=R**-0.5),
            scale=0.75,
        )
    return [x, w13, w2, wts, ids], kwargs


def cast(args, kwargs, dtype=None, device=None, requires_grad=False):
    """Float tensors to ``dtype`` (int8 weights, ids and scales stay), all to ``device``."""

    def conv(v, is_scale=False):
        if not isinstance(v, torch.Tensor):
            return v
        v = v.to(device) if device is not None else v
        if dtype is not None and v.is_floating_point() and not is_scale:
            v = v.to(dtype)
        if requires_grad and v.is_floating_point() and not is_scale:
            v = v.detach().requires_grad_()
        return v

    new_args = [conv(a) for a in args]
    new_kwargs = {n: conv(v, is_scale=n.endswith("_scale")) for n, v in kwargs.items() if n != "lora"}
    if "lora" in kwargs:
        lo = kwargs["lora"]
        new_kwargs["lora"] = dataclasses.replace(
            lo, ids=conv(lo.ids), a13=conv(lo.a13), b13=conv(lo.b13), a2=conv(lo.a2), b2=conv(lo.b2)
        )
    return new_args, new_kwargs


def naive_moe(x, w13, w2, topk_weights, topk_ids, *, w13_scale=None, w2_scale=None, lora=None):
    """Per token, per choice, straight from the definition."""
    W13 = w13.to(x.dtype) * w13_scale.to(x.dtype)[..., None] if w13_scale is not None else w13
    W2 = w2.to(x.dtype) * w2_scale.to(x.dtype)[..., None] if w2_scale is not None else w2
    Fh = W13.shape[1] // 2
    rows = []
    for t in range(x.shape[0]):
        acc = torch.zeros_like(x[t])
        for j in range(topk_ids.shape[1]):
            e = int(topk_ids[t, j])
            gu = W13[e] @ x[t]  # (2F,)
            l = int(lora.ids[t]) if lora is not None else -1
            if l >= 0:
                gu = gu + lora.scale * lora.b13[l, e] @ (lora.a13[l, e] @ x[t])
            h = F.silu(gu[:Fh]) * gu[Fh:]
            y = W2[e] @ h
            if l >= 0:
                y = y + lora.scale * lora.b2[l, e] @ (lora.a2[l, e] @ h)
            acc = acc + topk_weights[t, j] * y
        rows.append(acc)
    return torch.stack(rows)


VARIANTS = {
    "plain": {},
    "int8": {"int8": True},
    "lora": {"lora": True},
    "int8+lora": {"int8": True, "lora": True},
}


# ------------------------------------------------------------------ reference vs oracle


@pytest.mark.parametrize("variant", VARIANTS)
def test_ref_matches_naive_oracle(rnd, variant):
    args, kwargs = cast(*make_case(rnd, **VARIANTS[variant]), dtype=torch.float64)
    torch.testing.assert_close(fused_moe_ref(*args, **kwargs), naive_moe(*args, **kwargs), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("variant", ["plain", "lora"])
def test_ref_gradients_match_naive_oracle(rnd, variant):
    args, kwargs = cast(*make_case(rnd, **VARIANTS[variant]), dtype=torch.float64, requires_grad=True)
    leaves = [a for a in args if a.requires_grad]
    if "lora" in kwargs:
        lo = kwargs["lora"]
        leaves += [lo.a13, lo.b13, lo.a2, lo.b2]
    probe = torch.randn(args[0].shape, dtype=torch.float64)
    got = torch.autograd.grad((fused_moe_ref(*args, **kwargs) * probe).sum(), leaves)
    want = torch.autograd.grad((naive_moe(*args, **kwargs) * probe).sum(), leaves)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-9)


def test_ref_gradcheck_tiny(rnd):
    t, k_dim, f_dim, e, lo_n, r = 4, 6, 5, 3, 2, 2
    d = torch.float64
    w13, w2 = rnd.randn(e, 2 * f_dim, k_dim, dtype=d), rnd.randn(e, k_dim, f_dim, dtype=d)
    ids = torch.tensor([[0, 2], [1, 0], [2, 1], [0, 1]])
    lora_ids = torch.tensor([1, -1, 0, 1])
    b13, a2 = rnd.randn(lo_n, e, 2 * f_dim, r, dtype=d), rnd.randn(lo_n, e, r, f_dim, dtype=d)
    leaves = (
        rnd.randn(t, k_dim, dtype=d).requires_grad_(),  # x
        rnd.randn(t, 2, dtype=d).requires_grad_(),  # topk_weights
        rnd.randn(lo_n, e, r, k_dim, dtype=d).requires_grad_(),  # a13
        rnd.randn(lo_n, e, k_dim, r, dtype=d).requires_grad_(),  # b2
    )

    def f(x, wts, a13, b2):
        lora = ExpertLoRA(ids=lora_ids, a13=a13, b13=b13, a2=a2, b2=b2, scale=0.5)
        return fused_moe_ref(x, w13, w2, wts, ids, lora=lora)

    assert torch.autograd.gradcheck(f, leaves)


# --------------------------------------------------------------- launcher vs reference


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_launcher_matches_ref(rnd, launch_device, dtype, variant):
    args, kwargs = make_case(rnd, dtype=dtype, **VARIANTS[variant])
    want = fused_moe_ref(*cast(args, kwargs, dtype=torch.float32)[0], **cast(args, kwargs, dtype=torch.float32)[1])
    args, kwargs = cast(args, kwargs, device=launch_device)
    out = torch.full((T, K), float("nan"), dtype=dtype, device=launch_device)
    got = fused_moe(*args, **kwargs, out=out)
    assert got.data_ptr() == out.data_ptr() and got.dtype == dtype
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    if launch_device.type == "cuda" and dtype == torch.float32:
        tol = {"rtol": 1e-2, "atol": 1e-2}  # tl.dot runs fp32 as tf32 on GPUs
    torch.testing.assert_close(got.float().cpu(), want, **tol)


@pytest.mark.parametrize(
    "case", [{"skew": True, "t": 41}, {"t": 1, "k": 1}, {"t": 3, "k": 3}], ids=["one-hot-expert", "T1-k1", "T3-k3"]
)
def test_launcher_odd_routing(rnd, launch_device, case):
    args, kwargs = make_case(rnd, **case)
    want = fused_moe_ref(*args, **kwargs)
    args, kwargs = cast(args, kwargs, device=launch_device)
    got = fused_moe(*args, **kwargs)
    atol = 1e-4 if launch_device.type == "cpu" else 1e-2
    torch.testing.assert_close(got.cpu(), want, rtol=atol, atol=atol)


def test_moe_align_block_size_invariants(rnd):
    ids = torch.randint(0, E, (T, TOPK))
    ids[:, 0] = 2  # one expert with several blocks
    block_m = 8
    blocks = moe_align_block_size(ids, E, block_m)
    used = int(blocks.num_padded)
    sorted_ids = blocks.sorted_ids[:used].long()
    real = sorted_ids[sorted_ids < ids.numel()]
    assert sorted(real.tolist()) == list(range(ids.numel()))  # every pair exactly once
    assert (blocks.sorted_ids[used:] == ids.numel()).all()
    for b in range(used // block_m):
        chunk = sorted_ids[b * block_m : (b + 1) * block_m]
        chunk = chunk[chunk < ids.numel()]
        assert len(chunk) and (ids.view(-1)[chunk] == blocks.block_expert[b]).all()
    assert (blocks.block_expert[used // block_m :] == -1).all()
    counts = torch.bincount(ids.view(-1), minlength=E)
    assert used == int(((counts + block_m - 1) // block_m * block_m).sum())


# ------------------------------------------------------------------------- dispatch


def test_dispatch_uses_reference_with_autograd_on_cpu(rnd):
    args, kwargs = make_case(rnd, lora=True)
    args, kwargs = cast(args, kwargs, requires_grad=True)
    out = moe_experts(*args, **kwargs)
    assert out.grad_fn is not None
    out.sum().backward()
    assert kwargs["lora"].a13.grad is not None and args[0].grad is not None


def test_dispatch_forced_triton_runs_the_launcher(rnd, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("CL_KERNELS", "triton")
    args, kwargs = make_case(rnd, t=5)
    calls = []
    mod = importlib.import_module("kernels.fused_moe")  # ``kernels.fused_moe`` is also the function

    real = mod.fused_moe
    monkeypatch.setattr(mod, "fused_moe", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    with torch.no_grad():
        got = moe_experts(*args, **kwargs)
    assert calls == [1]
    torch.testing.assert_close(got, fused_moe_ref(*args, **kwargs), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------- bad inputs


def _bad_cases():
    def mut(i, fn):
        def apply(args, kwargs):
            args = list(args)
            args[i] = fn(args[i])
            return args, kwargs

        return apply

    def kw(name, fn):
        def apply(args, kwargs):
            return args, {**kwargs, name: fn(args, kwargs)}

        return apply

    return {
        "x-3d": (mut(0, lambda x: x[None]), r"x must be \(T, K\)"),
        "x-int": (mut(0, lambda x: x.long()), r"x must be a float tensor"),
        "w13-odd-rows": (mut(1, lambda w: w[:, 1:]), rf"w13 must be \(E, 2F, K={K}\)"),
        "w13-wrong-K": (mut(1, lambda w: w[..., 1:]), rf"w13 must be \(E, 2F, K={K}\)"),
        "w2-wrong": (mut(2, lambda w: w[:, :, 1:]), rf"w2 must be \(E={E}, K={K}, F={FF}\)"),
        "w13-dtype": (mut(1, lambda w: w.double()), r"w13 must have x's dtype torch.float32"),
        "weights-shape": (mut(3, lambda w: w[:, :1]), rf"topk_weights must be a float tensor of shape \({T}, {TOPK}\)"),
        "ids-float": (mut(4, lambda i: i.float()), r"topk_ids must be int64"),
        "ids-rows": (mut(4, lambda i: i[1:]), rf"topk_ids must be \(T={T}, k\)"),
        "ids-too-big": (mut(4, lambda i: torch.where(i == 0, E, i)), rf"topk_ids must lie in \[0, E={E}\)"),
        "ids-negative": (mut(4, lambda i: torch.where(i == 0, -1, i)), rf"topk_ids must lie in \[0, E={E}\)"),
        "scale-not-int8": (kw("w13_scale", lambda a, k: torch.ones(E, 2 * FF)), r"w13 must be int8"),
        "lora-ids-range": (
            kw("lora", lambda a, k: dataclasses.replace(k["lora"], ids=torch.full((T,), L))),
            rf"lora.ids must lie in \[-1, L={L}\)",
        ),
        "lora-wrong-K": (
            kw("lora", lambda a, k: _lora_like(k["lora"], K + 1)),
            rf"lora must have a13 \(L, E={E}, r, K={K}\)",
        ),
    }


def _lora_like(lo, k_dim):
    return ExpertLoRA(
        ids=lo.ids,
        a13=torch.ones(L, E, R, k_dim),
        b13=lo.b13,
        a2=lo.a2,
        b2=torch.ones(L, E, k_dim, R),
        scale=1.0,
    )


@pytest.mark.parametrize("fn", [fused_moe_ref, fused_moe, moe_experts], ids=["ref", "launcher", "dispatch"])
@pytest.mark.parametrize("case", list(_bad_cases()))
def test_bad_inputs_raise_value_error(rnd, fn, case):
    mutate, message = _bad_cases()[case]
    args, kwargs = mutate(*make_case(rnd, lora=True))
    with pytest.raises(ValueError, match=message):
        fn(*args, **kwargs)


def test_expert_lora_rejects_inconsistent_shapes():
    ok = dict(ids=torch.zeros(3, dtype=torch.long), a13=torch.ones(2, 4, 3, 8), b13=torch.ones(2, 4, 10, 3))
    ExpertLoRA(**ok, a2=torch.ones(2, 4, 3, 5), b2=torch.ones(2, 4, 8, 3), scale=1.0)
    with pytest.raises(ValueError, match=r"expected shapes .*'a2': \(2, 4, 3, 5\)"):
        ExpertLoRA(**ok, a2=torch.ones(2, 4, 3, 6), b2=torch.ones(2, 4, 8, 3), scale=1.0)
    with pytest.raises(ValueError, match=r"ids must be a \(T,\) int64"):
        ExpertLoRA(**{**ok, "ids": torch.zeros(3)}, a2=torch.ones(2, 4, 3, 5), b2=torch.ones(2, 4, 8, 3), scale=1.0)


def test_launcher_rejects_cpu_without_interpreter(rnd, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    args, kwargs = make_case(rnd, t=4)
    with pytest.raises(ValueError, match="expected CUDA tensors"):
        fused_moe(*args, **kwargs)
