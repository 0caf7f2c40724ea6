"""Int8 weight-only quantisation with symmetric per-output-channel scales.

A weight ``(..., N, K)`` is stored as int8 ``q`` plus a scale per output channel ``(..., N)``
with ``w ≈ q * scale[..., None]`` and ``scale = max|w_row| / 127``.

>>> import torch
>>> w = torch.randn(3, 5, 7)
>>> q, s = quantize_int8(w)
>>> q.dtype, tuple(s.shape)
(torch.int8, (3, 5))
>>> bool((dequantize_int8(q, s) - w).abs().max() <= s.max() / 2 + 1e-6)
True
"""

from __future__ import annotations

import torch
from torch import nn


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantise along the last dim (input channels), one scale per output channel.

    Args:
        w: ``(..., N, K)`` floating weights.

    Returns:
        ``(q, scale)``: ``(..., N, K)`` int8 in ``[-127, 127]`` and ``(..., N)`` float32.
    """
    w = w.detach().float()
    scale = (w.abs().amax(-1) / 127.0).clamp_min(1e-12)  # (..., N)
    q = torch.round(w / scale[..., None]).clamp_(-127, 127).to(torch.int8)  # (..., N, K)
    return q, scale


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`quantize_int8`: ``(..., N, K)`` float32 weights."""
    return q.float() * scale[..., None]


def quantize_experts_int8(model: nn.Module) -> int:
    """Store every MoE layer's routed expert weights as int8 (LoRA stays on top, in float).

    Args:
        model: A module containing :class:`~cl.model.moe.MoE` layers.

    Returns:
        How many MoE layers were quantised now (already int8 layers are skipped).
    """
    from cl.model.moe import MoE  # moe imports this module

    done = 0
    for module in model.modules():
        if isinstance(module, MoE) and not module.is_int8:
            module.quantize_int8()
            done += 1
    return done
