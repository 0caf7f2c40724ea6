"""Multi-head self-attention with LoRA on q/k/v/o, RoPE, masks and a KV cache.

Masks are boolean, ``True`` = may attend. :func:`attention_mask` combines causality, an
optional sliding window and key padding; a query may always attend to itself, so a padded
query never sees an empty row (which would give NaN).

>>> import torch
>>> m, is_causal = attention_mask(None, tq=3, tk=3, offset=0, causal=True, window=2)
>>> m[0, 0].int().tolist(), is_causal
([[1, 0, 0], [1, 1, 0], [0, 1, 1]], False)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cl.model.cache import KVCache
from cl.model.config import ModelConfig
from cl.model.lora import LoRALinear
from cl.model.rope import apply_rope


def attention_mask(
    key_valid: torch.Tensor | None,
    *,
    tq: int,
    tk: int,
    offset: int,
    causal: bool,
    window: int | None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor | None, bool]:
    """Build the attention mask for ``tq`` queries at key indices ``offset .. offset + tq - 1``.

    Args:
        key_valid: ``(B, tk)`` bool, False for padding keys; ``None`` = all real.
        tq: Number of queries.
        tk: Number of keys (cached + new).
        offset: Key index of the first query (the cache length before this step).
        causal: Queries see only keys at or before their own index.
        window: Sliding window: a query sees keys less than ``window`` indices away
            (behind it when causal, either side otherwise); ``None`` = unlimited.
        device: Device of the mask.

    Returns:
        ``(mask, is_causal)``: a ``(B|1, 1, tq, tk)`` bool mask, or ``(None, True)`` when a
        plain causal mask suffices and ``(None, False)`` when nothing is masked, so that
        ``scaled_dot_product_attention`` can take its fastest path.
    """
    if key_valid is None and window is None and (not causal or (offset == 0 and tq == tk)):
        return None, causal
    qi = torch.arange(offset, offset + tq, device=device)[:, None]  # (tq, 1)
    ki = torch.arange(tk, device=device)[None, :]  # (1, tk)
    allowed = torch.ones(tq, tk, dtype=torch.bool, device=device)  # (tq, tk)
    if causal:
        allowed &= ki <= qi
    if window is not None:
        allowed &= ((qi - ki) if causal else (qi - ki).abs()) < window
    allowed = allowed[None, None]  # (1, 1, tq, tk)
    if key_valid is not None:
        allowed = (allowed & key_valid[:, None, None, :]) | (ki == qi)  # (B, 1, tq, tk)
    return allowed, False


class Attention(nn.Module):
    """Self-attention over ``n_heads`` heads; q/k/v/o are :class:`LoRALinear` layers.

    Args:
        cfg: Model configuration.
        layer: Index of the block (selects its slice of a :class:`KVCache`).
    """

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.n_heads = cfg.n_heads
        self.head_dim = cfg.head_dim

        def proj(target: str) -> LoRALinear:
            rank = cfg.lora_rank if cfg.has_lora(target) else 0
            return LoRALinear(
                cfg.d_model,
                cfg.d_model,
                n_slots=cfg.n_adapter_slots,
                rank=rank,
                alpha=cfg.lora_alpha,
                init_std=cfg.init_std,
            )

        self.q, self.k, self.v, self.o = proj("q"), proj("k"), proj("v"), proj("o")

    def forward(
        self,
        x: torch.Tensor,
        ids: torch.Tensor | None,
        mask: torch.Tensor | None,
        is_causal: bool,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Attend.

        Args:
            x: ``(B, T, d)`` normalised states.
            ids: ``(B, T)`` int64 adapter slot per token, or ``None``.
            mask: ``(B|1, 1, T, Tk)`` bool from :func:`attention_mask`, or ``None``.
            is_causal: With ``mask=None``: apply a plain causal mask.
            rope: ``(cos, sin)``, each ``(B, 1, T, hd/2)``, or ``None`` for no rotation.
            cache: Where to store this step's keys/values and read earlier ones.

        Returns:
            ``(B, T, d)``.
        """
        B, T, d = x.shape
        H, hd = self.n_heads, self.head_dim
        q = self.q(x, ids).view(B, T, H, hd).transpose(1, 2)  # (B, H, T, hd)
        k = self.k(x, ids).view(B, T, H, hd).transpose(1, 2)  # (B, H, T, hd)
        v = self.v(x, ids).view(B, T, H, hd).transpose(1, 2)  # (B, H, T, hd)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None:
            k, v = cache.store(self.layer, k, v)  # (B, H, Tk, hd)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and is_causal)
        y = y.transpose(1, 2).reshape(B, T, d)  # (B, T, d)
        return self.o(y, ids)
