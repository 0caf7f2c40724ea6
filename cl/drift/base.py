"""The interface every drift detector implements.

A detector watches a stream of numbers, in this service the per-event error of
the model (0/1 misclassification, or a loss), and says when its distribution
has changed.

Decisions that hold for every implementation:

- ``update(x)`` returns nothing; ``drift_detected`` is ``True`` only right after
  the update that detected a change and ``False`` again after the next one.
- ``reset()`` forgets the statistics, as if the detector had just been built,
  but keeps ``n_detections``, a lifetime count (like a buffer's ``seen``).
- ``state_dict()`` returns plain, JSON-serialisable Python values (ints, floats,
  lists, dicts); ``load_state_dict`` restores them into a detector built with the
  same arguments, after which it behaves exactly like the original.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class DriftDetector(Protocol):
    """Watches a numeric stream and flags changes in its distribution."""

    def update(self, x: float) -> None:
        """Feed one value of the stream (finite)."""
        ...

    @property
    def drift_detected(self) -> bool:
        """Whether the latest ``update`` detected a drift."""
        ...

    @property
    def n_detections(self) -> int:
        """How many drifts were detected since construction (survives ``reset``)."""
        ...

    def reset(self) -> None:
        """Forget the statistics; ``n_detections`` is kept."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this detector is."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict`` taken from a detector with the same arguments."""
        ...
