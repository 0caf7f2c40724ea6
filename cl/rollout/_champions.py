"""The champion, the champions to roll back to, and a log of every change (internal).

MLflow's ``champion`` alias keeps no history, so the policy keeps it.
"""

from __future__ import annotations

from typing import Any, Mapping

HISTORY_LIMIT = 1000  # champion changes kept (each needs a whole rollout, so this is years)


class ChampionHistory:
    """The current champion, a stack of earlier ones and an append-only log (bounded)."""

    def __init__(self, champion: str, now: float = 0.0) -> None:
        self.current = champion
        self.previous: list[str] = []  # champions to roll back to, most recent last
        self.log: list[dict[str, Any]] = [
            {"version": champion, "since": float(now), "action": "initial", "reason": "initial champion"}
        ]

    def change(self, version: str, action: str, reason: str, now: float) -> str:
        """Make ``version`` the champion by ``action`` (promote or rollback); returns the old one.

        A promotion pushes the old champion on the stack; a rollback to a version on the
        stack drops it and everything above it (those came after it).
        """
        old = self.current
        if action == "promote":
            self.previous.append(old)
        elif version in self.previous:
            del self.previous[len(self.previous) - 1 - self.previous[::-1].index(version) :]
        self.previous = self.previous[-HISTORY_LIMIT:]
        self.current = version
        self.log = (self.log + [{"version": version, "since": float(now), "action": action, "reason": reason}])[
            -HISTORY_LIMIT:
        ]
        return old

    def to_dict(self) -> dict[str, Any]:
        return {"current": self.current, "previous": list(self.previous), "log": [dict(e) for e in self.log]}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> "ChampionHistory":
        out = cls(state["current"])
        out.previous = list(state["previous"])
        out.log = [dict(e) for e in state["log"]]
        return out
