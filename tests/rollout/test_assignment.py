"""Sticky assignment: deterministic, monotone, weighted, bounded memory, clear errors."""

import random

import pytest

from cl.rollout import StickyAssigner

USERS = [f"user-{i}" for i in range(10_000)]


def make(weights=None, challengers=("8",), **kwargs) -> StickyAssigner:
    a = StickyAssigner("r1", "7", challengers, **kwargs)
    if weights:
        a.set_weights(weights)
    return a


def test_same_users_same_arms_across_instances_and_a_fresh_process_salt():
    a, b = make({"7": 0.7, "8": 0.3}), make({"7": 0.7, "8": 0.3})
    assert [a.assign(u) for u in USERS[:2000]] == [b.assign(u) for u in USERS[:2000]]
    # blake2b, not hash(): the bucket is a fixed number, whatever PYTHONHASHSEED is
    assert a.bucket("user-1") == pytest.approx(StickyAssigner("r1", "7", ["8"]).bucket("user-1"))
    assert a.bucket("user-1") != StickyAssigner("r2", "7", ["8"]).bucket("user-1")  # reshuffled per rollout


def test_weights_are_respected_for_users_and_for_anonymous_requests():
    a = make({"7": 0.8, "8": 0.2})
    share = sum(a.assign(u) == "8" for u in USERS) / len(USERS)
    assert share == pytest.approx(0.2, abs=0.02)
    anonymous = make({"7": 0.8, "8": 0.2}, rng=random.Random(3))
    share = sum(anonymous.assign(None) == "8" for _ in range(10_000)) / 10_000
    assert share == pytest.approx(0.2, abs=0.02)


def test_a_b_n_split_is_respected():
    a = make({"7": 0.4, "8": 0.3, "9": 0.3}, challengers=("8", "9"))
    arms = [a.assign(u) for u in USERS]
    for version, weight in {"7": 0.4, "8": 0.3, "9": 0.3}.items():
        assert arms.count(version) / len(arms) == pytest.approx(weight, abs=0.02)


def test_mapping_is_monotone_without_memory():
    """A growing challenger keeps every user it had, even when the memory has forgotten them."""
    a = make(memory=0)
    before = set()
    for w in (0.05, 0.1, 0.3, 0.5, 1.0):
        a.set_weights({"7": 1 - w, "8": w})
        now = {u for u in USERS if a.assign(u) == "8"}
        assert before <= now
        before = now
    assert len(before) == len(USERS)


def test_memory_keeps_seen_users_on_their_arm_when_the_challenger_grows():
    a = make({"7": 0.9, "8": 0.1})
    first = [a.assign(u) for u in USERS[:5000]]
    a.set_weights({"7": 0.5, "8": 0.5})
    assert [a.assign(u) for u in USERS[:5000]] == first
    new = [a.assign(u) for u in USERS[5000:]]  # unseen users follow the new weights
    assert new.count("8") / len(new) == pytest.approx(0.5, abs=0.02)


def test_rollback_and_lowered_weights_release_remembered_users():
    a = make({"7": 0.5, "8": 0.5})
    on_challenger = [u for u in USERS[:4000] if a.assign(u) == "8"]
    a.set_weights({"7": 1.0, "8": 0.0})  # rollback: everyone to the champion at once
    assert {a.assign(u) for u in on_challenger} == {"7"}
    a.set_weights({"7": 0.5, "8": 0.5})
    on_challenger = [u for u in USERS[:4000] if a.assign(u) == "8"]
    a.set_weights({"7": 0.9, "8": 0.1})  # lowered: only users whose bucket is in the smaller slot stay
    stayed = [u for u in on_challenger if a.assign(u) == "8"]
    assert stayed == [u for u in on_challenger if a.bucket(u) < 0.1]


def test_memory_is_bounded_lru():
    a = make({"7": 0.5, "8": 0.5}, memory=100)
    for u in USERS[:1000]:
        a.assign(u)
    assert len(a) == 100
    assert [u for u, _ in a.to_dict()["remembered"]] == USERS[900:1000]


def test_state_round_trips_through_json_and_continues_identically():
    import json

    a = make({"7": 0.6, "8": 0.4}, rng=random.Random(5))
    for u in USERS[:300]:
        a.assign(u)
    b = StickyAssigner.from_dict(json.loads(json.dumps(a.to_dict())))
    assert b.to_dict() == a.to_dict()
    assert [a.assign(None) for _ in range(100)] == [b.assign(None) for _ in range(100)]
    assert [a.assign(u) for u in USERS[200:700]] == [b.assign(u) for u in USERS[200:700]]


@pytest.mark.parametrize(
    "weights, match",
    [
        ({"7": 0.5, "8": 0.6}, "sum to 1.1, not 1"),
        ({"7": 0.9, "x": 0.1}, r"unknown arm\(s\) \['x'\]"),
        ({"7": 1.0}, r"missing arm\(s\) \['8'\]"),
        ({"7": 1.2, "8": -0.2}, r"weights\['7'\]: 1.2 is not a share; use a number in \[0, 1\]"),
        ({"7": float("nan"), "8": 1.0}, "not a share"),
    ],
)
def test_bad_weights_raise_naming_the_arm_and_the_fix(weights, match):
    with pytest.raises(ValueError, match=match):
        make().set_weights(weights)


def test_a_challenger_cannot_outgrow_its_slot():
    a = make(challengers=("8", "9"))
    with pytest.raises(ValueError, match=r"exceeds its slot 0.5 \(1 / 2 challengers\)"):
        a.set_weights({"7": 0.3, "8": 0.6, "9": 0.1})
    with pytest.raises(ValueError, match="distinct non-empty version strings"):
        StickyAssigner("r", "7", ["7"])
