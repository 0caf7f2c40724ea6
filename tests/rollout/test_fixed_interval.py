"""The fixed-interval baseline: K failed checks roll back, passing checks advance."""

import random

import pytest

from cl.rollout import FixedIntervalPolicy, Scenario, simulate


def test_a_bad_challenger_is_rolled_back_after_k_failed_checks():
    p = FixedIntervalPolicy("7", interval_events=100, max_failed_checks=3, rng=random.Random(0))
    out = simulate(p, Scenario(challenger_rate=0.4), seed=1, challenger="8")
    d = out.decisions[-1]
    assert (out.result, d.evidence["rule"], d.evidence["failed_checks"]) == ("rolled_back", "fixed_interval", 3)
    assert out.challenger_rated == 300 and d.evidence["weights"]["8"] == 0.0
    assert d.evidence["check"]["failed"] and d.evidence["check"]["rate"] < d.evidence["check"]["champion_rate"]


def test_a_good_challenger_is_promoted_through_every_step():
    out = simulate(FixedIntervalPolicy("7"), Scenario(challenger_rate=0.8), seed=1, challenger="8")
    assert [d.action for d in out.decisions] == ["start", "advance", "advance", "needs_evaluation", "promote"]


def test_checks_can_run_on_the_clock():
    p = FixedIntervalPolicy("7", interval_events=10_000, interval_s=30.0, max_failed_checks=1)
    p.start("8", now=0.0)
    for _ in range(100):
        p.observe("7", True)
    p.observe("8", False)
    assert p.decide(now=0.0) == [] and p.decide(now=29.0) == []
    (d,) = p.decide(now=30.0)
    assert d.action == "rollback" and d.evidence["check"]["window"]["n"] == 1


def test_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match="interval_events must be an integer >= 1, got 0; max_failed_checks"):
        FixedIntervalPolicy("7", interval_events=0, max_failed_checks=0)
    with pytest.raises(ValueError, match=r"min_drop must be in \[0, 1\]"):
        FixedIntervalPolicy("7", min_drop=2.0)
