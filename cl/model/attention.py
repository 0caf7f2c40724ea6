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

import functools

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
    """Self-attention over ``n_heads`` query heads sharing ``kv_heads`` key/value heads
    (grouped-query attention); q/k/v/o are :class:`LoRALinear` layers.

    Args:
        cfg: Model configuration.
        layer: Index of the block (selects its slice of a :class:`KVCache`).
    """

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.n_heads = cfg.n_heads
        self.kv_heads = cfg.kv_heads
        self.head_dim = cfg.head_dim
        q_width, kv_width = cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim

        proj = functools.partial(LoRALinear.for_target, cfg)
        bias = cfg.attention_bias
        self.q = proj("q", cfg.d_model, q_width, bias)
        self.k = proj("k", cfg.d_model, kv_width, bias)
        self.v = proj("v", cfg.d_model, kv_width, bias)
        self.o = proj("o", q_width, cfg.d_model, False)
        # Query/key norms: per head (Qwen3-MoE) or over the whole projection (OLMoE).
        self.qk_norm = cfg.qk_norm
        if cfg.qk_norm == "head":
            self.q_norm = nn.RMSNorm(cfg.head_dim, eps=cfg.norm_eps)
            self.k_norm = nn.RMSNorm(cfg.head_dim, eps=cfg.norm_eps)
        elif cfg.qk_norm == "full":
            self.q_norm = nn.RMSNorm(q_width, eps=cfg.norm_eps)
            self.k_norm = nn.RMSNorm(kv_width, eps=cfg.norm_eps)

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
        B, T, _ = x.shape
        H, Hkv, hd = self.n_heads, self.kv_heads, self.head_dim
        q, k, v = self.q(x, ids), self.k(x, ids), self.v(x, ids)  # (B, T, H*hd), (B, T, Hkv*hd) x2
        if self.qk_norm == "full":
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.view(B, T, H, hd), k.view(B, T, Hkv, hd), v.view(B, T, Hkv, hd)
        if self.qk_norm == "head":
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H|Hkv, T, hd)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return self.o(attend(q, k, v, mask, is_causal, self.layer, cache), ids)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    is_causal: bool,
    layer: int,
    cache: KVCache | None,
) -> torch.Tensor:
    """Scaled dot-product attention of ``q: (B, H, T, hd)`` over ``k, v: (B, Hkv, T, .)`` and
    the cached keys/values; key/value heads are shared by ``H / Hkv`` query heads each.

    Returns:
        ``(B, T, H * hv)``.
    """
    B, H, T, _ = q.shape
    if cache is not None:
        k, v = cache.store(layer, k, v)  # (B, Hkv, Tk, .)
    if k.shape[1] != H:
        k, v = k.repeat_interleave(H // k.shape[1], dim=1), v.repeat_interleave(H // v.shape[1], dim=1)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and is_causal)
    return y.transpose(1, 2).reshape(B, T, -1)  # (B, T, H*hv)
