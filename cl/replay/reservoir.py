"""Reservoir sampling: a uniform sample of everything seen so far."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from cl.replay._storage import SlotStore, check_loss


class ReservoirBuffer(SlotStore):
    """Keep a uniform random sample of the stream (Vitter's algorithm R).

    The first ``capacity`` examples are stored as they come. After that the
    ``t``-th example (1-based) replaces a uniformly chosen stored one with
    probability ``capacity / t``, so at any time every example seen so far is in
    the buffer with the same probability ``capacity / seen``: old concepts keep
    their share of the buffer instead of being pushed out by recent ones. This
    is the default buffer.

    Sampling is uniform over the stored examples, without replacement.

    Args:
        capacity: The most examples held at once, ``>= 1``.
        seed: Seed of the buffer's own generator, which decides replacements.

    Example:
        >>> import numpy as np
        >>> from cl.replay import ReservoirBuffer
        >>> buf = ReservoirBuffer(capacity=3, seed=0)
        >>> for i in range(10):
        ...     buf.add({"x": i})
        >>> len(buf), buf.seen
        (3, 10)
        >>> sorted(ex["x"] for ex in buf.sample(5, np.random.default_rng(0)))
        [6, 7, 9]
    """

    kind = "reservoir"

    def __init__(self, capacity: int, seed: int | None = None) -> None:
        self.seed = seed
        super().__init__(capacity, seed)

    def add(self, example: Any, *, label: Hashable | None = None, loss: float | None = None) -> None:
        """Offer one example; once full, it replaces a random one with probability ``capacity/seen``.

        Args:
            example: Any picklable object.
            label: Carried along, not used for the decision.
            loss: Carried along (finite, ``>= 0``), not used for the decision.

        Raises:
            ValueError: If ``loss`` is negative or not finite.
        """
        loss = None if loss is None else check_loss(loss)
        key = self._next_key()
        if len(self) < self._capacity:
            self._append(key, example, label, loss)
            return
        j = int(self._rng.integers(0, self._seen))  # uniform over the `seen` arrivals so far
        if j < self._capacity:
            self._overwrite(j, key, example, label, loss)
