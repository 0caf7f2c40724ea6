"""A seeded simulator of rated traffic through a rollout, for tests and the benchmark."""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from cl.rollout.decision import Decision
from cl.rollout.protocol import RolloutPolicy


@dataclass(frozen=True)
class Scenario:
    """The traffic of one simulated rollout: how good and how reliable each arm is.

    Attributes:
        name: A label for tables.
        champion_rate: Chance a rated champion answer is good.
        challenger_rate: Chance a rated challenger answer is good.
        champion_error: Chance a champion request fails (no rating then).
        challenger_error: Chance a challenger request fails.
        negative_share: Share of not-good ratings that are explicitly negative (the rest neutral).
        rated_share: Share of served requests that get rated.
        rating_delay: Requests served between a request and its rating (delayed feedback).
        users: Distinct users the requests come from, at random (0: anonymous requests).
        champion_eval: Champion's eval-set score, given when the policy asks (None: never).
        challenger_eval: Challenger's eval-set score, likewise.
        max_requests: Requests after which an undecided rollout is given up.
        dt: Seconds between requests on the simulated clock.
    """

    name: str = "A/A"
    champion_rate: float = 0.6
    challenger_rate: float = 0.6
    champion_error: float = 0.0
    challenger_error: float = 0.0
    negative_share: float = 1.0
    rated_share: float = 1.0
    rating_delay: int = 0
    users: int = 0
    champion_eval: float | None = 0.8
    challenger_eval: float | None = 0.8
    max_requests: int = 100_000
    dt: float = 1.0


@dataclass
class Outcome:
    """How a simulated rollout ended."""

    result: str  # "promoted", "rolled_back" or "undecided"
    requests: int  # requests served until then
    challenger_rated: int  # challenger ratings the policy counted until then
    decisions: list[Decision] = field(default_factory=list)

    @property
    def rule(self) -> str | None:
        """The rule behind the final decision (``worse``, ``error_rate``, ...), if any."""
        return self.decisions[-1].evidence.get("rule") if self.decisions else None


def simulate(policy: RolloutPolicy, scenario: Scenario, *, seed: int, challenger: str = "challenger") -> Outcome:
    """Roll ``challenger`` out against ``policy``'s champion on simulated traffic.

    One request per tick: the policy assigns it, it fails or is served, its rating (if
    any) arrives ``rating_delay`` requests later, and the policy decides after every
    request. Eval scores are supplied when the policy says ``needs_evaluation``, as the
    rollout actor would.

    Args:
        policy: A policy with no rollout in progress (seed its ``rng`` for repeatable runs).
        scenario: The traffic.
        seed: Seeds the outcomes and the user ids.
        challenger: The challenger's version.

    Returns:
        The outcome: promoted, rolled back, or undecided after ``max_requests``.

    Example:
        >>> from cl.rollout import CanaryPolicy, Scenario, simulate
        >>> out = simulate(CanaryPolicy("1"), Scenario(challenger_rate=0.7), seed=3)
        >>> out.result, [d.action for d in out.decisions]
        ('promoted', ['start', 'advance', 'advance', 'needs_evaluation', 'promote'])
    """
    rng = random.Random(seed)
    champion = policy.champion
    rate = {champion: scenario.champion_rate, challenger: scenario.challenger_rate}
    error = {champion: scenario.champion_error, challenger: scenario.challenger_error}
    scores = {champion: scenario.champion_eval, challenger: scenario.challenger_eval}
    decisions = list(policy.start(challenger, now=0.0))
    pending: deque[tuple[int, str, bool, bool]] = deque()
    rated = 0
    users, delay, dt = scenario.users, scenario.rating_delay, scenario.dt
    for t in range(scenario.max_requests):
        user = f"user-{rng.randrange(users)}" if users else None
        version = policy.assign(user)
        failed = rng.random() < error[version]
        policy.observe_requests(version, 1, int(failed))
        if not failed and rng.random() < scenario.rated_share:
            good = rng.random() < rate[version]
            negative = not good and rng.random() < scenario.negative_share
            if not delay:
                if policy.observe(version, good, negative=negative) and version == challenger:
                    rated += 1
            else:
                pending.append((t + delay, version, good, negative))
        while pending and pending[0][0] <= t:
            _, v, good, negative = pending.popleft()
            if policy.observe(v, good, negative=negative) and v == challenger:
                rated += 1
        for d in policy.decide(now=t * dt):
            decisions.append(d)
            if d.action == "needs_evaluation":
                for v in d.evidence["needs_evaluation"]:
                    if scores[v] is not None:
                        policy.observe_eval(v, scores[v])
        if not policy.active:
            last = decisions[-1].action
            result = "promoted" if last == "promote" else "rolled_back" if last == "rollback" else last
            return Outcome(result, t + 1, rated, decisions)
    return Outcome("undecided", scenario.max_requests, rated, decisions)
