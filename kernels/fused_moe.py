"""Fused Mixture-of-Experts MLP: SiLU-gated experts, top-k routing, optional int8 and LoRA.

For token ``t`` routed to experts ``topk_ids[t]`` with weights ``topk_weights[t]``::

    out[t] = sum_j topk_weights[t, j] * w2[e] @ (silu(w13[e, :F] @ x[t]) * (w13[e, F:] @ x[t])),
    e = topk_ids[t, j]

Four layers, as for every kernel in this package:

* ``_fused_moe_kernel``: Triton grouped GEMM over stacked expert weights; rows
  are (token, expert) pairs grouped into per-expert blocks. One constexpr-flagged
  kernel serves gate+up (both halves in one pass, SiLU·up fused) and down
  (times the routing weight), with fp16/bf16/fp32 or int8 weights dequantised
  in the GEMM.
* :func:`fused_moe`: the launcher; checks inputs, picks block sizes, aligns the
  pairs, runs the two GEMMs and the combine over ``k``.
* :func:`fused_moe_ref`: plain torch, autograd-capable; CPU path and test oracle.
* :func:`moe_experts`: the dispatch function the model calls.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels._private.dispatch import autocast_operands, check_ids_enabled, triton_usable
from kernels._private.moe_align import moe_align_block_size
from kernels._private.triton_compat import cdiv, check_launch_device, interpreting, lazy_jit, scratch, tl
from kernels.lora import ExpertLoRA, grouped_lora_delta, multi_lora  # ExpertLoRA re-exported

__all__ = ["ExpertLoRA", "fused_moe", "fused_moe_ref", "moe_experts"]

_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)  # float64: gradcheck


# --------------------------------------------------------------------------- Triton


@lazy_jit
def _fused_moe_kernel(
    a_ptr,
    w_ptr,
    scale_ptr,
    out_ptr,
    topk_weights_ptr,
    sorted_ids_ptr,
    block_expert_ptr,
    num_padded_ptr,
    num_pairs,
    N,
    K,
    up_offset,
    stride_am,
    stride_ak,
    stride_we,
    stride_wn,
    stride_wk,
    stride_se,
    stride_sn,
    stride_om,
    stride_on,
    A_ROW_DIV: tl.constexpr,
    GATED: tl.constexpr,
    FUSE_ACT: tl.constexpr,
    MUL_ROUTED_WEIGHT: tl.constexpr,
    INT8_W: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Grouped GEMM ``out[pair, n] = a[pair // A_ROW_DIV] . w[expert(pair), n]``.

    One program owns BLOCK_M pairs of one expert and BLOCK_N output columns.
    GATED: also computes the up half (rows ``up_offset + n`` of ``w``) in the
    same K loop; FUSE_ACT then stores ``silu(gate) * up`` (else gate at column
    ``n`` and up at ``up_offset + n``). INT8_W: ``w`` is int8, dequantised by the
    per-output-channel ``scale[e, n]``. MUL_ROUTED_WEIGHT: multiplies row ``pair``
    by ``topk_weights[pair]``.
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    if pid_m * BLOCK_M >= tl.load(num_padded_ptr):
        return
    expert = tl.load(block_expert_ptr + pid_m).to(tl.int64)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pairs = tl.load(sorted_ids_ptr + offs_m)  # (BM,) padding holds num_pairs
    row_mask = pairs < num_pairs
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = offs_n < N
    offs_k = tl.arange(0, BLOCK_K)

    a_ptrs = a_ptr + (pairs // A_ROW_DIV)[:, None] * stride_am + offs_k[None, :] * stride_ak  # (BM, BK)
    w_ptrs = w_ptr + expert * stride_we + offs_n[None, :] * stride_wn + offs_k[:, None] * stride_wk  # (BK, BN)
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
    if GATED:
        acc_up = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_mask = (k0 + offs_k) < K
        a = tl.load(a_ptrs, mask=row_mask[:, None] & k_mask[None, :], other=0.0)
        w_mask = k_mask[:, None] & col_mask[None, :]
        w = tl.load(w_ptrs, mask=w_mask, other=0)
        if INT8_W:
            w = w.to(a.dtype)  # exact: |int8| <= 127
        acc = tl.dot(a, w, acc)
        if GATED:
            w_up = tl.load(w_ptrs + up_offset * stride_wn, mask=w_mask, other=0)
            if INT8_W:
                w_up = w_up.to(a.dtype)
            acc_up = tl.dot(a, w_up, acc_up)
        a_ptrs += BLOCK_K * stride_ak
        w_ptrs += BLOCK_K * stride_wk

    if INT8_W:  # per-output-channel scale factors out of the K sum
        s_ptrs = scale_ptr + expert * stride_se + offs_n * stride_sn
        acc *= tl.load(s_ptrs, mask=col_mask, other=0.0).to(tl.float32)[None, :]
        if GATED:
            acc_up *= tl.load(s_ptrs + up_offset * stride_sn, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    if MUL_ROUTED_WEIGHT:
        acc *= tl.load(topk_weights_ptr + pairs, mask=row_mask, other=0.0).to(tl.float32)[:, None]

    out_ptrs = out_ptr + pairs[:, None] * stride_om + offs_n[None, :] * stride_on
    out_mask = row_mask[:, None] & col_mask[None, :]
    if GATED:
        if FUSE_ACT:
            acc = acc / (1.0 + tl.exp(-acc)) * acc_up  # silu(gate) * up
        else:
            tl.store(out_ptrs + up_offset * stride_on, acc_up.to(out_ptr.dtype.element_ty), mask=out_mask)
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=out_mask)


# ------------------------------------------------------------------------- checks


def _check_fused_moe(name, x, w13, w2, topk_weights, topk_ids, w13_scale, w2_scale, lora, check_ids=True) -> None:
    """Raises ValueError naming the expected shape/dtype of the first bad argument.

    ``check_ids`` adds the range checks of ``topk_ids`` and ``lora.ids`` (one host sync).
    """
    if x.dim() != 2:
        raise ValueError(f"{name}: x must be (T, K), got shape {tuple(x.shape)}")
    if x.dtype not in _FLOATS:
        raise ValueError(f"{name}: x must be a float tensor (float32/float16/bfloat16/float64), got {x.dtype}")
    T, K = x.shape
    if w13.dim() != 3 or w13.shape[2] != K or w13.shape[1] % 2:
        raise ValueError(f"{name}: w13 must be (E, 2F, K={K}) (gate rows then up rows), got {tuple(w13.shape)}")
    E, F2, _ = w13.shape
    if w2.shape != (E, K, F2 // 2):
        raise ValueError(f"{name}: w2 must be (E={E}, K={K}, F={F2 // 2}), got {tuple(w2.shape)}")
    if topk_ids.dim() != 2 or topk_ids.shape[0] != T:
        raise ValueError(f"{name}: topk_ids must be (T={T}, k), got {tuple(topk_ids.shape)}")
    if topk_ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{name}: topk_ids must be int64 (or int32), got {topk_ids.dtype}")
    if topk_weights.shape != topk_ids.shape or not topk_weights.is_floating_point():
        raise ValueError(
            f"{name}: topk_weights must be a float tensor of shape {tuple(topk_ids.shape)} like topk_ids, "
            f"got {tuple(topk_weights.shape)} {topk_weights.dtype}"
        )
    for wname, w, sname, s, rows in (("w13", w13, "w13_scale", w13_scale, F2), ("w2", w2, "w2_scale", w2_scale, K)):
        if s is None and w.dtype != x.dtype:
            raise ValueError(f"{name}: {wname} must have x's dtype {x.dtype} (or be int8 with {sname}), got {w.dtype}")
        if s is not None:
            if w.dtype != torch.int8:
                raise ValueError(f"{name}: {sname} is given, so {wname} must be int8, got {w.dtype}")
            if s.shape != (E, rows) or not s.is_floating_point():
                raise ValueError(f"{name}: {sname} must be a float ({E}, {rows}), got {tuple(s.shape)} {s.dtype}")
    if lora is not None:
        if not isinstance(lora, ExpertLoRA):
            raise ValueError(f"{name}: lora must be an ExpertLoRA, got {type(lora).__name__}")
        L, E_l, r, K_l = lora.a13.shape
        if (E_l, K_l, lora.b13.shape[2], lora.ids.shape[0]) != (E, K, F2, T):
            raise ValueError(
                f"{name}: lora must have a13 (L, E={E}, r, K={K}), b13 (L, E, 2F={F2}, r), ids (T={T},); "
                f"got a13 {tuple(lora.a13.shape)}, b13 {tuple(lora.b13.shape)}, ids {tuple(lora.ids.shape)}"
            )
        bad = {n: t.dtype for n, t in zip(("a13", "b13", "a2", "b2"), lora.tensors()[1:]) if t.dtype != x.dtype}
        if bad:
            raise ValueError(f"{name}: lora weights must have x's dtype {x.dtype}, got {bad}")
    if T and check_ids:
        checks = [topk_ids.min(), topk_ids.max()]
        if lora is not None:
            checks += [lora.ids.min(), lora.ids.max()]
        vals = torch.stack(checks).tolist()  # one host sync
        if vals[0] < 0 or vals[1] >= E:
            raise ValueError(f"{name}: topk_ids must lie in [0, E={E}), got values in [{vals[0]}, {vals[1]}]")
        if lora is not None and (vals[2] < -1 or vals[3] >= lora.a13.shape[0]):
            raise ValueError(
                f"{name}: lora.ids must lie in [-1, L={lora.a13.shape[0]}), got values in [{vals[2]}, {vals[3]}]"
            )


# -------------------------------------------------------------------------- launcher


def _pick_blocks(num_pairs: int, num_experts: int, dtype: torch.dtype) -> dict[str, int]:
    """Block sizes and launch options: small blocks for decode, bigger for prefill."""
    if interpreting():  # CPU interpreter: fewer, fatter programs run faster
        return {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32}
    wide = dtype == torch.float32  # 4-byte tiles: halve BLOCK_K to stay within shared memory
    if num_pairs <= 32 * num_experts:  # few rows per expert: memory bound on the weights
        return {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 64 if wide else 128, "num_warps": 4, "num_stages": 4}
    return {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32 if wide else 64, "num_warps": 4, "num_stages": 3}


def _launch_gemm(
    a, w, scale, out, topk_weights, blocks, num_pairs, n_out, cfg, *, a_row_div, gated, fuse_act=False, mul_rw=False
):
    """Runs ``_fused_moe_kernel`` over all aligned blocks and ``n_out`` output columns."""
    n_blocks_m = blocks.block_expert.numel()
    grid = (n_blocks_m, cdiv(n_out, cfg["BLOCK_N"]))
    s = scale if scale is not None else out  # never read when INT8_W is False
    _fused_moe_kernel[grid](
        a,
        w,
        s,
        out,
        topk_weights,
        blocks.sorted_ids,
        blocks.block_expert,
        blocks.num_padded,
        num_pairs,
        n_out,
        a.shape[1],
        n_out if gated else 0,
        a.stride(0),
        a.stride(1),
        w.stride(0),
        w.stride(1),
        w.stride(2),
        s.stride(0),
        s.stride(1),
        out.stride(0),
        out.stride(1),
        A_ROW_DIV=a_row_div,
        GATED=gated,
        FUSE_ACT=fuse_act,
        MUL_ROUTED_WEIGHT=mul_rw,
        INT8_W=scale is not None,
        **cfg,
    )


def fused_moe(
    x: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    *,
    w13_scale: torch.Tensor | None = None,
    w2_scale: torch.Tensor | None = None,
    lora: ExpertLoRA | None = None,
    out: torch.Tensor | None = None,
    check_ids: bool = True,
) -> torch.Tensor:
    """Triton fused MoE MLP (no autograd); same maths as :func:`fused_moe_ref`.

    Pairs are aligned into per-expert blocks of BLOCK_M rows
    (``moe_align_block_size``). Without LoRA: GEMM 1 computes gate and up in one
    pass and stores ``silu(gate) * up`` ``(T*k, F)``; GEMM 2 computes the down
    projection times the routing weight ``(T*k, K)``; a sum over ``k`` combines.
    With LoRA the path is staged: GEMM 1 stores the gate/up pre-activation, the
    Triton multi-LoRA adds the per-(adapter, expert) delta, SiLU·up runs in torch,
    then GEMM 2, the LoRA delta of the down projection, the routing weight and
    the combine.

    Args:
        x: ``(T, K)`` tokens, fp16/bf16/fp32 (fp16/fp32 under the interpreter).
        w13: ``(E, 2F, K)`` stacked gate (rows ``[0:F]``) and up projections.
        w2: ``(E, K, F)`` stacked down projections.
        topk_weights: ``(T, k)`` routing weights.
        topk_ids: ``(T, k)`` int64 experts in ``[0, E)``.
        w13_scale: ``(E, 2F)`` per-output-channel scale; makes ``w13`` int8.
        w2_scale: ``(E, K)`` per-output-channel scale; makes ``w2`` int8.
        lora: Optional :class:`ExpertLoRA`.
        out: Optional ``(T, K)`` output buffer in x's dtype.
        check_ids: Range-check ``topk_ids`` and ``lora.ids`` (one host sync).
            With False the launch is sync-free (CUDA-graph capturable) and
            out-of-range ids are undefined behaviour.

    Returns:
        ``(T, K)`` tensor in x's dtype.

    Raises:
        ValueError: Bad shapes, dtypes, devices, or ids out of range.
        RuntimeError: Triton is not installed.
    """
    _check_fused_moe("fused_moe", x, w13, w2, topk_weights, topk_ids, w13_scale, w2_scale, lora, check_ids)
    named = {"x": x, "w13": w13, "w2": w2, "topk_weights": topk_weights, "topk_ids": topk_ids}
    named.update({n: t for n, t in (("w13_scale", w13_scale), ("w2_scale", w2_scale)) if t is not None})
    if lora is not None:
        named.update(zip(("lora.ids", "lora.a13", "lora.b13", "lora.a2", "lora.b2"), lora.tensors()))
    device = check_launch_device("fused_moe", named)
    T, K = x.shape
    E, F2, _ = w13.shape
    Fh, k = F2 // 2, topk_ids.shape[1]
    if out is None:
        out = torch.empty((T, K), dtype=x.dtype, device=device)
    elif out.shape != (T, K) or out.dtype != x.dtype or out.device != device:
        raise ValueError(
            f"fused_moe: out must be ({T}, {K}) {x.dtype} on {device}, "
            f"got {tuple(out.shape)} {out.dtype} on {out.device}"
        )
    if T == 0:
        return out

    P = T * k
    cfg = _pick_blocks(P, E, x.dtype)
    blocks = moe_align_block_size(topk_ids, E, cfg["BLOCK_M"])
    weights = topk_weights.reshape(P).contiguous()  # (P,)

    def gate_up(dest: torch.Tensor, fuse_act: bool) -> None:  # x rows are tokens: pair // k
        _launch_gemm(x, w13, w13_scale, dest, weights, blocks, P, Fh, cfg, a_row_div=k, gated=True, fuse_act=fuse_act)

    def down(h: torch.Tensor, dest: torch.Tensor, routed: bool) -> None:  # h rows are pairs
        _launch_gemm(h, w2, w2_scale, dest, weights, blocks, P, K, cfg, a_row_div=1, gated=False, mul_rw=routed)

    if lora is None:
        h = scratch((P, Fh), dtype=x.dtype, device=device)  # silu(gate) * up per pair
        gate_up(h, fuse_act=True)
        y = scratch((P, K), dtype=x.dtype, device=device)  # routed expert outputs, times the routing weight
        down(h, y, routed=True)
    else:
        L, _, r, _ = lora.a13.shape
        tok = torch.arange(P, device=device) // k  # (P,) token of each pair
        pair_ids = lora.ids.long().index_select(0, tok)  # (P,)
        slot = torch.where(pair_ids >= 0, pair_ids * E + topk_ids.reshape(P).long(), -1)  # (P,) in [-1, L*E)
        gu = scratch((P, F2), dtype=x.dtype, device=device)  # gate/up pre-activation
        gate_up(gu, fuse_act=False)
        xp = x.index_select(0, tok)  # (P, K)
        a13, b13 = lora.a13.reshape(L * E, r, K), lora.b13.reshape(L * E, F2, r)
        multi_lora(xp, a13, b13, slot, lora.scale, gu, out=gu, check_ids=False)  # slots valid by construction
        h = F.silu(gu[:, :Fh]) * gu[:, Fh:]  # (P, F)
        y = scratch((P, K), dtype=x.dtype, device=device)
        down(h, y, routed=False)
        a2, b2 = lora.a2.reshape(L * E, r, Fh), lora.b2.reshape(L * E, K, r)
        multi_lora(h, a2, b2, slot, lora.scale, y, out=y, check_ids=False)
        y.mul_(weights.to(y.dtype)[:, None])
    return torch.sum(y.view(T, k, K), dim=1, out=out)


# ------------------------------------------------------------------------- reference


def _expert_matmul(a: torch.Tensor, w: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """``a @ w.T`` with ``w`` in a's dtype or int8 times a per-row ``scale``."""
    if scale is None:
        return a @ w.T
    return (a @ w.to(a.dtype).T) * scale.to(a.dtype)


