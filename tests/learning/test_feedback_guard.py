"""FeedbackGuard: per-user caps and quarantine of users who disagree with everyone far beyond chance."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest

from cl.events import FeedbackEvent, RequestEvent
from cl.learning.feedback_guard import FeedbackGuard, binomial_log_tail, disagrees
from learners.rank_state import share_for_rank

SERVED = RequestEvent(
    request_id="r", kind="predict", input={"features": [0.0]}, output={"label": 0}, model_version="1", arm="champion"
)
GENERATED = RequestEvent(
    request_id="r", kind="generate", input={"text": "hi"}, output={"text": "hello"}, model_version="1", arm="champion"
)


@functools.lru_cache(maxsize=None)
def _label_fb(user: str | None, disagree: bool) -> FeedbackEvent:
    return FeedbackEvent(request_id="r", user_id=user, label=1 if disagree else 0)


def fb(user: str | None, disagree: bool | None = False, **signal) -> FeedbackEvent:
    """Feedback on SERVED: a label that disagrees or not, unless another signal is given."""
    return FeedbackEvent(request_id="r", user_id=user, **signal) if signal else _label_fb(user, bool(disagree))


def feed(guard: FeedbackGuard, events, start: float = 0.0) -> list[str]:
    """Check (user, disagree) pairs one second apart; returns the actions."""
    return [guard.check(SERVED, fb(u, d), now=start + i).action for i, (u, d) in enumerate(events)]


def population(rng: np.random.Generator, n: int, rate: float, users: int, prefix: str = "u"):
    return [(f"{prefix}{rng.integers(users)}", bool(rng.random() < rate)) for _ in range(n)]


def guard(**overrides) -> FeedbackGuard:
    settings = {"cap_events": 10_000, "cap_window_s": 60.0, "alpha": 1e-6, "min_events": 30, **overrides}
    return FeedbackGuard(**settings)


@pytest.mark.parametrize(
    ("request_event", "signal", "expected"),
    [
        (SERVED, {"label": 0}, False),
        (SERVED, {"label": 2}, True),
        (SERVED, {"thumbs": "down"}, True),
        (SERVED, {"thumbs": "up"}, False),
        (SERVED, {"rating": 2}, True),
        (SERVED, {"rating": 3}, None),
        (SERVED, {"rating": 4}, False),
        (GENERATED, {"correction": "howdy"}, True),
        (GENERATED, {"label": 1}, None),
    ],
)
def test_what_counts_as_a_disagreement(request_event, signal, expected):
    assert disagrees(request_event, FeedbackEvent(request_id="r", **signal)) is expected


def test_binomial_tail_matches_the_exact_sum():
    for n, k, p in [(10, 0, 0.3), (10, 3, 0.3), (40, 40, 0.2), (37, 20, 0.45), (5, 6, 0.5)]:
        exact = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))
        assert math.exp(binomial_log_tail(k, n, p)) == pytest.approx(exact, rel=1e-9, abs=1e-300)
    assert binomial_log_tail(900, 1000, 0.2) < -700  # far below float's range, still finite


def test_the_cap_refuses_events_over_it_until_the_next_window():
    g = guard(cap_events=5, cap_window_s=10.0)
    actions = [g.check(SERVED, fb("alice"), now=100.0 + i * 0.5).action for i in range(8)]
    assert actions == ["learn"] * 5 + ["capped"] * 3
    verdict = g.check(SERVED, fb("alice"), now=109.0)
    assert verdict.action == "capped"
    assert "learner.user_cap_events=5" in verdict.reason and "learner.user_cap_window_s" in verdict.reason
    assert "replay" in verdict.reason
    assert g.check(SERVED, fb("alice"), now=110.0).action == "learn"  # a new window
    assert g.check(SERVED, fb("bob"), now=109.5).action == "learn"  # caps are per user
    assert [g.check(SERVED, fb(None), now=109.0).action for _ in range(20)] == ["learn"] * 20
    assert g.counts["capped"] == 4


def test_workers_share_the_cap():
    g = guard(cap_events=5, cap_window_s=10.0, workers=2)
    assert feed(g, [("alice", False)] * 4) == ["learn"] * 3 + ["capped"]


def test_a_label_flipper_is_quarantined_and_announced_once():
    rng = np.random.default_rng(1)
    g = guard()
    feed(g, population(rng, 400, 0.2, users=40))
    verdicts = [g.check(SERVED, fb("mallory", True), now=1000.0 + i) for i in range(40)]
    actions = [v.action for v in verdicts]
    assert actions.count("quarantined") > 0, "40 of 40 disagreements against 20% were not quarantined"
    first = actions.index("quarantined")
    assert first + 1 >= 30, "quarantined before learner.quarantine_min_events"
    assert actions[first:] == ["quarantined"] * (40 - first)
    announced = [v.announce for v in verdicts if v.announce is not None]
    assert len(announced) == 1
    payload = announced[0]
    assert payload["user_id"] == "mallory" and payload["events"] == payload["disagreements"] == first + 1
    assert 0.1 < payload["others_rate"] < 0.3 and payload["p_value"] < 1e-6
    assert "learner.quarantine_alpha" in verdicts[-1].reason and f"of {first + 1} judged" in verdicts[-1].reason
    assert g.check(SERVED, fb("mallory", False), now=2000.0).action == "quarantined"  # agreeing later does not help
    assert g.check(SERVED, fb("u1", True), now=2000.0).action == "learn"


def test_honest_users_at_the_population_rate_are_not_quarantined():
    """300 users with 20 to 200 events each, all at the population's rate: a false quarantine
    costs a real user their voice, so none may happen at alpha = 1e-6."""
    rng = np.random.default_rng(7)
    sizes = rng.integers(20, 200, size=300)
    users = np.repeat(np.arange(300), sizes)
    rng.shuffle(users)
    g = guard()
    actions = feed(g, [(f"h{u}", bool(rng.random() < 0.2)) for u in users])
    assert g.n_quarantined == 0 and "quarantined" not in actions
    assert len(actions) > 30_000


def test_nobody_is_quarantined_when_everyone_disagrees_at_once():
    """A concept drift: the served outputs turn wrong for everyone; the reference follows."""
    rng = np.random.default_rng(3)
    g = guard()
    before = population(rng, 3000, 0.15, users=20)
    after = population(rng, 3000, 0.85, users=20)  # every user has ~150 events after the drift
    actions = feed(g, before + after)
    assert g.n_quarantined == 0 and "quarantined" not in actions


def test_too_few_events_are_never_enough():
    rng = np.random.default_rng(4)
    g = guard(min_events=30)
    feed(g, population(rng, 300, 0.2, users=30))
    assert feed(g, [("mallory", True)] * 29, start=500.0) == ["learn"] * 29
    assert feed(g, [("mallory", True)], start=600.0) == ["quarantined"]


def test_nothing_is_judged_without_others_to_compare_with():
    g = guard()
    assert set(feed(g, [("only-user", True)] * 100)) == {"learn"}


def test_neutral_ratings_are_not_judged():
    rng = np.random.default_rng(5)
    g = guard()
    feed(g, population(rng, 300, 0.2, users=30))
    actions = [g.check(SERVED, fb("carol", rating=3), now=1.0).action for _ in range(100)]
    assert set(actions) == {"learn"} and g.n_quarantined == 0


def test_state_round_trip_gives_the_same_decisions():
    rng = np.random.default_rng(6)
    events = population(rng, 500, 0.2, users=25) + [("mallory", True)] * 20
    rest = population(rng, 200, 0.2, users=25) + [("mallory", True)] * 20 + [("u3", False)] * 50
    original = guard(cap_events=40)
    feed(original, events)
    restored = guard(cap_events=40)
    restored.load_state_dict(json.loads(json.dumps(original.state_dict())))  # plain data only
    assert feed(restored, rest, start=600.0) == feed(original, rest, start=600.0)
    assert restored.state_dict() == original.state_dict()
    assert restored.n_quarantined == 1


def test_a_snapshot_from_before_the_guard_loads_as_a_fresh_guard():
    g = guard()
    g.load_state_dict(None)
    assert g.state_dict() == guard().state_dict()


def test_a_resized_learner_keeps_every_quarantine():
    rng = np.random.default_rng(8)
    guards = [guard(), guard()]
    for i, (user, disagree) in enumerate(population(rng, 600, 0.2, users=30)):
        guards[i % 2].check(SERVED, fb(user, disagree), now=float(i))
    feed(guards[1], [("mallory", True)] * 40, start=700.0)
    parts = [{"learner": {"stats": {}}, "joiner": {}, "positions": {}, "guard": g.state_dict()} for g in guards]
    for rank in range(3):
        resumed = guard()
        resumed.load_state_dict(share_for_rank(parts, rank, 3)["guard"])
        assert resumed.is_quarantined("mallory")
        assert sum(resumed.counts.values()) == (sum(guards[1].counts.values()) if rank == 0 else 0)
