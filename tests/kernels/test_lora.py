"""multi_lora (Triton) vs multi_lora_ref (torch) vs a naive per-row oracle."""

from __future__ import annotations

import pytest
import torch

from kernels import apply_lora, multi_lora, multi_lora_ref

T, K, N, R, L = 37, 48, 40, 4, 3


def make_case(rnd, *, dtype=torch.float32, t=T, n_adapters=L, rank=R, ids=None, with_base=True):
    x = rnd.randn(t, K, dtype=dtype)
    a = rnd.randn(n_adapters, rank, K, dtype=dtype, scale=K**-0.5)
    b = rnd.randn(n_adapters, N, rank, dtype=dtype, scale=rank**-0.5)
    if ids is None:
        ids = rnd.ids(t, -1, n_adapters)  # mixed, every adapter and -1 present
    base = rnd.randn(t, N, dtype=dtype) if with_base else None
    return x, a, b, ids, 0.5, base


def naive_lora(x, a, b, ids, scale, base=None):
    """One row at a time, straight from the definition."""
    rows = []
    for t in range(x.shape[0]):
        row = base[t] if base is not None else x.new_zeros(b.shape[1])
        if ids[t] >= 0:
            row = row + scale * b[ids[t]] @ (a[ids[t]] @ x[t])
        rows.append(row)
    return torch.stack(rows)


def to64(case, requires_grad=False):
    out = []
    for v in case:
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            v = v.double().requires_grad_(requires_grad)
        out.append(v)
    return out


ID_PATTERNS = {
    "mixed": None,  # balanced: the padded batched-matmul path
    "skewed": "skewed",  # one big adapter: the per-adapter loop path
    "all-none": "none",
}


def _ids(pattern, t, n_adapters):
    if pattern == "skewed":
        ids = torch.zeros(t, dtype=torch.long)
        ids[:3] = torch.tensor([-1, n_adapters - 1, 2])
        return ids[torch.randperm(t)]
    if pattern == "none":
        return torch.full((t,), -1, dtype=torch.long)
    return None


# ------------------------------------------------------------------ reference vs oracle


@pytest.mark.parametrize("pattern", ID_PATTERNS)
@pytest.mark.parametrize("with_base", [True, False], ids=["base", "no-base"])
def test_ref_matches_naive_oracle(rnd, pattern, with_base):
    t, n_adapters = (100, 8) if pattern == "skewed" else (T, L)
    ids = _ids(ID_PATTERNS[pattern], t, n_adapters)
    case = to64(make_case(rnd, t=t, n_adapters=n_adapters, ids=ids, with_base=with_base))
    base_before = case[5].clone() if with_base else None
    got = multi_lora_ref(*case)
    torch.testing.assert_close(got, naive_lora(*case), rtol=1e-10, atol=1e-10)
    if with_base:
        assert torch.equal(case[5], base_before)  # not in place


@pytest.mark.parametrize("pattern", ["mixed", "skewed"])
def test_ref_gradients_match_naive_oracle(rnd, pattern):
    t, n_adapters = (100, 8) if pattern == "skewed" else (T, L)
    case = to64(make_case(rnd, t=t, n_adapters=n_adapters, ids=_ids(ID_PATTERNS[pattern], t, n_adapters)), True)
    leaves = [case[0], case[1], case[2], case[5]]
    probe = torch.randn(t, N, dtype=torch.float64)
    got = torch.autograd.grad((multi_lora_ref(*case) * probe).sum(), leaves)
    want = torch.autograd.grad((naive_lora(*case) * probe).sum(), leaves)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)


def test_ref_gradcheck_tiny(rnd):
    x = rnd.randn(5, 6, dtype=torch.float64).requires_grad_()
    a = rnd.randn(3, 2, 6, dtype=torch.float64).requires_grad_()
    b = rnd.randn(3, 4, 2, dtype=torch.float64).requires_grad_()
    ids = torch.tensor([2, -1, 0, 2, 1])
    assert torch.autograd.gradcheck(lambda x, a, b: multi_lora_ref(x, a, b, ids, 0.7), (x, a, b))


