"""Multi-adapter LoRA: every row of a batch picks its own low-rank adapter.

``out[t] = base[t] + scale * B[ids[t]] @ (A[ids[t]] @ x[t])``, rows with
``ids[t] == -1`` keep ``base[t]``. Adapters are stacked, ``A: (L, r, K)`` and
``B: (L, N, r)``, and picked by integer id (S-LoRA / Punica "SGMV" style).

Four layers, as for every kernel in this package:

* ``_multi_lora_kernel``: Triton, one program per (block of rows sharing an
  adapter, block of output columns); shrink ``x @ A.T`` then expand ``@ B.T``.
* :func:`multi_lora`: the launcher; checks inputs, groups rows by adapter.
* :func:`multi_lora_ref`: plain torch, autograd-capable; the CPU path and the
  test oracle.
* :func:`apply_lora`: the dispatch function the model calls.

:class:`ExpertLoRA` holds the per-expert adapters that :mod:`kernels.fused_moe`
applies with this kernel, one slot per (adapter, expert).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kernels._private.dispatch import autocast_operands, check_ids_enabled, triton_usable
from kernels._private.moe_align import moe_align_block_size
from kernels._private.triton_compat import cdiv, check_launch_device, lazy_jit, next_pow2, tl

__all__ = ["ExpertLoRA", "apply_lora", "multi_lora", "multi_lora_ref"]

_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)  # float64: gradcheck


# --------------------------------------------------------------------------- Triton


@lazy_jit
def _multi_lora_kernel(
    x_ptr,
    a_ptr,
    b_ptr,
    base_ptr,
    out_ptr,
    sorted_rows_ptr,
    block_group_ptr,
    num_padded_ptr,
    T,
    N,
    K,
    R,
    scale,
    stride_xt,
    stride_xk,
    stride_al,
    stride_ar,
    stride_ak,
    stride_bl,
    stride_bn,
    stride_br,
    stride_base_t,
    stride_base_n,
    stride_ot,
    stride_on,
    HAS_BASE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    """One (row block, column block): ``out = base + scale * (x @ A[l].T) @ B[l].T``.

    Rows were grouped by ``moe_align_block_size(ids + 1)``: group 0 holds the rows
    without adapter (written as ``base``), group ``g > 0`` adapter ``g - 1``.
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    if pid_m * BLOCK_M >= tl.load(num_padded_ptr):
        return
    adapter = tl.load(block_group_ptr + pid_m) - 1  # -1: rows without adapter

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rows = tl.load(sorted_rows_ptr + offs_m)  # (BM,) padding rows hold T
    row_mask = rows < T
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = offs_n < N
    offs_r = tl.arange(0, BLOCK_R)
    offs_k = tl.arange(0, BLOCK_K)

    delta = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
    if adapter >= 0:
        shrink = tl.full((BLOCK_M, BLOCK_R), 0.0, tl.float32)  # x @ A[l].T
        for k0 in range(0, K, BLOCK_K):
            k_mask = (k0 + offs_k) < K
            x_blk = tl.load(
                x_ptr + rows[:, None] * stride_xt + (k0 + offs_k)[None, :] * stride_xk,
                mask=row_mask[:, None] & k_mask[None, :],
                other=0.0,
            )  # (BM, BK)
            a_blk = tl.load(
                a_ptr + adapter * stride_al + offs_r[None, :] * stride_ar + (k0 + offs_k)[:, None] * stride_ak,
                mask=(offs_r[None, :] < R) & k_mask[:, None],
                other=0.0,
            )  # (BK, BR)
            shrink = tl.dot(x_blk, a_blk, shrink)
        b_blk = tl.load(
            b_ptr + adapter * stride_bl + offs_n[None, :] * stride_bn + offs_r[:, None] * stride_br,
            mask=(offs_r[:, None] < R) & col_mask[None, :],
            other=0.0,
        )  # (BR, BN)
        delta = tl.dot(shrink.to(b_blk.dtype), b_blk) * scale

    out_mask = row_mask[:, None] & col_mask[None, :]
    if HAS_BASE:
        base = tl.load(
            base_ptr + rows[:, None] * stride_base_t + offs_n[None, :] * stride_base_n, mask=out_mask, other=0.0
        )
        delta += base.to(tl.float32)
    tl.store(
        out_ptr + rows[:, None] * stride_ot + offs_n[None, :] * stride_on,
        delta.to(out_ptr.dtype.element_ty),
        mask=out_mask,
    )


