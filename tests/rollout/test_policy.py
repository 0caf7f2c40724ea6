"""The canary policy: advance, promote, roll back, guards, manual actions and clear errors."""

import json
import random

import pytest

from cl.config import ConfigError, RolloutConfig
from cl.rollout import ACTIONS, CanaryPolicy, Decision, Scenario, simulate


def policy(**config) -> CanaryPolicy:
    return CanaryPolicy("7", RolloutConfig(**config), rng=random.Random(0))


def feed(p: CanaryPolicy, version: str, outcomes, negative=None) -> list[Decision]:
    """Observe each outcome (1 = good) of ``version`` and decide after each; all decisions."""
    out = []
    for i, good in enumerate(outcomes):
        p.observe(version, good, negative=None if negative is None else negative[i])
        out += p.decide(now=float(i))
    return out


def actions(decisions) -> list[str]:
    return [d.action for d in decisions]


def test_a_good_challenger_is_promoted_step_by_step():
    p = CanaryPolicy("7", rng=random.Random(1))
    out = simulate(p, Scenario(champion_rate=0.6, challenger_rate=0.75), seed=2, challenger="8")
    assert out.result == "promoted"
    assert actions(out.decisions) == ["start", "advance", "advance", "needs_evaluation", "promote"]
    start, to_half, to_full, needs, promote = out.decisions
    assert start.evidence["weights"] == {"7": 0.9, "8": 0.1}
    assert to_half.evidence["weights"] == {"7": 0.5, "8": 0.5} and to_half.evidence["rule"] == "noninferiority"
    assert to_full.evidence["weights"] == {"7": 0.0, "8": 1.0}
    assert needs.evidence["needs_evaluation"] == ["7", "8"]
    assert promote.version == "8" and promote.evidence["previous_champion"] == "7"
    assert promote.evidence["eval"] == {"challenger": 0.8, "champion": 0.8, "max_drop": 0.02}
    assert p.champion == "8" and not p.active and p.weights == {"8": 1.0}
    assert [h["version"] for h in p.history] == ["7", "8"]
    assert promote.lifecycle_type == "promoted" and to_half.lifecycle_type == "traffic_changed"
    json.dumps([d.to_dict() for d in out.decisions])  # every record is JSON-able


def test_a_bad_challenger_is_rolled_back_and_loses_its_traffic_at_once():
    p = CanaryPolicy("7", rng=random.Random(1))
    out = simulate(p, Scenario(champion_rate=0.6, challenger_rate=0.4), seed=4, challenger="8")
    rollback = out.decisions[-1]
    assert out.result == "rolled_back" and rollback.version == "8" and rollback.evidence["rule"] == "worse"
    assert rollback.evidence["weights"] == {"7": 1.0, "8": 0.0}
    assert rollback.evidence["test"]["upper"] < 0 and rollback.evidence["test"]["p_value_always_valid"] <= 0.01
    assert "worse than the champion with confidence" in rollback.reason
    assert out.challenger_rated < 200
    assert not p.active and {p.assign(f"u{i}") for i in range(200)} == {"7"}
    assert p.observe("8", True) is False  # late ratings of a rolled-back version are ignored


def test_serving_error_rate_rolls_back_only_after_the_minimum_requests():
    p = policy(error_min_requests=100, max_error_rate=0.05)
    p.start("8", now=0.0)
    p.observe_requests("8", 99, 20)
    assert p.decide(now=1.0) == []
    p.observe_requests("8", 1, 0)
    (d,) = p.decide(now=2.0)
    assert (d.action, d.evidence["rule"], d.ts) == ("rollback", "error_rate", 2.0)
    assert "serving error rate 20.0% exceeds 5.0% over 100 requests" in d.reason
    out = simulate(policy(), Scenario(challenger_error=0.12), seed=1)
    assert out.result == "rolled_back" and out.rule == "error_rate"


def test_negative_rate_margin_needs_its_minimum_events():
    # Same good rate (0.5), but the challenger's bad ratings are negative and the champion's neutral.
    p = policy(negative_margin=0.15, negative_min_events=200, min_step_events=10_000)
    p.start("8", now=0.0)
    outcomes = [i % 2 for i in range(400)]
    feed(p, "7", outcomes, negative=[False] * 400)
    assert feed(p, "8", outcomes[:199]) == []  # a handful (199) of events cannot trigger it
    (d,) = feed(p, "8", [0])
    assert (d.action, d.evidence["rule"]) == ("rollback", "negative_margin")
    assert d.evidence["challenger"]["negative_rate"] == pytest.approx(0.505)
    assert d.evidence["thresholds"]["negative_min_events"] == 200


