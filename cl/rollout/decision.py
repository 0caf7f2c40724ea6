"""Decision records: what a rollout policy did or is waiting for, and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

ACTIONS = (
    "start",  # a rollout began; challengers got their first canary share
    "advance",  # a challenger moved to its next canary step
    "promote",  # a version became the champion
    "rollback",  # a challenger lost its traffic, or the champion reverted to an earlier version
    "retire",  # a challenger left without a verdict (superseded, or another one was promoted)
    "traffic",  # a challenger's share was set by hand
    "hold",  # nothing to do yet; the evidence says what is missing
    "blocked",  # a step is due but a guard stops it (e.g. serving errors high, too few requests to judge)
    "needs_evaluation",  # promotion is due but an eval score is unknown: compute it, then observe_eval()
)

# The cl.events lifecycle type each action is announced as (None: audit log only).
LIFECYCLE_TYPES = {
    "start": "traffic_changed",
    "advance": "traffic_changed",
    "traffic": "traffic_changed",
    "retire": "traffic_changed",
    "promote": "promoted",
    "rollback": "rolled_back",
}


@dataclass(frozen=True)
class Decision:
    """One decision of a rollout policy, JSON-able through ``to_dict()``.

    Attributes:
        action: One of :data:`ACTIONS`.
        version: The version it concerns (e.g. ``"7"``).
        reason: One human-readable sentence.
        evidence: Counts, rates, test statistics, step and thresholds behind it, plus the
            traffic split after it (``weights``); plain JSON values.
        ts: When it was taken, on the caller's clock.
        rollout_id: The rollout it belongs to, or None outside a rollout.
    """

    action: str
    version: str
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)
    ts: float = 0.0
    rollout_id: str | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"action {self.action!r} is unknown; use one of {', '.join(ACTIONS)}")

    @property
    def lifecycle_type(self) -> str | None:
        """The ``cl.events`` type to announce this as (``promoted``, ...), or None for the audit log only."""
        return LIFECYCLE_TYPES.get(self.action)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "version": self.version,
            "reason": self.reason,
            "evidence": self.evidence,
            "ts": self.ts,
            "rollout_id": self.rollout_id,
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Decision":
        return cls(**values)
