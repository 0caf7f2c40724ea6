"""The ingress's copy of the rollout's traffic split: which version answers which user.

The controller owns the split; each ingress replica keeps a copy (refreshed by long-polling
the controller, so a rollback reaches it within milliseconds) and assigns users locally
with a :class:`cl.rollout.StickyAssigner`, without a remote call per request. It also
counts requests and serving errors per version for the controller's error-rate guard.

Example:
    >>> router = TrafficRouter()
    >>> router.route("alice", pinned=None)
    (None, 'champion')
    >>> router.apply({"epoch": 1, "rollout_id": "r1", "champion": "3", "challengers": ["4"],
    ...               "weights": {"3": 0.0, "4": 1.0}})
    >>> router.route("alice", pinned=None), router.route("alice", pinned="2")
    (('4', 'challenger'), ('2', 'pinned'))
"""

from __future__ import annotations

import threading
from typing import Any

from cl.rollout import StickyAssigner

__all__ = ["TrafficRouter"]


class TrafficRouter:
    """Routes requests by the newest routing table it was given (``None``: the replica's own choice)."""

    def __init__(self, memory: int = 100_000) -> None:
        self.memory = memory
        self.epoch = -1
        self.champion: str | None = None
        self._assigner: StickyAssigner | None = None
        self._counts: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def apply(self, routing: dict[str, Any]) -> None:
        """Take a routing table from the controller (``RolloutController.routing``)."""
        with self._lock:
            self.epoch = int(routing["epoch"])
            self.champion = routing["champion"]
            rollout_id = routing.get("rollout_id")
            if rollout_id is None:
                self._assigner = None
                return
            same = (
                self._assigner is not None
                and self._assigner.rollout_id == rollout_id
                and self._assigner.challengers == tuple(routing["challengers"])
            )
            if not same:
                self._assigner = StickyAssigner(rollout_id, self.champion, routing["challengers"], memory=self.memory)
            self._assigner.set_weights(routing["weights"])

    def route(self, user_id: str | None, pinned: str | None) -> tuple[str | None, str]:
        """``(version, arm)`` for a request; version ``None`` leaves it to the replica."""
        if pinned:
            return pinned, "pinned"
        with self._lock:
            if self._assigner is None:
                return self.champion, "champion"
            version = self._assigner.assign(user_id)
            return version, "champion" if version == self.champion else "challenger"

    def count(self, version: str, ok: bool) -> None:
        with self._lock:
            counts = self._counts.setdefault(version, [0, 0])
            counts[0] += 1
            counts[1] += int(not ok)

    def take_counts(self) -> dict[str, list[int]]:
        """Counts since the last call, ``{version: [requests, errors]}``; resets them."""
        with self._lock:
            counts, self._counts = self._counts, {}
            return counts
