"""Canary rollout settings (``[rollout]``): traffic steps, the sequential test, the guards."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RolloutConfig"]


@dataclass
class RolloutConfig:
    """Canary rollout of challenger versions: traffic steps, the sequential test and the guards.

    See ``docs/rollout.md`` for what each key does and how the decisions are taken.
    """

    canary_steps: str = "0.1,0.5,1.0"  # comma-separated challenger traffic shares, rising, ending at 1.0
    alpha: float = 0.01  # level of the always-valid (mSPRT) confidence sequence
    mixing_sd: float = 0.1  # sd of the normal mixing distribution over the rate difference
    min_events: int = 30  # rated events per arm before the sequential test may decide
    min_step_events: int = 200  # challenger rated events at a step before it may advance
    noninferiority_margin: float = 0.05  # advance when challenger >= champion - margin, with confidence
    negative_margin: float = 0.15  # roll back when the negative-rating rate exceeds the champion's by this
    negative_min_events: int = 200  # challenger rated events before negative_margin applies
    max_error_rate: float = 0.05  # roll back when the serving error rate exceeds this
    error_min_requests: int = 100  # challenger requests before max_error_rate applies
    forgetting_max_drop: float = 0.02  # largest eval-score drop below the champion a promotion accepts
    memory_users: int = 100_000  # users whose first arm is remembered within a rollout (LRU)

    @property
    def steps(self) -> tuple[float, ...]:
        """``canary_steps`` as numbers; empty if it does not parse (``problems()`` says so)."""
        try:
            return tuple(float(s) for s in self.canary_steps.split(",") if s.strip())
        except ValueError:
            return ()

    def problems(self) -> list[str]:
        out = []
        steps = self.steps
        if not steps:
            out.append(f"rollout.canary_steps: {self.canary_steps!r} is not a list of numbers; use e.g. '0.1,0.5,1.0'")
        elif any(not 0 < s <= 1 for s in steps) or any(a >= b for a, b in zip(steps, steps[1:])) or steps[-1] != 1.0:
            out.append(
                f"rollout.canary_steps: {self.canary_steps!r} must rise strictly within (0, 1] and end at 1.0; "
                "use e.g. '0.1,0.5,1.0'"
            )
        for name, example in (("alpha", 0.01), ("max_error_rate", 0.05)):
            if not 0 < getattr(self, name) < 1:
                out.append(f"rollout.{name}: {getattr(self, name)} must be in (0, 1), e.g. {example}")
        if not self.mixing_sd > 0:
            out.append(
                f"rollout.mixing_sd: {self.mixing_sd} must be positive (e.g. 0.1, the size of difference to detect)"
            )
        for name in ("min_events", "min_step_events", "negative_min_events", "error_min_requests", "memory_users"):
            if getattr(self, name) < 1:
                out.append(f"rollout.{name}: {getattr(self, name)} is too small; use 1 or more")
        for name in ("noninferiority_margin", "negative_margin", "forgetting_max_drop"):
            if not 0 <= getattr(self, name) <= 1:
                out.append(f"rollout.{name}: {getattr(self, name)} must be in [0, 1] (a difference of rates or scores)")
        return out
