"""Sticky assignment of users to the arms (versions) of one rollout."""

from __future__ import annotations

import hashlib
import math
import random
from collections import OrderedDict
from typing import Any, Mapping, Sequence

_WEIGHT_TOLERANCE = 1e-9


class StickyAssigner:
    """Splits traffic between a champion and its challengers, keeping each user on one arm.

    A user's bucket is ``blake2b(rollout_id, user_id)`` read as a number in ``[0, 1)``: the
    same in every process and every run (Python's ``hash()`` is salted per process). With
    ``k`` challengers, challenger ``i`` owns the slot ``[i / k, i / k + w_i)`` of the unit
    interval and the champion the rest, so a challenger's share can grow up to ``1 / k``
    without moving any of its users away: the mapping is monotone. On top of that, the
    last ``memory`` users seen keep the arm they were first given (an LRU), so a canary
    step does not move champion users onto the challenger either, not even the last step
    (share 1.0): the split then governs new users. A challenger whose weight is set to 0 (a
    rollback) or lowered loses its remembered users (they are bucketed again). Requests without a user id are split by
    weight with the injected ``rng``.

    Args:
        rollout_id: Names the rollout; users are shuffled afresh for each rollout.
        champion: The champion's version.
        challengers: The challengers' versions, in a fixed order (their slots).
        memory: How many users' first arms to remember.
        rng: Source of randomness for anonymous requests (default ``random.Random(0)``).

    Raises:
        ValueError: If the versions are empty or repeated, or ``memory`` is below 0.

    Example:
        >>> assigner = StickyAssigner("r1", champion="7", challengers=["8"])
        >>> assigner.set_weights({"7": 0.9, "8": 0.1})
        >>> arms = [assigner.assign(f"user-{i}") for i in range(10_000)]
        >>> arms.count("8")
        981
        >>> assigner.assign("user-3") == arms[3]  # sticky
        True
        >>> assigner.set_weights({"7": 0.5, "8": 0.5})  # canary step: seen users stay put
        >>> [assigner.assign(f"user-{i}") for i in range(10_000)] == arms
        True
    """

    def __init__(
        self,
        rollout_id: str,
        champion: str,
        challengers: Sequence[str] = (),
        *,
        memory: int = 100_000,
        rng: random.Random | None = None,
    ) -> None:
        arms = [champion, *challengers]
        if any(not isinstance(a, str) or not a for a in arms) or len(set(arms)) != len(arms):
            raise ValueError(
                f"arms must be distinct non-empty version strings, got champion={champion!r}, "
                f"challengers={list(challengers)!r}"
            )
        if not isinstance(memory, int) or memory < 0:
            raise ValueError(f"memory must be an integer >= 0 (users to remember), got {memory!r}")
        self.rollout_id = str(rollout_id)
        self.champion = champion
        self.challengers = tuple(challengers)
        self.memory = memory
        self._rng = rng if rng is not None else random.Random(0)
        self._weights = {a: 0.0 for a in arms}
        self._weights[champion] = 1.0
        self._remembered: OrderedDict[str, str] = OrderedDict()

    # ---- the public face ------------------------------------------------------------

    @property
    def weights(self) -> dict[str, float]:
        """Traffic share per version (a copy); the shares sum to 1."""
        return dict(self._weights)

    def set_weights(self, weights: Mapping[str, float]) -> None:
        """Set every arm's share.

        Args:
            weights: Share per version: every arm of the rollout, each in ``[0, 1]``, summing
                to 1; each challenger at most ``1 / len(challengers)`` (its slot).

        Raises:
            ValueError: Naming the bad version or value and the fix.
        """
        unknown = [v for v in weights if v not in self._weights]
        if unknown:
            raise ValueError(f"weights: unknown arm(s) {unknown}; this rollout's arms are {list(self._weights)}")
        missing = [v for v in self._weights if v not in weights]
        if missing:
            raise ValueError(
                f"weights: missing arm(s) {missing}; give a share (0 or more) for every arm of {list(self._weights)}"
            )
        new = {}
        for version in self._weights:  # arm order, not the caller's
            w = weights[version]
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or not 0 <= w <= 1:
                raise ValueError(f"weights[{version!r}]: {w!r} is not a share; use a number in [0, 1]")
            new[version] = float(w)
        total = sum(new.values())
        if abs(total - 1) > _WEIGHT_TOLERANCE:
            raise ValueError(
                f"weights: shares sum to {total:.6g}, not 1; the champion takes what the challengers leave "
                f"(here {self.champion!r}: {max(0.0, 1 - (total - new[self.champion])):.6g})"
            )
        slot = 1 / len(self.challengers) if self.challengers else 1.0
        for version in self.challengers:
            if new[version] > slot + _WEIGHT_TOLERANCE:
                raise ValueError(
                    f"weights[{version!r}]: {new[version]:.6g} exceeds its slot {slot:.6g} "
                    f"(1 / {len(self.challengers)} challengers); lower it or roll a challenger back"
                )
        # Only challengers lose their users (a rollback, a lowered share). The champion keeps
        # its remembered users even at share 0 (the last canary step): within a rollout a
        # user never changes arm, and the split governs the users not seen before.
        lowered = {v for v in self.challengers if new[v] < self._weights[v] or new[v] == 0}
        self._weights = new
        if lowered:
            self._remembered = OrderedDict((u, a) for u, a in self._remembered.items() if a not in lowered)

    def bucket(self, user_id: str) -> float:
        """The user's fixed position in ``[0, 1)`` for this rollout."""
        digest = hashlib.blake2b(f"{self.rollout_id}\x1f{user_id}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2.0**64

    def assign(self, user_id: str | None = None) -> str:
        """The version that serves this user (or, with no user id, this request)."""
        if user_id is None:
            return self._arm_at(self._rng.random())
        remembered = self._remembered.get(user_id)
        if remembered is not None and (self._weights[remembered] > 0 or remembered == self.champion):
            self._remembered.move_to_end(user_id)
            return remembered
        arm = self._arm_at(self.bucket(user_id))
        if self.memory:
            self._remembered[user_id] = arm
            self._remembered.move_to_end(user_id)
            if len(self._remembered) > self.memory:
                self._remembered.popitem(last=False)
        return arm

    def __len__(self) -> int:
        """How many users are remembered."""
        return len(self._remembered)

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-able: arms, weights, remembered users (oldest first) and the rng state."""
        index = {a: i for i, a in enumerate([self.champion, *self.challengers])}
        version, internal, gauss = self._rng.getstate()
        return {
            "rollout_id": self.rollout_id,
            "champion": self.champion,
            "challengers": list(self.challengers),
            "memory": self.memory,
            "weights": dict(self._weights),
            "remembered": [[u, index[a]] for u, a in self._remembered.items()],
            "rng": [version, list(internal), gauss],
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> "StickyAssigner":
        """Rebuild from ``to_dict()`` output.

        Raises:
            ValueError: If the state is inconsistent (weights, arms).
        """
        version, internal, gauss = state["rng"]
        rng = random.Random()
        rng.setstate((version, tuple(internal), gauss))
        out = cls(state["rollout_id"], state["champion"], state["challengers"], memory=state["memory"], rng=rng)
        out.set_weights(state["weights"])
        arms = [out.champion, *out.challengers]
        out._remembered = OrderedDict((u, arms[i]) for u, i in state["remembered"])
        return out

    def __repr__(self) -> str:
        return f"StickyAssigner({self.rollout_id!r}, weights={self._weights}, remembered={len(self)})"

    # ---- internals ------------------------------------------------------------------

    def _arm_at(self, u: float) -> str:
        k = len(self.challengers)
        for i, version in enumerate(self.challengers):
            start = i / k
            if start <= u < start + self._weights[version]:
                return version
        return self.champion
