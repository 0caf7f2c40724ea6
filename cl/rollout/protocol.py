"""The interface every rollout policy implements (its shared bookkeeping: ``_bookkeeping.py``)."""

from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

from cl.rollout.decision import Decision


@runtime_checkable
class RolloutPolicy(Protocol):
    """What the rollout actor drives: feed observations, ask for decisions, act on them.

    Time is always the caller's (``now``); nothing reads the wall clock. The state
    round-trips through ``to_dict()`` / ``from_dict()`` (JSON-able), so an actor can
    rebuild its policy after a restart.
    """

    @property
    def champion(self) -> str: ...

    @property
    def challengers(self) -> tuple[str, ...]: ...

    @property
    def active(self) -> bool: ...

    @property
    def weights(self) -> dict[str, float]: ...

    def assign(self, user_id: str | None = None) -> str: ...

    def start(
        self, challengers: str | Sequence[str], *, now: float, rollout_id: str | None = None, replace: bool = False
    ) -> list[Decision]: ...

    def observe(self, version: str, good: bool | int, *, negative: bool | None = None) -> bool: ...

    def observe_requests(self, version: str, requests: int = 1, errors: int = 0) -> bool: ...

    def observe_eval(self, version: str, score: float) -> None: ...

    def decide(self, now: float) -> list[Decision]: ...

    def explain(self, now: float) -> list[Decision]: ...

    def promote(self, version: str, *, now: float, reason: str = ...) -> list[Decision]: ...

    def rollback(self, version: str | None = None, *, now: float, reason: str = ...) -> list[Decision]: ...

    def rollback_to(self, version: str, *, now: float, reason: str = ...) -> list[Decision]: ...

    def set_traffic(self, version: str, weight: float, *, now: float, reason: str = ...) -> list[Decision]: ...

    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> "RolloutPolicy": ...
