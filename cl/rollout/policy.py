"""The canary policy: challengers advance, are promoted or rolled back on an always-valid test."""

from __future__ import annotations

import math
import random
from typing import Any

from cl.config import RolloutConfig
from cl.rollout._arms import Challenger
from cl.rollout._bookkeeping import RolloutBase, Verdict
from cl.rollout.sequential import Comparison, MixtureSPRT


class CanaryPolicy(RolloutBase):
    """Canary rollout judged by a mixture SPRT on rated outcomes (see ``docs/rollout.md``).

    Each challenger starts at the first canary share (``rollout.canary_steps``, split evenly
    among the challengers of an A/B/n rollout) and, after every observation, is judged on
    everything seen since the rollout began:

    * **rollback** (its share goes to 0 at once) when any of these holds:
      the serving error rate exceeds ``max_error_rate`` over at least ``error_min_requests``
      requests; its eval score is more than ``forgetting_max_drop`` below the champion's;
      the always-valid confidence sequence for ``rate_challenger - rate_champion`` lies
      below 0 (worse with confidence, both arms with ``min_events`` ratings); or its
      negative-rating rate exceeds the champion's by more than ``negative_margin`` after
      ``negative_min_events`` ratings.
    * **advance** to the next step when it has ``min_step_events`` ratings at this step, the
      sequence's lower bound is above ``-noninferiority_margin`` (not worse by more than
      the margin, with confidence) and its serving error rate is within the bound.
    * **promote** when that happens at the last step (share 1.0) and both eval scores are
      known and within the bound; if a score is missing it says ``needs_evaluation``.

    Args:
        champion: The version serving everyone now.
        config: Thresholds (default ``RolloutConfig()``).
        rng: Randomness for requests without a user id (default ``random.Random(0)``).
        now: The caller's clock, for the champion history.

    Raises:
        ConfigError: If ``config`` has problems (each named ``rollout.<key>``).

    Example:
        >>> import random
        >>> from cl.rollout import CanaryPolicy
        >>> policy = CanaryPolicy("7")
        >>> [d.action for d in policy.start("8", now=0.0)], policy.weights
        (['start'], {'7': 0.9, '8': 0.1})
        >>> rng = random.Random(1)
        >>> for t in range(5000):  # the challenger is 20 points worse
        ...     version = policy.assign(f"user-{t}")
        ...     _ = policy.observe(version, rng.random() < (0.4 if version == "8" else 0.6))
        ...     decisions = policy.decide(now=float(t))
        ...     if decisions:
        ...         break
        >>> d = decisions[0]
        >>> d.action, d.version, d.evidence["rule"], d.evidence["challenger"]["rated"], d.evidence["weights"]
        ('rollback', '8', 'worse', 82, {'7': 1.0, '8': 0.0})
        >>> policy.active
        False
    """

    kind = "canary"

    def __init__(
        self, champion: str, config: RolloutConfig | None = None, *, rng: random.Random | None = None, now: float = 0.0
    ) -> None:
        super().__init__(champion, config, rng=rng, now=now)
        self.test = MixtureSPRT(alpha=self.config.alpha, mixing_sd=self.config.mixing_sd)

    def compare(self, version: str) -> Comparison | None:
        """The sequential test's current look at ``version`` against the champion (None before data)."""
        c = self._challengers.get(version)
        if c is None:
            raise ValueError(
                f"version {version!r} is not a challenger of the rollout; challengers are {list(self._challengers)}"
            )
        ch = self._champion_stats
        return self.test.compare(ch.good, ch.rated, c.stats.good, c.stats.rated)

    def _judge(self, c: Challenger, now: float) -> Verdict | None:
        cfg, champ, s = self.config, self._champion_stats, c.stats
        if not champ.rated or not s.rated:
            return None
        diff, radius, log_lr = self.test.bounds(champ.good, champ.rated, s.good, s.rated)
        if log_lr > 0 and math.exp(-log_lr) < c.p_value:
            c.p_value = math.exp(-log_lr)
        tested = champ.rated >= cfg.min_events and s.rated >= cfg.min_events
        if tested and diff + radius < 0:
            return (
                "rollback",
                f"rated worse than the champion with confidence: good rate {s.good_rate:.3f} vs "
                f"{champ.good_rate:.3f}, difference {diff:+.3f} in [{diff - radius:+.3f}, {diff + radius:+.3f}] "
                f"(always-valid, alpha {cfg.alpha:g})",
                {"rule": "worse"},
            )
        if s.rated >= cfg.negative_min_events and champ.rated >= cfg.min_events:
            excess = s.negative_rate - champ.negative_rate
            if excess > cfg.negative_margin:
                return (
                    "rollback",
                    f"negative-rating rate {s.negative_rate:.3f} exceeds the champion's "
                    f"{champ.negative_rate:.3f} by {excess:.3f} > {cfg.negative_margin:g}",
                    {"rule": "negative_margin"},
                )
        if tested and c.step_rated >= cfg.min_step_events and diff - radius > -cfg.noninferiority_margin:
            return (
                "pass",
                f"not worse than the champion by {cfg.noninferiority_margin:g} or more, with confidence: "
                f"difference {diff:+.3f} in [{diff - radius:+.3f}, {diff + radius:+.3f}]",
                {"rule": "noninferiority"},
            )
        return None

    def _evidence(self, c: Challenger) -> dict[str, Any]:
        cfg, champ = self.config, self._champion_stats
        look = self.test.compare(champ.good, champ.rated, c.stats.good, c.stats.rated)
        return {
            **super()._evidence(c),
            "test": None if look is None else {**look.to_dict(), "p_value_always_valid": c.p_value},
            "thresholds": {
                "alpha": cfg.alpha,
                "mixing_sd": cfg.mixing_sd,
                "min_events": cfg.min_events,
                "noninferiority_margin": cfg.noninferiority_margin,
                "negative_margin": cfg.negative_margin,
                "negative_min_events": cfg.negative_min_events,
                "max_error_rate": cfg.max_error_rate,
                "error_min_requests": cfg.error_min_requests,
            },
        }