def test_the_forgetting_guard_blocks_promotion_by_rolling_back():
    p = CanaryPolicy("7", rng=random.Random(1))
    scenario = Scenario(champion_rate=0.6, challenger_rate=0.75, champion_eval=0.80, challenger_eval=0.70)
    out = simulate(p, scenario, seed=2, challenger="8")
    assert actions(out.decisions) == ["start", "advance", "advance", "needs_evaluation", "rollback"]
    d = out.decisions[-1]
    assert d.evidence["rule"] == "forgetting" and d.reason.startswith("promotion blocked by the forgetting guard")
    assert d.evidence["eval"] == {"challenger": 0.70, "champion": 0.80, "max_drop": 0.02}
    assert p.champion == "7"
    # Within the bound it is promoted.
    scenario = Scenario(challenger_rate=0.75, challenger_eval=0.79)
    ok = simulate(CanaryPolicy("7", rng=random.Random(1)), scenario, seed=2, challenger="8")
    assert ok.result == "promoted"


def test_a_known_regression_rolls_back_before_any_traffic_judgement():
    p = policy()
    p.observe_eval("7", 0.9)
    p.observe_eval("8", 0.5)
    (start,) = p.start("8", now=0.0)
    assert start.evidence["needs_evaluation"] == []
    p.observe("8", True)
    (d,) = p.decide(now=1.0)
    assert (d.action, d.evidence["rule"]) == ("rollback", "forgetting")


def test_needs_evaluation_is_said_once_then_promotion_follows_the_score():
    p = policy(canary_steps="1.0", min_events=5, min_step_events=5, noninferiority_margin=0.2)
    (start,) = p.start("8", now=0.0)
    assert start.evidence["needs_evaluation"] == ["7", "8"] and "eval scores needed" in start.reason
    feed(p, "7", [1] * 50)
    decisions = feed(p, "8", [1] * 200)
    assert actions(decisions) == ["needs_evaluation"]
    assert p.active and p.champion == "7"
    p.observe_eval("7", 0.5)
    p.observe_eval("8", 0.6)
    assert actions(p.decide(now=9.0)) == ["promote"] and p.champion == "8"


def test_advancing_is_blocked_while_errors_are_high_but_too_few_to_roll_back():
    p = policy(
        canary_steps="0.5,1.0", min_events=5, min_step_events=5, error_min_requests=1000, noninferiority_margin=0.3
    )
    p.start("8", now=0.0)
    p.observe_requests("8", 100, 10)
    feed(p, "7", [1] * 50)
    blocked = feed(p, "8", [1] * 100)
    assert actions(blocked) == ["blocked"]  # said once, not after every event
    assert "serving error rate 10.0% exceeds 5.0%" in blocked[0].reason
    p.observe_requests("8", 900, 0)
    assert actions(p.decide(now=5.0)) == ["advance"]


def test_a_b_n_rollout_splits_the_canary_share_and_judges_each_challenger():
    p = policy(min_events=20, min_step_events=50)
    p.start(["8", "9"], now=0.0)
    assert p.weights == {"7": 0.9, "8": 0.05, "9": 0.05}
    rng = random.Random(0)
    feed(p, "7", [rng.random() < 0.6 for _ in range(1000)])
    rolled = feed(p, "9", [rng.random() < 0.2 for _ in range(200)])
    assert actions(rolled) == ["rollback"] and p.challengers == ("8",)
    advanced = feed(p, "8", [rng.random() < 0.9 for _ in range(60)])
    assert actions(advanced) == ["advance"] and p.weights == {"7": 0.75, "8": 0.25, "9": 0.0}


def test_manual_promote_rollback_and_traffic():
    p = policy()
    p.start(["8", "9"], now=0.0)
    (traffic,) = p.set_traffic("8", 0.3, now=1.0)
    assert traffic.action == "traffic" and p.weights == {"7": 0.65, "8": 0.3, "9": 0.05}
    retire, promote = p.promote("8", now=3.0)  # mid-rollout: the other arms are retired
    assert (retire.action, retire.version, promote.action, p.champion) == ("retire", "9", "promote", "8")
    assert not p.active and p.weights == {"8": 1.0}
    p.promote("11", now=4.0)  # any version, not only a challenger
    assert (p.champion, [h["version"] for h in p.history]) == ("11", ["7", "8", "11"])
    p.rollback(now=5.0)  # no rollout: the champion goes back to the one before it
    assert p.champion == "8"
    p.rollback_to("7", now=6.0)  # or to any named version
    assert p.champion == "7" and p.history[-1] == {
        "version": "7",
        "since": 6.0,
        "action": "rollback",
        "reason": "manual rollback",
    }
    with pytest.raises(ValueError, match="no previous champion to roll back to; name a version with rollback_to"):
        p.rollback(now=7.0)


