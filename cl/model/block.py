"""One pre-norm transformer block: ``x + attn(norm(x))`` then ``x + moe(norm(x))``."""

from __future__ import annotations

import torch
from torch import nn

from cl.model.attention import Attention
from cl.model.cache import KVCache
from cl.model.config import ModelConfig
from cl.model.moe import MoE


class Block(nn.Module):
    """RMSNorm -> attention -> residual, RMSNorm -> MoE -> residual.

    Args:
        cfg: Model configuration.
        layer: Index of this block in the stack.
    """

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = Attention(cfg, layer)
        self.moe_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.moe = MoE(cfg)

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
        h = self.moe(
            self.moe_norm(x).reshape(B * T, d),
            None if ids is None else ids.reshape(-1),
            None if valid is None else valid.reshape(-1),
        )  # (B*T, d)
        return x + h.view(B, T, d)
