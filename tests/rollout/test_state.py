"""Checks every rollout policy passes: state round trip through JSON, same seed same result."""

import json
import random

import pytest

from cl.config import RolloutConfig
from cl.rollout import CanaryPolicy, FixedIntervalPolicy, RolloutPolicy, Scenario, simulate

POLICIES = {
    "canary": lambda seed: CanaryPolicy("7", rng=random.Random(seed)),
    "fixed_interval": lambda seed: FixedIntervalPolicy("7", rng=random.Random(seed), interval_events=50),
}


def drive(policy, seed: int, steps: int, t0: int = 0) -> list[dict]:
    """Sticky and anonymous requests, ratings and serving counts; the decisions as dicts."""
    rng = random.Random(seed)
    trace = []
    for t in range(t0, t0 + steps):
        user = f"u{rng.randrange(3000)}" if rng.random() < 0.7 else None
        version = policy.assign(user)
        policy.observe_requests(version, 1, int(rng.random() < 0.01))
        policy.observe(version, rng.random() < (0.75 if version == "8" else 0.6))
        trace.append(version)
        trace += [d.to_dict() for d in policy.decide(now=float(t))]
    return trace


@pytest.mark.parametrize("kind", POLICIES)
def test_implements_the_protocol(kind):
    assert isinstance(POLICIES[kind](0), RolloutPolicy)


@pytest.mark.parametrize("kind", POLICIES)
def test_state_round_trips_through_json_mid_rollout_and_continues_identically(kind):
    a = POLICIES[kind](1)
    a.promote("6", now=0.0)
    a.observe_eval("6", 0.8)
    a.start("8", now=1.0)
    drive(a, seed=2, steps=1500)
    assert a.active and a.to_dict()["assigner"]["remembered"]
    state = json.loads(json.dumps(a.to_dict()))
    b = type(a).from_dict(state)
    assert b.to_dict() == a.to_dict() == state
    trace = drive(a, seed=3, steps=3000, t0=1500)
    assert trace == drive(b, seed=3, steps=3000, t0=1500)
    assert [d["action"] for d in trace if isinstance(d, dict)][:1] == ["advance"]
    assert a.to_dict() == b.to_dict()


@pytest.mark.parametrize("kind", POLICIES)
def test_same_seed_same_result_and_inputs_untouched(kind):
    scenario = Scenario(challenger_rate=0.7, users=500)
    a = simulate(POLICIES[kind](4), scenario, seed=5, challenger="8")
    b = simulate(POLICIES[kind](4), scenario, seed=5, challenger="8")
    assert [d.to_dict() for d in a.decisions] == [d.to_dict() for d in b.decisions]
    assert a.requests == b.requests and a.result == b.result
    config = RolloutConfig()
    POLICIES[kind](0).__class__("7", config)
    assert config == RolloutConfig()


def test_state_of_another_kind_or_format_is_refused():
    state = CanaryPolicy("7").to_dict()
    with pytest.raises(ValueError, match="state is for a 'canary' policy, not 'fixed_interval'"):
        FixedIntervalPolicy.from_dict(state)
    with pytest.raises(ValueError, match="state format 99 is unsupported"):
        CanaryPolicy.from_dict({**state, "format": 99})