def test_manual_rollback_of_challengers():
    p = policy()
    p.start(["8", "9"], now=0.0)
    (back,) = p.rollback("9", now=2.0, reason="pager says no")
    assert (back.action, back.reason, back.evidence["rule"]) == ("rollback", "pager says no", "manual")
    assert p.weights == {"7": 0.95, "8": 0.05, "9": 0.0} and p.challengers == ("8",)
    (back,) = p.rollback(now=3.0)  # no version: every active challenger
    assert back.version == "8" and not p.active and p.champion == "7"


def test_rollback_of_the_champion_during_a_rollout_ends_it():
    p = policy()
    p.promote("8", now=0.0)
    p.start("9", now=1.0)
    decisions = p.rollback("8", now=2.0)
    assert actions(decisions) == ["retire", "rollback"] and p.champion == "7" and not p.active


def test_users_keep_their_version_through_the_canary_steps():
    p = policy(canary_steps="0.2,0.6,1.0", min_events=5, min_step_events=5, noninferiority_margin=0.3)
    p.start("8", now=0.0)
    users = [f"user-{i}" for i in range(2000)]
    first = [p.assign(u) for u in users]
    feed(p, "7", [1] * 50)
    while not p.decide(now=1.0):
        p.observe("8", True)
    assert p.weights == {"7": 0.4, "8": 0.6}
    assert [p.assign(u) for u in users] == first  # seen users stay where they were
    assert sum(p.assign(f"new-{i}") == "8" for i in range(2000)) / 2000 == pytest.approx(0.6, abs=0.04)
    p.set_traffic("8", 0.0, now=2.0)  # a pause also sends everyone to the champion
    assert {p.assign(u) for u in users} == {"7"}


def test_invalid_input_names_the_field_and_the_fix():
    p = policy()
    with pytest.raises(ValueError, match="is not an active challenger; active challengers are"):
        p.set_traffic("8", 0.2, now=0.0)
    p.start("8", now=0.0)
    with pytest.raises(ValueError, match="set_traffic: '7' is not an active challenger; the champion takes what"):
        p.set_traffic("7", 0.5, now=0.0)
    with pytest.raises(ValueError, match=r"weights\['8'\]: 1.5 is not a share; use a number in \[0, 1\]"):
        p.set_traffic("8", 1.5, now=0.0)
    assert p.weights == {"7": 0.9, "8": 0.1}  # a refused change leaves the split alone
    with pytest.raises(ValueError, match="rollout 'r1-7-vs-8' is in progress"):
        p.start("9", now=0.0)
    with pytest.raises(ValueError, match="'x' is neither the champion .* use rollback_to"):
        p.rollback("x", now=0.0)
    with pytest.raises(ValueError, match="good: 0.5 is not an outcome"):
        p.observe("8", 0.5)
    with pytest.raises(ValueError, match="must be distinct and differ from the champion"):
        policy().start(["8", "7"], now=0.0)
    with pytest.raises(ValueError, match="score: nan is not a finite number"):
        p.observe_eval("8", float("nan"))
    with pytest.raises(ValueError, match="is already the champion"):
        p.promote("7", now=0.0)
    with pytest.raises(ConfigError, match="rollout.alpha"):
        CanaryPolicy("7", RolloutConfig(alpha=0))
    with pytest.raises(ValueError, match="action 'dance' is unknown"):
        Decision("dance", "7", "why")


def test_replace_retires_the_running_rollout():
    p = policy()
    p.start("8", now=0.0)
    decisions = p.start("9", now=1.0, replace=True)
    assert actions(decisions) == ["retire", "start"] and p.challengers == ("9",)
    assert decisions[0].rollout_id == "r1-7-vs-8" and p.rollout_id == "r2-7-vs-9"


def test_explain_says_where_each_challenger_stands_without_acting():
    p = policy()
    assert p.explain(now=0.0)[0].reason == "no rollout in progress"
    p.start("8", now=0.0)
    feed(p, "7", [1, 0] * 20)
    feed(p, "8", [1, 0] * 20)
    (hold,) = p.explain(now=3.0)
    assert hold.action == "hold" and hold.evidence["step_rated"] == 40 and hold.evidence["test"]["n_challenger"] == 40
    assert set(ACTIONS) >= {"hold", "blocked", "needs_evaluation"}
    assert p.active and p.weights == {"7": 0.9, "8": 0.1}


def test_observations_outside_the_rollout_do_not_count():
    p = policy()
    assert p.observe("7", True) is False and p.observe_requests("7", 5, 1) is False
    p.start("8", now=0.0)
    assert p.observe("3", True) is False and p.observe("8", 1) is True and p.role("8") == "challenger"


def test_delayed_ratings_still_roll_a_bad_challenger_back():
    out = simulate(policy(), Scenario(challenger_rate=0.35, rating_delay=300, rated_share=0.5, users=5000), seed=8)
    assert out.result == "rolled_back" and out.rule == "worse"
