"""Group (token, expert) pairs into per-expert blocks for a grouped GEMM."""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["AlignedBlocks", "moe_align_block_size"]


class AlignedBlocks(NamedTuple):
    """Pairs sorted by expert, each expert's run padded to a multiple of ``block_m``.

    Attributes:
        sorted_ids: ``(max_padded,)`` int32 flat pair index ``t * k + j`` (or the
            row index when ``topk_ids`` has one column); padding holds ``numel``.
        block_expert: ``(max_padded // block_m,)`` int32 expert of each block, -1
            for blocks past the end.
        num_padded: ``(1,)`` int32 number of used entries of ``sorted_ids``.
    """

    sorted_ids: torch.Tensor
    block_expert: torch.Tensor
    num_padded: torch.Tensor


def moe_align_block_size(topk_ids: torch.Tensor, num_experts: int, block_m: int) -> AlignedBlocks:
    """Sorts the flattened ``topk_ids`` by expert and pads each run to ``block_m``.

    Pure torch and free of host syncs (sizes are upper bounds), so it can sit in a
    CUDA graph. Block ``b`` of the grouped GEMM reads the pair indices
    ``sorted_ids[b * block_m:(b + 1) * block_m]``, all routed to expert
    ``block_expert[b]``.

    Args:
        topk_ids: ``(T, k)`` integer expert ids in ``[0, num_experts)``.
        num_experts: Number of experts ``E``.
        block_m: Rows per block of the grouped GEMM.

    Returns:
        The aligned blocks, see :class:`AlignedBlocks`.

    Example:
        >>> ids = torch.tensor([[1, 0], [1, 1]])
        >>> blocks = moe_align_block_size(ids, num_experts=2, block_m=2)
        >>> blocks.sorted_ids.tolist()[: int(blocks.num_padded)]
        [1, 4, 0, 2, 3, 4]
        >>> blocks.block_expert.tolist()
        [0, 1, 1]
    """
    flat = topk_ids.reshape(-1).long()  # (P,)
    numel, device = flat.numel(), flat.device
    # scatter_add, not bincount: CUDA bincount syncs with the host to size its output.
    counts = torch.zeros(num_experts, dtype=torch.long, device=device).scatter_add_(0, flat, torch.ones_like(flat))
    padded = (counts + block_m - 1) // block_m * block_m  # (E,)
    padded_end = torch.cumsum(padded, 0)  # (E,)
    sorted_expert, order = torch.sort(flat, stable=True)  # (P,), (P,)
    rank = torch.arange(numel, device=device) - (torch.cumsum(counts, 0) - counts)[sorted_expert]
    dest = (padded_end - padded)[sorted_expert] + rank  # (P,) slot of each sorted pair

    # At most min(P, E) experts are active, each wasting fewer than block_m slots.
    max_padded = numel + min(numel, num_experts) * (block_m - 1)
    max_padded = (max_padded + block_m - 1) // block_m * block_m
    sorted_ids = torch.full((max_padded,), numel, dtype=torch.int32, device=device)
    sorted_ids[dest] = order.to(torch.int32)

    block_start = torch.arange(0, max_padded, block_m, device=device)  # (B,)
    block_expert = torch.searchsorted(padded_end, block_start, right=True)  # (B,) in [0, E]
    block_expert = torch.where(block_expert < num_experts, block_expert, -1).to(torch.int32)
    num_padded = padded_end[-1:].to(torch.int32)
    return AlignedBlocks(sorted_ids, block_expert, num_padded)
