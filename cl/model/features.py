"""Numeric feature vectors as tokens (FT-Transformer style).

Feature ``j`` with value ``x_j`` becomes the token ``x_j * W[j] + b[j]``; a learned CLS
token goes first, so ``(B, n_features)`` values become ``(B, n_features + 1, d)`` states.

>>> import torch
>>> emb = FeatureTokenizer(n_features=3, d_model=4)
>>> tuple(emb(torch.randn(2, 3)).shape)
(2, 4, 4)
"""

from __future__ import annotations

import torch
from torch import nn


class FeatureTokenizer(nn.Module):
    """Per-feature learned weight and bias embeddings plus a CLS embedding.

    Args:
        n_features: Values per row.
        d_model: Token width.
        init_std: Standard deviation of the normal initialisation.
    """

    def __init__(self, n_features: int, d_model: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.n_features = n_features
        # Unit-scale weights so that one feature's value moves its token noticeably.
        self.weight = nn.Parameter(torch.randn(n_features, d_model))  # (F, d)
        self.bias = nn.Parameter(torch.randn(n_features, d_model) * init_std)  # (F, d)
        self.cls = nn.Parameter(torch.randn(d_model) * init_std)  # (d,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, F)`` floats -> ``(B, F + 1, d)`` tokens, CLS first."""
        tokens = x[..., None] * self.weight + self.bias  # (B, F, d)
        cls = self.cls.expand(x.shape[0], 1, -1)  # (B, 1, d)
        return torch.cat((cls, tokens), dim=1)
