"""Mixture-of-Experts feed-forward layer: routed SwiGLU experts plus an optional shared one.

Routed expert weights are stacked, ``w13: (E, 2F, d)`` (rows ``[0:F]`` gate, ``[F:2F]`` up)
and ``w2: (E, d, F)``, and run by :func:`kernels.moe_experts` with every token sent to all
of its top-k experts (dropless: no capacity limit, no token dropped). Per-expert LoRA
adapters are stacked the same way per slot (the :class:`kernels.ExpertLoRA` tensors).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cl.model.config import ModelConfig
from cl.model.lora import LoRALinear, init_lora_a_
from cl.model.quant import dequantize_int8, quantize_int8
from cl.model.router import Router
from kernels import ExpertLoRA, moe_experts


class SharedExpert(nn.Module):
    """One always-on SwiGLU MLP ``w2(silu(gate(x)) * up(x))`` with LoRA on both maps.

    The same module is a dense block's MLP (``target="mlp"``). ``w13`` stacks the gate rows
    over the up rows, as the routed experts do. With ``gated`` (Qwen2-MoE) the output is
    scaled by ``sigmoid(gate . x)``, one learned scalar gate per token.
    """

    def __init__(self, cfg: ModelConfig, d_ff: int | None = None, target: str = "shared_expert") -> None:
        super().__init__()
        width = d_ff or cfg.shared_d_ff or cfg.d_ff
        rank = cfg.lora_rank if cfg.has_lora(target) else 0
        kw = dict(n_slots=cfg.n_adapter_slots, rank=rank, alpha=cfg.lora_alpha, init_std=cfg.init_std)
        self.w13 = LoRALinear(cfg.d_model, 2 * width, **kw)
        self.w2 = LoRALinear(width, cfg.d_model, **kw)
        gated = target == "shared_expert" and cfg.shared_gate
        self.gate = nn.Linear(cfg.d_model, 1, bias=False) if gated else None

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
        """``x: (N, d)``, ``ids: (N,)`` or None -> ``(N, d)``."""
        gate, up = self.w13(x, ids).chunk(2, dim=-1)  # (N, F) each
        out = self.w2(F.silu(gate) * up, ids)  # (N, d)
        if self.gate is not None:
            out = torch.sigmoid(self.gate(x)) * out  # (N, 1) * (N, d)
        return out


class MoE(nn.Module):
    """Routed experts (+ shared expert) with a per-slot bank of expert LoRA adapters.

    Args:
        cfg: Model configuration.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        E, Fd, d, L, r = cfg.n_experts, cfg.d_ff, cfg.d_model, cfg.n_adapter_slots, cfg.lora_rank
        self.router = Router(cfg)
        self.w13 = nn.Parameter(torch.randn(E, 2 * Fd, d) * cfg.init_std)  # (E, 2F, d)
        self.w2 = nn.Parameter(torch.randn(E, d, Fd) * cfg.init_std)  # (E, d, F)
        self.register_buffer("w13_scale", None)  # (E, 2F) once int8
        self.register_buffer("w2_scale", None)  # (E, d) once int8
        self.lora_scale = cfg.lora_scale
        if cfg.has_lora("experts"):
            self.a13 = nn.Parameter(torch.empty(L, E, r, d))  # (L, E, r, d)
            self.b13 = nn.Parameter(torch.zeros(L, E, 2 * Fd, r))  # (L, E, 2F, r)
            self.a2 = nn.Parameter(torch.empty(L, E, r, Fd))  # (L, E, r, F)
            self.b2 = nn.Parameter(torch.zeros(L, E, d, r))  # (L, E, d, r)
            init_lora_a_(self.a13)
            init_lora_a_(self.a2)
        else:
            self.a13 = self.b13 = self.a2 = self.b2 = None
        self.shared = SharedExpert(cfg) if cfg.shared_expert else None

    @property
    def is_int8(self) -> bool:
        """Whether the routed expert weights are stored as int8."""
        return self.w13_scale is not None

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Mix each token's top-k experts (and the shared expert).

        Args:
            x: ``(N, d)`` token states.
            ids: ``(N,)`` int64 adapter slot per token (``-1`` = base) or ``None``.
            valid: ``(N,)`` bool, False for padding (excluded from router metrics).

        Returns:
            ``(N, d)`` outputs.
        """
        weights, experts = self.router(x, ids, valid)  # (N, k), (N, k)
        lora = None
        if ids is not None and self.a13 is not None:
            lora = ExpertLoRA(ids, self.a13, self.b13, self.a2, self.b2, self.lora_scale)
        out = moe_experts(
            x,
            self.w13,
            self.w2,
            weights,
            experts,
            w13_scale=self.w13_scale,
            w2_scale=self.w2_scale,
            lora=lora,
        )  # (N, d)
        if self.shared is not None:
            out = out + self.shared(x, ids)
        return out

    # -- int8 ---------------------------------------------------------------------------

    @torch.no_grad()
    def quantize_int8(self) -> None:
        """Replace ``w13``/``w2`` by int8 buffers with per-output-channel scales."""
        if self.is_int8:
            return
        q13, s13 = quantize_int8(self.w13)  # (E, 2F, d), (E, 2F)
        q2, s2 = quantize_int8(self.w2)  # (E, d, F), (E, d)
        del self.w13, self.w2
        self.register_buffer("w13", q13)
        self.register_buffer("w2", q2)
        self.register_buffer("w13_scale", s13)
        self.register_buffer("w2_scale", s2)

    def dense_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Routed expert weights as floats, ``(E, 2F, d)`` and ``(E, d, F)``."""
        if self.is_int8:
            return dequantize_int8(self.w13, self.w13_scale), dequantize_int8(self.w2, self.w2_scale)
        return self.w13, self.w2

    # -- AdapterModule ------------------------------------------------------------------

    def adapter_tensors(self) -> dict[str, torch.Tensor]:
        """Expert LoRA banks ``a13, b13, a2, b2`` (each ``(L, E, ...)``); empty if disabled."""
        if self.a13 is None:
            return {}
        return {"a13": self.a13, "b13": self.b13, "a2": self.a2, "b2": self.b2}

    @torch.no_grad()
    def merge_adapter(self, slot: int) -> None:
        """Fold ``slot``'s expert deltas into ``w13``/``w2`` (re-quantised if int8) and zero its B."""
        if self.a13 is None:
            return
        w13, w2 = self.dense_weights()
        w13 = w13 + self.lora_scale * torch.bmm(self.b13[slot], self.a13[slot]).to(w13.dtype)  # (E, 2F, d)
        w2 = w2 + self.lora_scale * torch.bmm(self.b2[slot], self.a2[slot]).to(w2.dtype)  # (E, d, F)
        if self.is_int8:
            (q13, s13), (q2, s2) = quantize_int8(w13), quantize_int8(w2)
            self.w13.copy_(q13), self.w13_scale.copy_(s13)
            self.w2.copy_(q2), self.w2_scale.copy_(s2)
        else:
            self.w13.copy_(w13)
            self.w2.copy_(w2)
        self.b13[slot].zero_()
        self.b2[slot].zero_()

    @torch.no_grad()
    def reset_adapter(self, slot: int) -> None:
        """Re-draw ``A`` and zero ``B`` of ``slot`` for every expert."""
        if self.a13 is None:
            return
        init_lora_a_(self.a13[slot])
        init_lora_a_(self.a2[slot])
        self.b13[slot].zero_()
        self.b2[slot].zero_()
