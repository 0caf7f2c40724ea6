"""GPU kernels for the MoE model, each with a plain-torch reference.

Every kernel comes in four layers (see ``docs/benchmarks.md`` for speed):
a Triton kernel, its launcher (``fused_moe``, ``multi_lora``), a torch reference
that is also the CPU and training path (``fused_moe_ref``, ``multi_lora_ref``),
and the dispatch function the model calls (``moe_experts``, ``apply_lora``),
which picks Triton on CUDA without autograd and the reference otherwise.
``CL_KERNELS=torch`` forces the references. Importing this package needs only
torch; Triton is optional.
"""

from kernels.fused_moe import fused_moe, fused_moe_ref, moe_experts
from kernels.lora import ExpertLoRA, apply_lora, multi_lora, multi_lora_ref

__all__ = [
    "ExpertLoRA",
    "apply_lora",
    "fused_moe",
    "fused_moe_ref",
    "moe_experts",
    "multi_lora",
    "multi_lora_ref",
]
