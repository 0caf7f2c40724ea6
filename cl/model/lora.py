"""LoRA as a small layer: a frozen linear map plus a bank of low-rank adapters.

Each :class:`LoRALinear` holds ``n_slots`` adapters side by side, ``A: (L, r, in)`` and
``B: (L, out, r)``, and picks one per row with an integer id (``-1`` = base only), so one
batch can serve several adapters. ``B`` starts at zero: a fresh adapter is exactly the base.

>>> import torch
>>> layer = LoRALinear(6, 5, n_slots=2, rank=2, alpha=4.0)
>>> x = torch.randn(3, 6)
>>> ids = torch.tensor([0, 1, -1])
>>> torch.equal(layer(x, ids), layer(x, None))  # B == 0: adapters add nothing yet
True
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from kernels import apply_lora

if TYPE_CHECKING:
    from cl.model.config import ModelConfig


@runtime_checkable
class AdapterModule(Protocol):
    """A module that owns a bank of per-slot adapter tensors.

    Every tensor returned by :meth:`adapter_tensors` is stacked over slots on dim 0, so
    ``tensor[slot]`` is one adapter's share. ``cl.model.adapters`` finds these modules in a
    model to save, load, merge and count adapters without knowing their kinds.
    """

    def adapter_tensors(self) -> dict[str, torch.Tensor]:
        """Name -> banked tensor ``(L, ...)``; parameters train, buffers do not."""
        ...

    def merge_adapter(self, slot: int) -> None:
        """Fold ``slot`` into the base so that the base alone behaves like base + slot."""
        ...

    def reset_adapter(self, slot: int) -> None:
        """Make ``slot`` a fresh adapter that changes nothing."""
        ...


def init_lora_a_(a: torch.Tensor) -> None:
    """Initialise an ``A`` bank ``(..., r, in)`` like ``nn.Linear`` (kaiming-uniform, a=sqrt(5))."""
    bound = 1.0 / math.sqrt(a.shape[-1])
    with torch.no_grad():
        a.uniform_(-bound, bound)


class LoRALinear(nn.Module):
    """``y = x Wᵀ + b + scale · (x A[id]ᵀ) B[id]ᵀ`` with the base ``W, b`` frozen.

    Args:
        in_features: Input width K.
        out_features: Output width N.
        n_slots: Adapters L in the bank.
        rank: LoRA rank r; 0 makes this a plain linear layer without adapters.
        alpha: Scale numerator; deltas are multiplied by ``alpha / rank``.
        bias: Give the base map a bias.
        init_std: Standard deviation of the base weight's normal initialisation.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        n_slots: int,
        rank: int,
        alpha: float,
        bias: bool = False,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.rank = rank
        self.scale = alpha / rank if rank else 0.0
        self.weight = nn.Parameter(torch.randn(out_features, in_features) * init_std)  # (N, K)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        if rank > 0:
            self.lora_a = nn.Parameter(torch.empty(n_slots, rank, in_features))  # (L, r, K)
            self.lora_b = nn.Parameter(torch.zeros(n_slots, out_features, rank))  # (L, N, r)
            init_lora_a_(self.lora_a)
        else:
            self.lora_a = None
            self.lora_b = None

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
        """Apply the base map and, per row, the chosen adapter.

        Args:
            x: ``(..., K)`` inputs.
            ids: ``(...)`` int64 adapter slot per row (leading dims of ``x``), ``-1`` = base
                only; ``None`` skips the adapters entirely.

        Returns:
            ``(..., N)`` outputs.
        """
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)  # (T, K)
        base = F.linear(x2, self.weight, self.bias)  # (T, N)
        if self.lora_a is None or ids is None:
            return base.reshape(*lead, self.out_features)
        out = apply_lora(x2, self.lora_a, self.lora_b, ids.reshape(-1), self.scale, base=base)
        return out.reshape(*lead, self.out_features)

    @classmethod
    def for_target(cls, cfg: ModelConfig, target: str | None, n_in: int, n_out: int, bias: bool = False) -> LoRALinear:
        """A layer sized ``n_in -> n_out`` with adapters when ``target`` is in ``cfg.lora_targets``
        (``None``: never), ranked, scaled and initialised as ``cfg`` says."""
        rank = cfg.lora_rank if target and cfg.has_lora(target) else 0
        return cls(
            n_in, n_out, n_slots=cfg.n_adapter_slots, rank=rank, alpha=cfg.lora_alpha, bias=bias, init_std=cfg.init_std
        )

    def delta_weight(self, slot: int) -> torch.Tensor:
        """The dense ``(N, K)`` weight change that adapter ``slot`` makes."""
        assert self.lora_a is not None and self.lora_b is not None
        return self.scale * (self.lora_b[slot] @ self.lora_a[slot])  # (N, r) @ (r, K)

    def adapter_tensors(self) -> dict[str, torch.Tensor]:
        """The banked ``lora_a (L, r, K)`` and ``lora_b (L, N, r)``; empty when rank is 0."""
        if self.lora_a is None or self.lora_b is None:
            return {}
        return {"lora_a": self.lora_a, "lora_b": self.lora_b}

    @torch.no_grad()
    def merge_adapter(self, slot: int) -> None:
        """Add ``slot``'s delta into the base weight and zero its ``B`` (slot == new base)."""
        if self.lora_a is None or self.lora_b is None:
            return
        self.weight += self.delta_weight(slot).to(self.weight.dtype)
        self.lora_b[slot].zero_()

    @torch.no_grad()
    def reset_adapter(self, slot: int) -> None:
        """Re-draw ``A`` and zero ``B`` for ``slot``."""
        if self.lora_a is None or self.lora_b is None:
            return
        init_lora_a_(self.lora_a[slot])
        self.lora_b[slot].zero_()

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, rank={self.rank}, scale={self.scale:g}"