# --------------------------------------------------------------- launcher vs reference


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("with_base", [True, False], ids=["base", "no-base"])
@pytest.mark.parametrize("rank", [R, 20], ids=["r4", "r20"])
def test_launcher_matches_ref(rnd, launch_device, dtype, with_base, rank):
    case = make_case(rnd, dtype=dtype, rank=rank, with_base=with_base)
    want = multi_lora_ref(*[v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for v in case])
    x, a, b, ids, scale, base = [v.to(launch_device) if isinstance(v, torch.Tensor) else v for v in case]
    out = torch.full((T, N), float("nan"), dtype=dtype, device=launch_device)
    got = multi_lora(x, a, b, ids, scale, base, out=out)
    assert got.data_ptr() == out.data_ptr()
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    if launch_device.type == "cuda" and dtype == torch.float32:
        tol = 1e-2  # tf32
    torch.testing.assert_close(got.float().cpu(), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("pattern", ["skewed", "all-none"])
def test_launcher_in_place_and_odd_ids(rnd, launch_device, pattern):
    case = make_case(rnd, t=41, ids=_ids(ID_PATTERNS[pattern], 41, L))
    want = multi_lora_ref(*case)
    x, a, b, ids, scale, base = [v.to(launch_device) if isinstance(v, torch.Tensor) else v for v in case]
    got = multi_lora(x, a, b, ids, scale, base, out=base)  # in place on base
    assert got.data_ptr() == base.data_ptr()
    tol = 1e-4 if launch_device.type == "cpu" else 1e-2
    torch.testing.assert_close(got.cpu(), want, rtol=tol, atol=tol)


# ------------------------------------------------------------------------- dispatch


def test_apply_lora_uses_reference_with_autograd(rnd):
    x, a, b, ids, scale, base = make_case(rnd)
    a.requires_grad_()
    out = apply_lora(x, a, b, ids, scale, base)
    out.sum().backward()
    assert a.grad is not None and a.grad.abs().sum() > 0


def test_apply_lora_forced_torch_matches(rnd, monkeypatch):
    monkeypatch.setenv("CL_KERNELS", "torch")
    case = make_case(rnd)
    torch.testing.assert_close(apply_lora(*case), naive_lora(*case), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------- bad inputs


BAD = {
    "x-1d": (lambda c: (c[0][0],) + c[1:], r"x must be \(T, K\)"),
    "a-wrong-K": (lambda c: (c[0], c[1][..., 1:]) + c[2:], rf"a must be \(L, r, K={K}\)"),
    "b-wrong-r": (lambda c: c[:2] + (c[2][..., 1:],) + c[3:], rf"b must be \(L={L}, N, r={R}\)"),
    "b-wrong-L": (lambda c: c[:2] + (c[2][1:],) + c[3:], rf"b must be \(L={L}, N, r={R}\)"),
    "ids-rows": (lambda c: c[:3] + (c[3][1:],) + c[4:], rf"ids must be \(T={T},\)"),
    "ids-float": (lambda c: c[:3] + (c[3].float(),) + c[4:], r"ids must be int64"),
    "ids-too-big": (lambda c: c[:3] + (torch.where(c[3] == 0, L, c[3]),) + c[4:], rf"ids must lie in \[-1, L={L}\)"),
    "ids-below-minus-one": (lambda c: c[:3] + (torch.where(c[3] == 0, -2, c[3]),) + c[4:], r"ids must lie in \[-1"),
    "base-shape": (lambda c: c[:5] + (c[5][:, 1:],), rf"base must be \(T={T}, N={N}\)"),
    "a-dtype": (lambda c: (c[0], c[1].half()) + c[2:], r"a must have x's dtype torch.float32"),
    "x-int": (lambda c: (c[0].long(),) + c[1:], r"x must be a float tensor"),
}


@pytest.mark.parametrize("fn", [multi_lora_ref, multi_lora, apply_lora], ids=["ref", "launcher", "dispatch"])
@pytest.mark.parametrize("case", list(BAD))
def test_bad_inputs_raise_value_error(rnd, fn, case):
    mutate, message = BAD[case]
    with pytest.raises(ValueError, match=message):
        fn(*mutate(tuple(make_case(rnd))))


def test_launcher_rejects_float64_and_bad_out(rnd, launch_device):
    x, a, b, ids, scale, base = [v.to(launch_device) if isinstance(v, torch.Tensor) else v for v in make_case(rnd)]
    with pytest.raises(ValueError, match="expected float32/float16/bfloat16"):
        multi_lora(x.double(), a.double(), b.double(), ids, scale, base.double())
    with pytest.raises(ValueError, match=rf"out must be \({T}, {N}\)"):
        multi_lora(x, a, b, ids, scale, base, out=torch.empty(T, N + 1, device=launch_device))