def fused_moe_ref(
    x: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    *,
    w13_scale: torch.Tensor | None = None,
    w2_scale: torch.Tensor | None = None,
    lora: ExpertLoRA | None = None,
) -> torch.Tensor:
    """Torch fused MoE MLP: the CPU path, the training path and the test oracle.

    Sorts the ``T*k`` (token, expert) pairs by expert once, then runs one fused
    gate/up matmul and one down matmul per active expert on a contiguous slice,
    and scatters the routed outputs back with ``index_add``. Autograd-capable
    (``x``, float weights, ``topk_weights`` and the LoRA weights).

    Args:
        x: ``(T, K)`` tokens.
        w13: ``(E, 2F, K)`` stacked gate (rows ``[0:F]``) and up projections.
        w2: ``(E, K, F)`` stacked down projections.
        topk_weights: ``(T, k)`` routing weights.
        topk_ids: ``(T, k)`` int64 experts in ``[0, E)``.
        w13_scale: ``(E, 2F)`` per-output-channel scale; makes ``w13`` int8.
        w2_scale: ``(E, K)`` per-output-channel scale; makes ``w2`` int8.
        lora: Optional :class:`ExpertLoRA`.

    Returns:
        ``(T, K)`` tensor in x's dtype.

    Raises:
        ValueError: Bad shapes or dtypes, or ids out of range.

    Example:
        >>> x = torch.ones(2, 3)
        >>> w13 = torch.ones(4, 2, 3)   # E=4 experts, F=1
        >>> w2 = torch.ones(4, 3, 1)
        >>> ids, wts = torch.tensor([[0, 3], [2, 2]]), torch.full((2, 2), 0.5)
        >>> fused_moe_ref(x, w13, w2, wts, ids)  # silu(3) * 3 per expert
        tensor([[8.5732, 8.5732, 8.5732],
                [8.5732, 8.5732, 8.5732]])
    """
    _check_fused_moe("fused_moe_ref", x, w13, w2, topk_weights, topk_ids, w13_scale, w2_scale, lora)
    T, K = x.shape
    E, F2, _ = w13.shape
    Fh, k = F2 // 2, topk_ids.shape[1]
    flat = topk_ids.reshape(-1).long()  # (P,)
    if flat.numel() == 0:
        return x.new_zeros((T, K)) + 0 * x.sum()  # keeps the graph for autograd
    order = torch.argsort(flat, stable=True)  # (P,) pairs grouped by expert
    counts = torch.bincount(flat, minlength=E).tolist()  # host sync, (E,)
    tok = order // k  # (P,) token of each sorted pair
    xs = x.index_select(0, tok)  # (P, K)
    ids = lora.ids.index_select(0, tok) if lora is not None else None  # (P,)

    outs = []
    start = 0
    for e, n in enumerate(counts):
        if n == 0:
            continue
        xe = xs[start : start + n]  # (n, K)
        gu = _expert_matmul(xe, w13[e], None if w13_scale is None else w13_scale[e])  # (n, 2F)
        if lora is not None:
            delta = grouped_lora_delta(xe, lora.a13[:, e], lora.b13[:, e], ids[start : start + n])  # (n, 2F)
            gu = gu.add(delta, alpha=lora.scale)
        h = F.silu(gu[:, :Fh]) * gu[:, Fh:]  # (n, F)
        y = _expert_matmul(h, w2[e], None if w2_scale is None else w2_scale[e])  # (n, K)
        if lora is not None:
            delta = grouped_lora_delta(h, lora.a2[:, e], lora.b2[:, e], ids[start : start + n])  # (n, K)
            y = y.add(delta, alpha=lora.scale)
        outs.append(y)
        start += n
    y = torch.cat(outs) * topk_weights.reshape(-1).index_select(0, order).to(x.dtype)[:, None]  # (P, K)
    return x.new_zeros((T, K)).index_add(0, tok, y)


