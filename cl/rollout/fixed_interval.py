"""The baseline: check the challenger at fixed intervals; roll back after K failed checks."""

from __future__ import annotations

import random
from typing import Any

from cl.config import RolloutConfig
from cl.rollout._arms import Challenger
from cl.rollout._bookkeeping import RolloutBase, Verdict

_WINDOW = {"n": 0, "good": 0, "champion_n": 0, "champion_good": 0}


class FixedIntervalPolicy(RolloutBase):
    """Canary rollout judged the common way, for comparison with :class:`CanaryPolicy`.

    Every ``interval_events`` challenger ratings (or every ``interval_s`` seconds of the
    caller's clock, if set, once the interval has a rating) the challenger's good rate in
    that interval is compared with the champion's in the same interval (the champion's
    rate over the rollout when it got no traffic, at share 1.0). A check fails when the
    challenger is lower by more than ``min_drop``; after ``max_failed_checks`` failed checks
    in the rollout it is rolled back. A passing check advances it once it has
    ``min_step_events`` ratings at its step. Serving errors, the forgetting guard, steps,
    manual actions and state are those of every policy; the negative-rating margin is not
    used. No confidence is attached to a check, so the chance of a false rollback grows
    with the number of checks.

    Args:
        champion: The version serving everyone now.
        config: Steps, guards and ``min_step_events`` (default ``RolloutConfig()``).
        interval_events: Challenger ratings per check.
        interval_s: Also check when this many seconds passed (None: by events only).
        min_drop: How far below the champion's rate a check fails.
        max_failed_checks: Failed checks that roll the challenger back.
        rng: Randomness for requests without a user id.
        now: The caller's clock, for the champion history.

    Raises:
        ValueError: If an interval or threshold is out of range.
    """

    kind = "fixed_interval"

    def __init__(
        self,
        champion: str,
        config: RolloutConfig | None = None,
        *,
        interval_events: int = 100,
        interval_s: float | None = None,
        min_drop: float = 0.05,
        max_failed_checks: int = 3,
        rng: random.Random | None = None,
        now: float = 0.0,
    ) -> None:
        problems = []
        if not isinstance(interval_events, int) or interval_events < 1:
            problems.append(f"interval_events must be an integer >= 1, got {interval_events!r}")
        if interval_s is not None and not interval_s > 0:
            problems.append(f"interval_s must be positive seconds or None, got {interval_s!r}")
        if not 0 <= min_drop <= 1:
            problems.append(f"min_drop must be in [0, 1] (a difference of rates), got {min_drop!r}")
        if not isinstance(max_failed_checks, int) or max_failed_checks < 1:
            problems.append(f"max_failed_checks must be an integer >= 1, got {max_failed_checks!r}")
        if problems:
            raise ValueError("; ".join(problems))
        super().__init__(champion, config, rng=rng, now=now)
        self.interval_events = interval_events
        self.interval_s = interval_s
        self.min_drop = min_drop
        self.max_failed_checks = max_failed_checks
        self._looks_on_clock = interval_s is not None

    def _options(self) -> dict[str, Any]:
        return {
            "interval_events": self.interval_events,
            "interval_s": self.interval_s,
            "min_drop": self.min_drop,
            "max_failed_checks": self.max_failed_checks,
        }

    def _on_step(self, c: Challenger) -> None:
        c.extra.setdefault("failed", 0)
        c.extra.setdefault("checks", 0)
        c.extra.setdefault("last_check", None)
        c.extra["window"] = dict(_WINDOW)

    def _on_rating(self, challenger: Challenger | None, good: bool) -> None:
        if challenger is not None:
            w = challenger.extra["window"]
            w["n"] += 1
            w["good"] += good
            return
        for c in self._challengers.values():
            w = c.extra["window"]
            w["champion_n"] += 1
            w["champion_good"] += good

    def _judge(self, c: Challenger, now: float) -> Verdict | None:
        w, extra = c.extra["window"], c.extra
        if extra["last_check"] is None:
            extra["last_check"] = float(now)
        by_time = self.interval_s is not None and now - extra["last_check"] >= self.interval_s and w["n"] > 0
        if w["n"] < self.interval_events and not by_time:
            return None
        champ = self._champion_stats
        if w["champion_n"]:
            champion_rate = w["champion_good"] / w["champion_n"]
        elif champ.rated:
            champion_rate = champ.good_rate
        else:
            return None  # nothing to compare with yet; keep filling the window
        rate = w["good"] / w["n"]
        failed = rate < champion_rate - self.min_drop
        extra["checks"] += 1
        extra["failed"] += failed
        extra["last_check"] = float(now)
        check = {"rate": rate, "champion_rate": champion_rate, "window": dict(w), "failed": failed}
        c.extra["window"] = dict(_WINDOW)
        evidence = {"rule": "fixed_interval", "check": check}
        if extra["failed"] >= self.max_failed_checks:
            return (
                "rollback",
                f"{extra['failed']} failed checks (limit {self.max_failed_checks}): last interval's good "
                f"rate {rate:.3f} vs champion {champion_rate:.3f}",
                evidence,
            )
        if not failed and c.step_rated >= self.config.min_step_events:
            return (
                "pass",
                f"check passed: good rate {rate:.3f} vs champion {champion_rate:.3f} "
                f"(fails below {champion_rate - self.min_drop:.3f})",
                evidence,
            )
        return None

    def _evidence(self, c: Challenger) -> dict[str, Any]:
        return {
            **super()._evidence(c),
            "checks": c.extra.get("checks", 0),
            "failed_checks": c.extra.get("failed", 0),
            "thresholds": {
                "interval_events": self.interval_events,
                "interval_s": self.interval_s,
                "min_drop": self.min_drop,
                "max_failed_checks": self.max_failed_checks,
                "max_error_rate": self.config.max_error_rate,
                "error_min_requests": self.config.error_min_requests,
            },
        }
