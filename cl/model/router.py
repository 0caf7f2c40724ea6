"""Top-k expert router with auxiliary-loss-free load balancing (DeepSeek-V3).

Each token gets an affinity score per expert (sigmoid or softmax of a linear map). A
per-expert *balance bias* is added to the scores only to choose the top-k experts; the
gate weights use the unbiased scores of the chosen experts, normalised over the k. After a
training forward (or on :meth:`Router.update_balance`) the bias moves by
``rate * sign(mean_load - load)``: overloaded experts become less likely to be chosen,
underloaded ones more, with no extra loss term.

The bias is kept per adapter slot (row 0 = base, row ``s + 1`` = slot ``s``) because every
slot's router LoRA shifts the load differently, and a learner that balances its adapter
must ship that adapter's bias with it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cl.model.config import ModelConfig
from cl.model.lora import LoRALinear


class Router(nn.Module):
    """Chooses ``top_k`` of ``n_experts`` experts per token and their gate weights.

    Args:
        cfg: Model configuration (``d_model``, ``n_experts``, ``top_k``, ``router_score``,
            ``balance_rate``, ``balance_auto``, LoRA settings).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_experts = cfg.n_experts
        self.top_k = cfg.top_k
        self.score = cfg.router_score
        self.norm_topk = cfg.norm_topk
        self.routed_scale = float(cfg.routed_scale)
        self.groups, self.topk_groups = cfg.n_expert_groups, cfg.topk_groups
        self.rate = float(cfg.balance_rate)
        self.auto = cfg.balance_auto
        self.proj = LoRALinear(
            cfg.d_model,
            cfg.n_experts,
            n_slots=cfg.n_adapter_slots,
            rank=cfg.lora_rank if cfg.has_lora("router") else 0,
            alpha=cfg.lora_alpha,
            init_std=cfg.init_std,
        )
        rows = cfg.n_adapter_slots + 1
        self.register_buffer("balance_bias", torch.zeros(rows, cfg.n_experts))  # (L+1, E)
        # Load seen in training since the last bias update, per bias row.
        self.register_buffer("_pending", torch.zeros(rows, cfg.n_experts), persistent=False)
        # Metrics since the last reset_stats(): assignments per expert, entropy sum, tokens.
        self.register_buffer("_load", torch.zeros(cfg.n_experts, dtype=torch.float64), persistent=False)
        self.register_buffer("_entropy", torch.zeros((), dtype=torch.float64), persistent=False)
        self.register_buffer("_tokens", torch.zeros((), dtype=torch.float64), persistent=False)

    # Bookkeeping stays in full precision whatever dtype the model is cast to: balance steps
    # of 1e-3 vanish in bfloat16, and so do token counts above 256.
    _KEEP_DTYPE = {
        "balance_bias": torch.float32,
        "_pending": torch.float32,
        "_load": torch.float64,
        "_entropy": torch.float64,
        "_tokens": torch.float64,
    }

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        kept = {name: self._buffers[name] for name in self._KEEP_DTYPE}
        super()._apply(fn, recurse)
        for name, old in kept.items():
            self._buffers[name] = old.to(device=self._buffers[name].device, dtype=self._KEEP_DTYPE[name])
        return self

    def forward(
        self, x: torch.Tensor, ids: torch.Tensor | None, valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Route tokens.

        Args:
            x: ``(N, d)`` token states.
            ids: ``(N,)`` int64 adapter slot per token (``-1`` = base) or ``None`` (all base).
            valid: ``(N,)`` bool, False for padding (left out of load metrics and balancing).

        Returns:
            ``(weights, experts)``: ``(N, k)`` gate weights in ``x.dtype`` (summing to
            ``routed_scale`` per token with ``norm_topk``), and ``(N, k)`` int64 expert ids.
        """
        logits = self.proj(x, ids).float()  # (N, E)
        scores = logits.sigmoid() if self.score == "sigmoid" else logits.softmax(-1)  # (N, E)
        with torch.no_grad():
            bias = self.balance_bias[0] if ids is None else self.balance_bias[ids + 1]  # (E,)|(N, E)
            experts = self._choose(scores + bias)  # (N, k)
        weights = scores.gather(-1, experts)  # (N, k)
        if self.norm_topk:
            weights = weights / weights.sum(-1, keepdim=True).clamp_min(1e-20)
        if self.routed_scale != 1.0:
            weights = weights * self.routed_scale
        self._record(scores.detach(), experts, ids, valid)
        return weights.to(x.dtype), experts

    def _choose(self, choice: torch.Tensor) -> torch.Tensor:
        """Top-k of ``choice: (N, E)``; with groups (DeepSeek-V3), only among the experts of
        each token's ``topk_groups`` best groups, a group scored by its two best experts."""
        if self.groups > 1:
            N, E = choice.shape
            grouped = choice.view(N, self.groups, E // self.groups)  # (N, G, E/G)
            group_score = grouped.topk(min(2, E // self.groups), dim=-1).values.sum(-1)  # (N, G)
            keep = torch.zeros_like(group_score, dtype=torch.bool)
            keep.scatter_(1, group_score.topk(self.topk_groups, dim=-1).indices, True)  # (N, G)
            choice = grouped.masked_fill(~keep[..., None], float("-inf")).view(N, E)
        return choice.topk(self.top_k, dim=-1).indices  # (N, k)

    @torch.no_grad()
    def _record(
        self,
        scores: torch.Tensor,
        experts: torch.Tensor,
        ids: torch.Tensor | None,
        valid: torch.Tensor | None,
    ) -> None:
        if valid is not None:
            scores, experts = scores[valid], experts[valid]  # (n, E), (n, k)
            ids = None if ids is None else ids[valid]
        self._load += torch.bincount(experts.reshape(-1), minlength=self.n_experts).double()
        p = scores / scores.sum(-1, keepdim=True).clamp_min(1e-20)  # (n, E)
        self._entropy += -(p * p.clamp_min(1e-20).log()).sum().double()
        self._tokens += scores.shape[0]
        if not (self.training and self.rate > 0):
            return
        rows = torch.zeros_like(experts) if ids is None else (ids + 1)[:, None].expand_as(experts)
        self._pending.index_put_(
            (rows.reshape(-1), experts.reshape(-1)),
            torch.ones(experts.numel(), device=experts.device),
            accumulate=True,
        )
        if self.auto:
            self.update_balance()

    @torch.no_grad()
    def update_balance(self) -> None:
        """Nudge every bias row that saw tokens by ``rate * sign(mean_load - load)``."""
        seen = self._pending.sum(-1) > 0  # (L+1,)
        load = self._pending[seen]  # (r, E)
        self.balance_bias[seen] += self.rate * torch.sign(load.mean(-1, keepdim=True) - load)
        self._pending.zero_()

    def load_stats(self) -> dict[str, object]:
        """Metrics since the last :meth:`reset_stats`.

        Returns:
            ``tokens`` (routed real tokens), ``share`` (fraction of assignments per expert,
            length E), ``max_violation`` (max load / mean load - 1; 0 = perfectly even),
            ``entropy`` (mean router entropy in nats; at most ``ln E``) and ``max_entropy``.
        """
        tokens = int(self._tokens.item())
        total = self._load.sum().item()
        share = (self._load / total).tolist() if total else [0.0] * self.n_experts
        mean = total / self.n_experts
        return {
            "tokens": tokens,
            "share": share,
            "max_violation": (self._load.max().item() / mean - 1.0) if total else 0.0,
            "entropy": self._entropy.item() / tokens if tokens else 0.0,
            "max_entropy": math.log(self.n_experts),
        }

    def reset_stats(self) -> None:
        """Forget the metrics gathered so far."""
        self._load.zero_()
        self._entropy.zero_()
        self._tokens.zero_()

    # -- AdapterModule: the per-slot bias rows travel with the adapter ------------------

    def adapter_tensors(self) -> dict[str, torch.Tensor]:
        """``balance_bias`` rows of the slots, ``(L, E)`` (a view; not trained by gradients)."""
        return {"balance_bias": self.balance_bias[1:]}

    @torch.no_grad()
    def merge_adapter(self, slot: int) -> None:
        """The base takes over ``slot``'s bias."""
        self.balance_bias[0] = self.balance_bias[slot + 1]

    @torch.no_grad()
    def reset_adapter(self, slot: int) -> None:
        """``slot`` starts again from the base bias."""
        self.balance_bias[slot + 1] = self.balance_bias[0]