# -------------------------------------------------------------------------- dispatch


def moe_experts(
    x: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    *,
    w13_scale: torch.Tensor | None = None,
    w2_scale: torch.Tensor | None = None,
    lora: ExpertLoRA | None = None,
) -> torch.Tensor:
    """The MoE expert computation the model calls.

    Runs :func:`fused_moe` (Triton) when the tensors are on CUDA, Triton is
    importable and no gradient is needed; otherwise :func:`fused_moe_ref`.
    ``CL_KERNELS=torch`` forces the reference; ``CL_KERNELS_CHECK_IDS=0`` skips
    the launcher's id range checks (a host sync), keeping decode sync-free.
    Under ``torch.autocast`` the float activations and weights (LoRA included)
    are cast to its dtype first, as for a matmul; int8 weights and the scales
    are left as they are. Arguments and result as :func:`fused_moe_ref`.

    Raises:
        ValueError: Bad shapes, dtypes or ids.
    """
    x, w13, w2 = autocast_operands(x, w13, w2)
    if lora is not None and torch.is_autocast_enabled(x.device.type):
        ids, *weights = lora.tensors()
        lora = ExpertLoRA(ids, *autocast_operands(*weights), lora.scale)
    lora_tensors = lora.tensors() if lora is not None else ()
    if triton_usable(x, w13, w2, topk_weights, topk_ids, w13_scale, w2_scale, lora_tensors):
        return fused_moe(
            x,
            w13,
            w2,
            topk_weights,
            topk_ids,
            w13_scale=w13_scale,
            w2_scale=w2_scale,
            lora=lora,
            check_ids=check_ids_enabled(),
        )
    return fused_moe_ref(x, w13, w2, topk_weights, topk_ids, w13_scale=w13_scale, w2_scale=w2_scale, lora=lora)
