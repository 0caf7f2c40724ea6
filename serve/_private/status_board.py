"""Where model replicas post what they serve, so ``GET /v1/models`` can show every replica.

A deployment handle routes each call to *some* replica, so the ingress cannot ask each
replica in turn. Instead every replica reports its state (on change, and as a heartbeat)
to one small named actor per application; the ingress reads the board. Replicas that stop
reporting (crashed, or scaled down without saying goodbye) drop off after ``max_age_s``.
"""

from __future__ import annotations

import time
from typing import Any

import ray

__all__ = ["NAMESPACE", "StatusBoard", "board_name", "get_board", "kill_board"]

NAMESPACE = "cl"
HEARTBEAT_S = 2.0
MAX_AGE_S = 15.0


def board_name(app: str) -> str:
    """The board actor's name for application ``app``."""
    return f"{app}-serve-status"


@ray.remote(num_cpus=0, max_restarts=-1)
class StatusBoard:
    """Latest state per replica id; each entry carries the time it was reported."""

    def __init__(self) -> None:
        self._states: dict[str, dict[str, Any]] = {}

    def report(self, replica_id: str, state: dict[str, Any]) -> None:
        self._states[replica_id] = {**state, "replica_id": replica_id, "reported_at": time.time()}

    def forget(self, replica_id: str) -> None:
        self._states.pop(replica_id, None)

    def snapshot(self, max_age_s: float = MAX_AGE_S) -> list[dict[str, Any]]:
        now = time.time()
        self._states = {k: v for k, v in self._states.items() if now - v["reported_at"] <= max_age_s}
        return [{**v, "reported_s_ago": round(now - v["reported_at"], 3)} for _, v in sorted(self._states.items())]


def get_board(app: str) -> Any:
    """The board of ``app``, created on first use; detached, so it outlives any one replica."""
    return StatusBoard.options(
        name=board_name(app), namespace=NAMESPACE, get_if_exists=True, lifetime="detached"
    ).remote()


def kill_board(app: str) -> bool:
    """Remove the board of ``app``; returns whether there was one."""
    try:
        actor = ray.get_actor(board_name(app), namespace=NAMESPACE)
    except ValueError:
        return False
    ray.kill(actor)
    return True