# ---------------------------------------------------------------- expert adapters


@dataclass(frozen=True)
class ExpertLoRA:
    """Per-token LoRA adapters on every expert's gate/up and down projections.

    Pair (token ``t``, expert ``e``) with ``l = ids[t] >= 0`` gets
    ``scale * b13[l, e] @ (a13[l, e] @ x_t)`` added to its gate/up pre-activation
    and ``scale * b2[l, e] @ (a2[l, e] @ h)`` added to its down output.

    Attributes:
        ids: ``(T,)`` int64 adapter slot per token, -1 = no adapter.
        a13: ``(L, E, r, K)`` A of the gate/up projection.
        b13: ``(L, E, 2F, r)`` B of the gate/up projection (rows ``[0:F]`` gate).
        a2: ``(L, E, r, F)`` A of the down projection.
        b2: ``(L, E, K, r)`` B of the down projection.
        scale: LoRA scaling (``alpha / r``).

    Raises:
        ValueError: The four weights disagree on ``L``, ``E`` or ``r``, or
            ``ids`` is not a 1-D integer tensor.
    """

    ids: torch.Tensor
    a13: torch.Tensor
    b13: torch.Tensor
    a2: torch.Tensor
    b2: torch.Tensor
    scale: float

    def __post_init__(self) -> None:
        problems = []
        if self.ids.dim() != 1 or self.ids.dtype not in (torch.int64, torch.int32):
            problems.append(f"ids must be a (T,) int64 tensor, got {tuple(self.ids.shape)} {self.ids.dtype}")
        shapes = {name: tuple(getattr(self, name).shape) for name in ("a13", "b13", "a2", "b2")}
        if any(len(s) != 4 for s in shapes.values()):
            problems.append(f"a13, b13, a2, b2 must all be 4-D (L, E, ., .), got {shapes}")
        else:
            L, E, r, K = shapes["a13"]
            F2 = shapes["b13"][2]
            expected = {"a13": (L, E, r, K), "b13": (L, E, F2, r), "a2": (L, E, r, F2 // 2), "b2": (L, E, K, r)}
            if F2 % 2 or shapes != expected:
                problems.append(f"expected shapes {expected} (from a13 and b13), got {shapes}")
        if problems:
            raise ValueError("ExpertLoRA: " + "; ".join(problems))

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """All tensor fields, e.g. for device and ``requires_grad`` checks."""
        return (self.ids, self.a13, self.b13, self.a2, self.b2)


# ------------------------------------------------------------------------- checks


def _check_multi_lora(
    name: str,
    x: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    ids: torch.Tensor,
    base: torch.Tensor | None,
    check_ids: bool = True,
) -> None:
    """Raises ValueError naming the expected shape/dtype of the first bad argument.

    ``check_ids`` adds the range check of ``ids`` (one host sync).
    """
    if x.dim() != 2:
        raise ValueError(f"{name}: x must be (T, K), got shape {tuple(x.shape)}")
    T, K = x.shape
    if a.dim() != 3 or a.shape[2] != K:
        raise ValueError(f"{name}: a must be (L, r, K={K}), got shape {tuple(a.shape)}")
    L, r, _ = a.shape
    if b.dim() != 3 or b.shape[0] != L or b.shape[2] != r:
        raise ValueError(f"{name}: b must be (L={L}, N, r={r}), got shape {tuple(b.shape)}")
    N = b.shape[1]
    if ids.shape != (T,):
        raise ValueError(f"{name}: ids must be (T={T},), got shape {tuple(ids.shape)}")
    if ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{name}: ids must be int64 (or int32), got {ids.dtype}")
    if base is not None and base.shape != (T, N):
        raise ValueError(f"{name}: base must be (T={T}, N={N}), got shape {tuple(base.shape)}")
    if x.dtype not in _FLOATS:
        raise ValueError(f"{name}: x must be a float tensor (float32/float16/bfloat16/float64), got {x.dtype}")
    for arg, t in (("a", a), ("b", b), ("base", base)):
        if t is not None and t.dtype != x.dtype:
            raise ValueError(f"{name}: {arg} must have x's dtype {x.dtype}, got {t.dtype}")
    if T and check_ids:
        lo, hi = torch.stack([ids.min(), ids.max()]).tolist()  # one host sync
        if lo < -1 or hi >= L:
            raise ValueError(f"{name}: ids must lie in [-1, L={L}) (-1 = no adapter), got values in [{lo}, {hi}]")


# -------------------------------------------------------------------------- launcher


def multi_lora(
    x: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    ids: torch.Tensor,
    scale: float,
    base: torch.Tensor | None = None,
    *,
    out: torch.Tensor | None = None,
    check_ids: bool = True,
) -> torch.Tensor:
    """Triton multi-adapter LoRA: ``base + scale * (x @ a[ids].T) @ b[ids].T`` row-wise.

    Rows are grouped by adapter (padded to the block height) and one program
    computes a block of rows times a block of output columns: the shrink
    ``x @ A.T`` in fp32, cast to the input dtype, then the expand ``@ B.T``, added
    to ``base``. No autograd.

    Args:
        x: ``(T, K)`` activations, on CUDA (or CPU under ``TRITON_INTERPRET=1``).
        a: ``(L, r, K)`` stacked LoRA A matrices.
        b: ``(L, N, r)`` stacked LoRA B matrices.
        ids: ``(T,)`` int64 adapter per row in ``[-1, L)``; -1 = no adapter.
        scale: LoRA scaling (``alpha / r``).
        base: ``(T, N)`` output of the base layer, or None for zeros.
        out: Optional ``(T, N)`` output buffer; may be ``base`` itself (in place).
        check_ids: Range-check ``ids`` (one host sync). With False, out-of-range
            ids are undefined behaviour; the launch is then sync-free.

    Returns:
        ``(T, N)`` tensor in x's dtype.

    Raises:
        ValueError: Bad shapes, dtypes, devices, or ids out of range.
        RuntimeError: Triton is not installed.
    """
    _check_multi_lora("multi_lora", x, a, b, ids, base, check_ids)
    T, K = x.shape
    L, r, _ = a.shape
    N = b.shape[1]
    tensors = {"x": x, "a": a, "b": b, "ids": ids}
    if base is not None:
        tensors["base"] = base
    device = check_launch_device("multi_lora", tensors)
    if out is None:
        out = torch.empty((T, N), dtype=x.dtype, device=device)
    elif out.shape != (T, N) or out.dtype != x.dtype or out.device != device:
        raise ValueError(
            f"multi_lora: out must be ({T}, {N}) {x.dtype} on {device}, "
            f"got {tuple(out.shape)} {out.dtype} on {out.device}"
        )
    if T == 0 or N == 0:
        return out

    block_m = 16 if T <= 256 else 32 if T <= 4096 else 64
    block_n = max(16, min(64, next_pow2(N)))
    block_k = max(16, min(64, next_pow2(K)))
    block_r = max(16, next_pow2(r))
    # Group 0 collects the rows without adapter, so every row is written once.
    blocks = moe_align_block_size((ids + 1).view(T, 1), L + 1, block_m)
    base_arg = base if base is not None else out  # never read when HAS_BASE is False
    grid = (blocks.block_expert.numel(), cdiv(N, block_n))
    _multi_lora_kernel[grid](
        x,
        a,
        b,
        base_arg,
        out,
        blocks.sorted_ids,
        blocks.block_expert,
        blocks.num_padded,
        T,
        N,
        K,
        r,
        float(scale),
        x.stride(0),
        x.stride(1),
        a.stride(0),
        a.stride(1),
        a.stride(2),
        b.stride(0),
        b.stride(1),
        b.stride(2),
        base_arg.stride(0),
        base_arg.stride(1),
        out.stride(0),
        out.stride(1),
        HAS_BASE=base is not None,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        BLOCK_R=block_r,
    )
    return out


# ------------------------------------------------------------------------- reference


def grouped_lora_delta(
    x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, ids: torch.Tensor, *, name: str = "grouped_lora_delta"
) -> torch.Tensor:
    """Unscaled ``(x @ a[ids].T) @ b[ids].T`` per row, rows grouped by adapter.

    Rows are sorted by adapter once. When the groups are balanced enough (the
    usual case) one gather lays them out as a padded ``(L, M, K)`` batch, two
    batched matmuls run every adapter at once and one gather brings the results
    back to row order: a fixed ~15 ops whatever ``L``, which is what matters at
    LoRA sizes. Otherwise one matmul pair runs per non-empty adapter on
    contiguous slices. Never a per-row loop or a per-row gather of weights.
    Autograd-capable. Expects inputs of valid shapes; checks the id range itself
    (for free: it reads it off the group counts).

    Args:
        x: ``(T, K)``.
        a: ``(L, r, K)``.
        b: ``(L, N, r)``.
        ids: ``(T,)`` in ``[-1, L)``.
        name: Caller's name, for the error message.

    Returns:
        ``(T, N)`` deltas in row order; exactly zero for rows with id -1.

    Raises:
        ValueError: An id outside ``[-1, L)``.
    """
    T, K = x.shape
    L, N = a.shape[0], b.shape[1]
    group = ids.long() + 1  # (T,) group 0 = rows without adapter, g = adapter g - 1
    try:
        counts = torch.bincount(group, minlength=L + 1).tolist()  # host sync, (L + 1,) if ids are valid
    except RuntimeError:  # negative input
        counts = []
    if len(counts) != L + 1:  # the range check rides on bincount: no extra ops when ids are valid
        lo, hi = torch.stack([ids.min(), ids.max()]).tolist()
        raise ValueError(f"{name}: ids must lie in [-1, L={L}) (-1 = no adapter), got values in [{lo}, {hi}]")
    skip = counts[0]  # rows without adapter sort first
    n = T - skip
    if n == 0:
        return x.new_zeros((T, N))
    counts = counts[1:]
    sorted_group, order = torch.sort(group, stable=True)  # (T,), (T,)
    longest = max(counts)
    if L * longest > 2 * n + 64:  # skewed: padding would waste too much, loop over adapters
        xs = x.index_select(0, order[skip:])  # (n, K) grouped by adapter
        parts = [
            torch.matmul(torch.matmul(chunk, a[g].T), b[g].T)  # (count, N)
            for g, chunk in enumerate(torch.split(xs, counts))
            if counts[g]
        ]
        return x.new_zeros((T, N)).index_copy(0, order[skip:], torch.cat(parts))
    shift, start = [0], skip  # sorted position i of adapter g -> slot g * M + (i - start_g)
    for g, c in enumerate(counts):
        shift.append(g * longest - start)
        start += c
    slot = torch.arange(T, device=x.device) + torch.tensor(shift, device=x.device)[sorted_group]  # (T,) sorted order
    if skip:
        slot[:skip] = 0  # rows without adapter read slot 0 and get zeroed below
    src = torch.zeros(L * longest, dtype=torch.long, device=x.device).index_copy_(0, slot[skip:], order[skip:])
    row_slot = torch.empty_like(slot).index_copy_(0, order, slot)  # (T,) slot of each row, row order
    padded = x.index_select(0, src).view(L, longest, K)  # padding rows repeat row order[0], never read back
    y = torch.bmm(torch.bmm(padded, a.mT), b.mT).view(L * longest, N)  # (L*M, N)
    delta = y.index_select(0, row_slot)  # (T, N)
    if skip:
        delta.index_fill_(0, order[:skip], 0.0)  # fine for autograd: index_select keeps no output
    return delta


def multi_lora_ref(
    x: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    ids: torch.Tensor,
    scale: float,
    base: torch.Tensor | None = None,
) -> torch.Tensor:
    """Torch multi-adapter LoRA: ``base + scale * (x @ a[ids].T) @ b[ids].T`` row-wise.

    Autograd-capable (gradients reach ``x``, ``a``, ``b`` and ``base``); ``base``
    is not modified. Rows are grouped by adapter: one sort, then batched matmuls
    (see :func:`grouped_lora_delta`).

    Args:
        x: ``(T, K)`` activations.
        a: ``(L, r, K)`` stacked LoRA A matrices.
        b: ``(L, N, r)`` stacked LoRA B matrices.
        ids: ``(T,)`` int64 adapter per row in ``[-1, L)``; -1 = no adapter.
        scale: LoRA scaling (``alpha / r``).
        base: ``(T, N)`` output of the base layer, or None for zeros.

    Returns:
        ``(T, N)`` tensor in x's dtype.

    Raises:
        ValueError: Bad shapes or dtypes, or ids out of range.

    Example:
        >>> x = torch.ones(3, 4)
        >>> a = torch.ones(2, 1, 4)          # L=2 adapters of rank 1
        >>> b = torch.stack([torch.ones(2, 1), 2 * torch.ones(2, 1)])  # N=2
        >>> multi_lora_ref(x, a, b, torch.tensor([1, -1, 0]), scale=0.5)
        tensor([[4., 4.],
                [0., 0.],
                [2., 2.]])
    """
    _check_multi_lora("multi_lora_ref", x, a, b, ids, base, check_ids=False)
    delta = grouped_lora_delta(x, a, b, ids, name="multi_lora_ref")  # (T, N), checks the id range
    return delta * scale if base is None else torch.add(base, delta, alpha=scale)


# -------------------------------------------------------------------------- dispatch


def apply_lora(
    x: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    ids: torch.Tensor,
    scale: float,
    base: torch.Tensor | None = None,
) -> torch.Tensor:
    """Multi-adapter LoRA, the function the model calls.

    Runs :func:`multi_lora` (Triton) when the tensors are on CUDA, Triton is
    importable and no gradient is needed; otherwise :func:`multi_lora_ref`.
    ``CL_KERNELS=torch`` forces the reference; ``CL_KERNELS_CHECK_IDS=0`` skips
    the launcher's id range check (a host sync).

    Args:
        x: ``(T, K)`` activations.
        a: ``(L, r, K)`` stacked LoRA A matrices.
        b: ``(L, N, r)`` stacked LoRA B matrices.
        ids: ``(T,)`` int64 adapter per row in ``[-1, L)``; -1 = no adapter.
        scale: LoRA scaling (``alpha / r``).
        base: ``(T, N)`` output of the base layer, or None for zeros.

    Under ``torch.autocast`` the float inputs are cast to its dtype first (as for a matmul).

    Returns:
        ``(T, N)`` tensor in x's dtype; ``base`` is never modified.

    Raises:
        ValueError: Bad shapes, dtypes or ids.
    """
    x, a, b, base = autocast_operands(x, a, b, base)
    if triton_usable(x, a, b, ids, base):
        return multi_lora(x, a, b, ids, scale, base, check_ids=check_ids_enabled())
    return multi_lora_ref(x, a, b, ids, scale, base)
