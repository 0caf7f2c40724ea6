"""The Triton kernels compile for an H100/H200 (sm_90) with no GPU present.

The interpreter runs the kernels' Python, not Triton's code generator: scoping
of constexpr branches, loop-carried values, dtypes of ``tl.dot`` operands and
shared-memory use are only checked by a real compile. ``triton.compile`` with an
explicit target runs the whole pipeline down to a cubin (Triton ships ptxas), so
this catches those errors on a CPU-only machine.
"""

from __future__ import annotations

import pytest
import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from kernels.fused_moe import _fused_moe_kernel, _pick_blocks
from kernels.lora import _multi_lora_kernel

SM90 = GPUTarget("cuda", 90, 32)
SM90_SHARED_BYTES = 227 * 1024  # opt-in shared memory per block on H100/H200


def _compile(kernel, pointers: dict[str, str], constexprs: dict, options: dict):
    fn = kernel.jitted()
    signature = {
        name: "constexpr" if name in constexprs else pointers.get(name, "fp32" if name == "scale" else "i32")
        for name in fn.arg_names
    }
    return triton.compile(ASTSource(fn, signature, constexprs), target=SM90, options=options)


@pytest.mark.parametrize(
    ("dtype", "num_pairs", "stage"),
    [("bf16", 8, "gate_up"), ("fp32", 8, "gate_up"), ("bf16", 32768, "down_int8")],
    ids=["bf16-decode-gate_up", "fp32-decode-gate_up", "bf16-prefill-down-int8"],
)
def test_fused_moe_kernel_compiles_for_sm90(monkeypatch, dtype, num_pairs, stage):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    cfg = _pick_blocks(num_pairs, 64, {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype])
    launch = {k: cfg.pop(k) for k in ("num_warps", "num_stages")}
    gated = stage == "gate_up"
    int8 = stage.endswith("int8")
    flags = dict(A_ROW_DIV=8 if gated else 1, GATED=gated, FUSE_ACT=gated, MUL_ROUTED_WEIGHT=not gated, INT8_W=int8)
    pointers = {
        "a_ptr": f"*{dtype}",
        "w_ptr": "*i8" if int8 else f"*{dtype}",
        "scale_ptr": "*fp32",
        "out_ptr": f"*{dtype}",
        "topk_weights_ptr": f"*{dtype}",
        "sorted_ids_ptr": "*i32",
        "block_expert_ptr": "*i32",
        "num_padded_ptr": "*i32",
    }
    compiled = _compile(_fused_moe_kernel, pointers, {**flags, **cfg}, launch)
    assert compiled.metadata.shared <= SM90_SHARED_BYTES


def test_multi_lora_kernel_compiles_for_sm90():
    pointers = {name: "*bf16" for name in ("x_ptr", "a_ptr", "b_ptr", "base_ptr", "out_ptr")}
    pointers.update({name: "*i32" for name in ("sorted_rows_ptr", "block_group_ptr", "num_padded_ptr")})
    constexprs = dict(HAS_BASE=True, BLOCK_M=16, BLOCK_N=64, BLOCK_K=64, BLOCK_R=16)
    compiled = _compile(_multi_lora_kernel, pointers, constexprs, {"num_warps": 4})
    assert compiled.metadata.shared <= SM90_SHARED_BYTES
