"""Rotary position embedding (RoPE) for the token path.

Positions are given per row, so left-padded prompts rotate their first real token as
position 0. Feature tokens get no rotation: a feature is identified by its own embedding,
not by where it sits.
"""

from __future__ import annotations

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    """Precomputed ``cos``/``sin`` tables for positions ``0 .. max_len - 1``.

    Args:
        head_dim: Width of one attention head (even).
        max_len: Largest position + 1.
        base: Frequency base.
    """

    def __init__(self, head_dim: int, max_len: int, base: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)  # (S, hd/2)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``positions: (B, T)`` int64 -> ``(cos, sin)``, each ``(B, 1, T, hd/2)``."""
        return self.cos[positions][:, None], self.sin[positions][:, None]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x: (B, H, T, hd)`` by the angles in ``cos, sin: (B, 1, T, hd/2)``."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half].float(), x[..., half:].float()  # (B, H, T, hd/2) each
    out = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)  # (B, H, T, hd)
    return out.to(x.dtype)
