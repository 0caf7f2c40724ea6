"""What data-parallel learners share: one small interface over ``torch.distributed``.

Each learner worker reads its own share of the feedback, so the ranks hold different
micro-batches (some empty) but must stay one model. :class:`RankGroup` is all they need:
gather small Python objects (error streams, counts, states), sum tensors (gradients) and
broadcast tensors (a re-initialised adapter). :class:`SingleProcess` is the one-worker case,
where every call is the identity; :class:`TorchDistributed` uses the process group Ray
Train's ``TorchTrainer`` has already set up (gloo on CPU, NCCL on GPU).

Example:
    >>> import torch
    >>> group = SingleProcess()
    >>> group.all_gather({"errors": [1, 0]})
    [{'errors': [1, 0]}]
    >>> grads = [torch.ones(2)]
    >>> group.sum_(grads); grads[0]
    tensor([1., 1.])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch

__all__ = ["RankGroup", "SingleProcess", "TorchDistributed", "current_group"]


class RankGroup(Protocol):
    """The ranks of one learner; every method is a collective: all ranks call it in order."""

    @property
    def rank(self) -> int: ...

    @property
    def world_size(self) -> int: ...

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order."""
        ...

    def sum_(self, tensors: Sequence[torch.Tensor]) -> None:
        """Replace each tensor by its sum over the ranks, in place."""
        ...

    def broadcast_(self, tensors: Sequence[torch.Tensor], src: int = 0) -> None:
        """Overwrite each tensor with rank ``src``'s, in place."""
        ...


class SingleProcess:
    """One worker: gathering returns ``[obj]``, sums and broadcasts change nothing."""

    rank = 0
    world_size = 1

    def all_gather(self, obj: Any) -> list[Any]:
        return [obj]

    def sum_(self, tensors: Sequence[torch.Tensor]) -> None:
        return None

    def broadcast_(self, tensors: Sequence[torch.Tensor], src: int = 0) -> None:
        return None


class TorchDistributed:
    """The default ``torch.distributed`` process group (it must be initialised).

    Tensors travel flattened into one buffer per call, so a step costs one all-reduce
    whatever the number of adapter tensors.
    """

    def __init__(self) -> None:
        import torch.distributed as dist

        if not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialised; run inside a Ray Train TorchTrainer worker")
        self._dist = dist

    @property
    def rank(self) -> int:
        return self._dist.get_rank()

    @property
    def world_size(self) -> int:
        return self._dist.get_world_size()

    def all_gather(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        self._dist.all_gather_object(out, obj)
        return out

    def sum_(self, tensors: Sequence[torch.Tensor]) -> None:
        self._flat(tensors, lambda flat: self._dist.all_reduce(flat, op=self._dist.ReduceOp.SUM))

    def broadcast_(self, tensors: Sequence[torch.Tensor], src: int = 0) -> None:
        self._flat(tensors, lambda flat: self._dist.broadcast(flat, src=src))

    @staticmethod
    def _flat(tensors: Sequence[torch.Tensor], collective) -> None:  # noqa: ANN001
        if not tensors:
            return
        flat = torch.cat([t.detach().reshape(-1).float() for t in tensors])  # (sum of numels,)
        collective(flat)
        offset = 0
        with torch.no_grad():
            for t in tensors:
                n = t.numel()
                t.copy_(flat[offset : offset + n].view_as(t).to(t.dtype))
                offset += n


def current_group() -> RankGroup:
    """:class:`TorchDistributed` inside an initialised process group of 2+ ranks, else :class:`SingleProcess`."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return TorchDistributed()
    return SingleProcess()
