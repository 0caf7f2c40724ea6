"""Multi-head latent attention (MLA, DeepSeek-V2/V3): keys and values from one low-rank latent.

A token's keys and values are rebuilt from a compressed ``kv_lora_rank``-wide latent plus one
rotated key part shared by every head; queries optionally go through a low-rank bottleneck
too. Each head's query/key is ``[nope | rope]``: only the last ``qk_rope_dim`` dims are rotated.
The cache holds the expanded per-head keys and values, as the reference implementation's eager
path computes them, so decoding reads exactly what a full forward would.

LoRA targets map onto MLA's projections: ``q`` the (second) query projection, ``k`` the latent
projection ``kv_a``, ``v`` the latent-to-heads projection ``kv_b``, ``o`` the output.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from cl.model.attention import attend
from cl.model.cache import KVCache
from cl.model.config import ModelConfig
from cl.model.lora import LoRALinear
from cl.model.rope import apply_rope


def deinterleave(x: torch.Tensor) -> torch.Tensor:
    """``(..., 2n)`` pairs ``(x0, x1), (x2, x3), ...`` -> ``[x0, x2, ... | x1, x3, ...]``.

    DeepSeek's checkpoints rotate adjacent pairs; after this the half-split RoPE of
    :func:`~cl.model.rope.apply_rope` rotates the same pairs by the same angles.
    """
    return torch.cat((x[..., 0::2], x[..., 1::2]), dim=-1)


class LatentAttention(nn.Module):
    """MLA with LoRA on its q, kv_a, kv_b and o projections.

    Args:
        cfg: Model configuration with ``kv_lora_rank > 0``.
        layer: Index of the block (selects its slice of a :class:`KVCache`).
    """

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.n_heads = cfg.n_heads
        self.rope_dim = cfg.qk_rope_dim
        self.nope_dim = cfg.head_dim - cfg.qk_rope_dim
        self.value_dim = cfg.value_dim
        self.kv_rank = cfg.kv_lora_rank
        H = cfg.n_heads

        self.interleaved = cfg.rope_interleave
        bias = cfg.attention_bias

        proj = functools.partial(LoRALinear.for_target, cfg)

        # The latents' norms use the reference's fixed epsilon, not the config's.
        if cfg.q_lora_rank:
            self.q_a = proj(None, cfg.d_model, cfg.q_lora_rank, bias)
            self.q_a_norm = nn.RMSNorm(cfg.q_lora_rank, eps=1e-6)
            self.q = proj("q", cfg.q_lora_rank, H * cfg.head_dim)
        else:
            self.q_a = self.q_a_norm = None
            self.q = proj("q", cfg.d_model, H * cfg.head_dim)
        self.k = proj("k", cfg.d_model, cfg.kv_lora_rank + cfg.qk_rope_dim, bias)  # kv_a_proj_with_mqa
        self.kv_norm = nn.RMSNorm(cfg.kv_lora_rank, eps=1e-6)
        self.v = proj("v", cfg.kv_lora_rank, H * (self.nope_dim + self.value_dim))  # kv_b_proj
        self.o = proj("o", H * self.value_dim, cfg.d_model, bias)

    def forward(
        self,
        x: torch.Tensor,
        ids: torch.Tensor | None,
        mask: torch.Tensor | None,
        is_causal: bool,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Attend; arguments as :meth:`cl.model.attention.Attention.forward`."""
        B, T, _ = x.shape
        H, nope, rd = self.n_heads, self.nope_dim, self.rope_dim
        q_in = x if self.q_a is None else self.q_a_norm(self.q_a(x, None))
        q = self.q(q_in, ids).view(B, T, H, nope + rd).transpose(1, 2)  # (B, H, T, nope+rd)
        latent, k_rot = self.k(x, ids).split((self.kv_rank, rd), dim=-1)  # (B, T, r), (B, T, rd)
        kv = self.v(self.kv_norm(latent), ids).view(B, T, H, nope + self.value_dim).transpose(1, 2)
        k_nope, v = kv.split((nope, self.value_dim), dim=-1)  # (B, H, T, nope), (B, H, T, hv)
        q_nope, q_rot = q.split((nope, rd), dim=-1)
        k_rot = k_rot[:, None]  # (B, 1, T, rd): one rotated key shared by every head
        if self.interleaved:
            q_rot, k_rot = deinterleave(q_rot), deinterleave(k_rot)
        if rope is not None:
            q_rot, k_rot = apply_rope(q_rot, *rope), apply_rope(k_rot, *rope)
        q = torch.cat((q_nope, q_rot), dim=-1)  # (B, H, T, hd)
        k = torch.cat((k_nope, k_rot.expand(B, H, T, rd)), dim=-1)  # (B, H, T, hd)
        return self.o(attend(q, k, v, mask, is_causal, self.layer, cache), ids)
