"""One pre-norm transformer block: ``x + attn(norm(x))`` then ``x + moe(norm(x))``.

A block in ``dense_layers`` has one dense SwiGLU MLP instead of experts (DeepSeek-V3's first
layers); its ``moe`` is ``None``.
"""

from __future__ import annotations

import torch
from torch import nn

from cl.model.attention import Attention
from cl.model.cache import KVCache
from cl.model.config import ModelConfig
from cl.model.latent_attention import LatentAttention
from cl.model.moe import MoE, SharedExpert


class Block(nn.Module):
    """RMSNorm -> attention -> residual, RMSNorm -> MoE -> residual.

    Args:
        cfg: Model configuration.
        layer: Index of this block in the stack.
    """

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = LatentAttention(cfg, layer) if cfg.is_mla else Attention(cfg, layer)
        self.moe_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        if cfg.is_dense(layer):
            self.moe, self.mlp = None, SharedExpert(cfg, cfg.dense_d_ff or cfg.d_ff, target="mlp")
        else:
            self.moe, self.mlp = MoE(cfg), None

    def forward(
        self,
        x: torch.Tensor,
        ids: torch.Tensor | None,
        valid: torch.Tensor | None,
        mask: torch.Tensor | None,
        is_causal: bool,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Run the block.

        Args:
            x: ``(B, T, d)`` residual stream.
            ids: ``(B, T)`` int64 adapter slot per token, or ``None``.
            valid: ``(B, T)`` bool, False for padding, or ``None`` (all real).
            mask: Attention mask, see :func:`~cl.model.attention.attention_mask`.
            is_causal: Plain causal attention when ``mask`` is ``None``.
            rope: ``(cos, sin)`` tables or ``None``.
            cache: Optional KV cache.

        Returns:
            ``(B, T, d)``.
        """
        B, T, d = x.shape
        x = x + self.attn(self.attn_norm(x), ids, mask, is_causal, rope, cache)
        flat = self.moe_norm(x).reshape(B * T, d)
        flat_ids = None if ids is None else ids.reshape(-1)
        if self.moe is None:
            h = self.mlp(flat, flat_ids)  # (B*T, d)
        else:
            h = self.moe(flat, flat_ids, None if valid is None else valid.reshape(-1))  # (B*T, d)
        return x + h.view(B, T, d)
