"""Key/value cache for incremental decoding."""

from __future__ import annotations

import torch


class KVCache:
    """Preallocated keys and values of every layer, plus which key slots are real tokens.

    The model fills it: a forward with ``cache=`` writes its keys/values at
    ``[length, length + T)`` and then advances ``length``.

    Args:
        n_layers: Transformer blocks.
        batch_size: Rows B.
        n_heads: Attention heads H.
        head_dim: Width of one head.
        max_len: Most tokens the cache can hold.
        device: Where the tensors live.
        dtype: Key/value dtype.
        value_dim: Width of one value head when it differs from ``head_dim`` (MLA).
    """

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_heads: int,
        head_dim: int,
        max_len: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        *,
        value_dim: int | None = None,
    ) -> None:
        shape = (n_layers, batch_size, n_heads, max_len)
        self.k = torch.zeros((*shape, head_dim), device=device, dtype=dtype)  # (layers, B, H, S, hd)
        self.v = torch.zeros((*shape, value_dim or head_dim), device=device, dtype=dtype)  # (layers, B, H, S, hv)
        self.valid = torch.zeros(batch_size, max_len, dtype=torch.bool, device=device)  # (B, S)
        self.next_pos = torch.zeros(batch_size, dtype=torch.long, device=device)  # (B,)
        self.length = 0
        self.max_len = max_len
        self.batch_size = batch_size

    def store(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k, v: (B, H, T, hd)`` after the cached ones; return all ``(B, H, length + T, hd)``."""
        end = self.length + k.shape[2]
        self.k[layer, :, :, self.length : end] = k
        self.v[layer, :, :, self.length : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]
