"""The interface every replay buffer implements.

A replay buffer keeps a bounded sample of past training examples so that each
online micro-batch can mix old examples in with new ones and the model does not
forget what it learned earlier.

Decisions that hold for every implementation:

- **Keys.** Each example gets an integer key when it is offered to ``add``: its
  arrival number, ``0, 1, 2, ...`` (so the key of the next example is ``seen``).
  ``sample(..., return_keys=True)`` hands the keys back, and ``update_losses``
  takes them. A key whose example has since been evicted is ignored: in an online
  learner the buffer may change between sampling a batch and scoring it.
- **Losses.** Every buffer stores the latest known loss of each example and
  ``update_losses`` updates it, so the protocol has no optional methods. Only
  :class:`~cl.replay.LossPrioritisedBuffer` lets the losses steer sampling and
  eviction; the others just carry them (which keeps a learner's code the same
  whichever buffer is configured).
- **Sampling** draws from a caller-supplied :class:`numpy.random.Generator`,
  never with replacement: asking for more examples than the buffer holds returns
  every stored example once, in random order, so a half-empty buffer never
  over-weights its few examples.
- **References, not copies.** Examples are stored and returned as the very
  objects passed to ``add``; callers must not mutate them afterwards.
- **State.** ``state_dict()`` returns plain Python containers (lists, dicts,
  ints, floats, the examples themselves, the generator's state) that pickle, and
  that are JSON-serialisable whenever the examples and labels are.
  ``load_state_dict`` restores a buffer built with the same configuration so it
  behaves exactly as the original would have from that point on.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class ReplayBuffer(Protocol):
    """A bounded store of past examples to mix into new training batches."""

    @property
    def capacity(self) -> int:
        """The most examples the buffer holds at once."""
        ...

    @property
    def seen(self) -> int:
        """How many examples were ever offered to ``add`` (stored or not)."""
        ...

    def __len__(self) -> int:
        """How many examples the buffer holds now (at most ``capacity``)."""
        ...

    def add(self, example: Any, *, label: Hashable | None = None, loss: float | None = None) -> None:
        """Offer one example; the buffer decides whether to keep it and what to evict.

        Args:
            example: Any picklable object, typically a dict.
            label: Class label, used by class-balanced buffers; any hashable value.
            loss: Latest loss on this example, finite and ``>= 0``, if known.
        """
        ...

    def sample(
        self, n: int, rng: np.random.Generator, *, return_keys: bool = False
    ) -> list[Any] | list[tuple[int, Any]]:
        """Draw ``min(n, len(self))`` distinct stored examples.

        Args:
            n: How many examples are wanted, ``>= 0``.
            rng: The generator to draw with; the buffer's own state is untouched.
            return_keys: Return ``(key, example)`` pairs instead of bare examples.

        Returns:
            The drawn examples (or pairs), in random order.
        """
        ...

    def update_losses(self, keys: Iterable[int], losses: Iterable[float]) -> None:
        """Record fresh losses for stored examples; unknown or evicted keys are ignored."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this buffer is."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict`` taken from a buffer with the same configuration."""
        ...
