"""The checks every rollout policy passes (the contract is :class:`cl.rollout.RolloutPolicy`).

The drive is a rollout as the rollout actor runs it: a champion change, an eval score, a
challenger started, then sticky and anonymous requests, serving errors and ratings, with a
decision after each; the challenger is better, and gets its eval score half way.

Example:
    >>> import random
    >>> from cl.rollout import CanaryPolicy
    >>> check_rollout_policy(lambda seed: CanaryPolicy("7", rng=random.Random(seed)))
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any, Callable, Iterable

from cl.rollout import ACTIONS, RolloutPolicy
from cl.testing.checks._common import (
    Check,
    Subject,
    as_subject,
    assert_same,
    json_round_trip,
    missing_members,
    pickle_round_trip,
    run_checks,
    scribble,
    wall_clock_elsewhere,
)

__all__ = [
    "CHALLENGER",
    "FIRST_STEPS",
    "PREVIOUS",
    "ROLLOUT_POLICY_CHECKS",
    "SECOND_STEPS",
    "check_rollout_policy",
    "drive_policy",
]

FIRST_STEPS = 1500  # rated requests before the snapshot point
SECOND_STEPS = 3000  # and after it


PREVIOUS, CHALLENGER = "previous", "challenger"  # the versions the drive promotes and rolls out


def start_rollout(policy: Any) -> list:
    """Promote another version, give it an eval score, and start a rollout of the challenger."""
    assert policy.champion not in (PREVIOUS, CHALLENGER), f"build it with a champion other than {policy.champion!r}"
    trace = [("promote", 0.0, [d.to_dict() for d in policy.promote(PREVIOUS, now=0.0)])]
    policy.observe_eval(PREVIOUS, 0.8)
    return trace + [("start", 1.0, [d.to_dict() for d in policy.start(CHALLENGER, now=1.0)])]


def drive_policy(policy: Any, seed: int, steps: int, t0: int = 0) -> list:
    """Requests, serving counts and ratings, ``decide(now=t)`` after each; the challenger rates better.

    The trace holds each request's arm and each call's decisions (as dicts), tagged with the ``now``
    they were asked for. At ``t == 2000`` the challenger gets its eval score, so it can be promoted.
    """
    rng = random.Random(seed)
    trace: list = []
    for t in range(t0, t0 + steps):
        if t == 2000:
            policy.observe_eval(CHALLENGER, 0.79)
        user = f"u{rng.randrange(3000)}" if rng.random() < 0.7 else None
        version = policy.assign(user)
        policy.observe_requests(version, 1, int(rng.random() < 0.01))
        policy.observe(version, rng.random() < (0.75 if version == CHALLENGER else 0.6))
        trace.append(version)
        decisions = policy.decide(now=float(t))
        if decisions:
            trace.append(("decide", float(t), [d.to_dict() for d in decisions]))
    return trace


def _first_half(policy: Any) -> list:
    return start_rollout(policy) + drive_policy(policy, seed=2, steps=FIRST_STEPS)


def _second_half(policy: Any) -> list:
    return drive_policy(policy, seed=3, steps=SECOND_STEPS, t0=FIRST_STEPS)


def _decisions(trace: list) -> list[tuple[str, float, dict]]:
    """(call, now, decision) for every decision in a trace."""
    return [(step[0], step[1], d) for step in trace if isinstance(step, tuple) for d in step[2]]


# ---- the checks ----------------------------------------------------------------------------


def implements_the_protocol(subject: Subject) -> None:
    policy = subject.make(0)
    assert isinstance(policy, RolloutPolicy), f"{type(policy).__name__} lacks {missing_members(policy, RolloutPolicy)}"


def drives_observable_behaviour(subject: Subject) -> None:
    """Guard for the other checks: mid-rollout at the snapshot point, and decisions besides start."""
    policy = subject.make(0)
    trace = _first_half(policy)
    assert policy.active, (
        f"the rollout ended within {FIRST_STEPS} rated requests; the round trip checks need one in progress "
        "(raise min_step_events or the like)"
    )
    actions = [d["action"] for _, _, d in _decisions(trace + _second_half(policy))]
    assert set(actions) - {"start", "promote"} or actions.count("promote") > 1, (
        f"the check rollout only gave {actions}; a policy should advance, promote or roll back on it"
    )


def state_round_trip_through_json_continues_identically(subject: Subject) -> None:
    original = subject.make(1)
    _first_half(original)
    state = json_round_trip(original.to_dict(), "to_dict()")
    restored = type(original).from_dict(state)
    assert_same(restored.to_dict(), original.to_dict(), "from_dict(to_dict()) does not restore it")
    a, b = _second_half(original), _second_half(restored)
    assert_same(b, a, "after a round trip through to_dict(), JSON and from_dict() it decides differently")
    assert_same(restored.to_dict(), original.to_dict(), "the restored one ends in another state")


def pickle_round_trip_continues_identically(subject: Subject) -> None:
    original = subject.make(1)
    _first_half(original)
    clone = pickle_round_trip(original)
    assert_same(clone.to_dict(), original.to_dict(), "the unpickled copy's to_dict() differs")
    assert_same(_second_half(clone), _second_half(original), "the unpickled copy decides differently")


def same_seed_same_result(subject: Subject) -> None:
    def run(seed: int) -> list:
        policy = subject.make(seed)
        return _first_half(policy) + _second_half(policy)

    a, b = run(4), run(4)
    assert_same(b, a, "two policies built with the same seed, fed the same inputs, decide differently")
    if subject.uses_seed:
        assert run(5) != a, (
            "seeds 4 and 5 split anonymous requests identically: the seed is ignored "
            "(or, if it has no randomness, say so with uses_seed=False)"
        )


def time_comes_only_from_now(subject: Subject) -> None:
    policy = subject.make(0)
    a = _first_half(policy) + _second_half(policy)
    with wall_clock_elsewhere():
        policy = subject.make(0)
        b = _first_half(policy) + _second_half(policy)
    assert_same(b, a, "with the wall clock elsewhere (same `now`s) it decides differently: it reads the wall clock")
    late = [(now, d["ts"], d["action"]) for _, now, d in _decisions(a) if d["ts"] != now]
    assert not late, f"decisions carry another time than the `now` they were taken at: (now, ts, action) {late[:3]}"


def decisions_are_plain_records(subject: Subject) -> None:
    policy = subject.make(0)
    trace = _first_half(policy) + _second_half(policy)
    for _, _, d in _decisions(trace):
        assert d["action"] in ACTIONS, f"unknown action {d['action']!r}; actions are {ACTIONS}"
        assert d["action"] != "hold", "decide() returned a 'hold' record; holds are for explain()"
        assert json.loads(json.dumps(d)) == d, f"decision {d['action']} is not plain JSON: {d}"


def explain_changes_nothing(subject: Subject) -> None:
    policy = subject.make(0)
    _first_half(policy)
    before = policy.to_dict()
    holds = policy.explain(float(FIRST_STEPS))
    assert holds and all(d.action == "hold" for d in holds), f"explain() gave {[d.action for d in holds]}, not holds"
    assert_same(policy.to_dict(), before, "explain() changed the policy's state")


def inputs_are_not_mutated(subject: Subject) -> None:
    policy = subject.make(0)
    policy.promote(PREVIOUS, now=0.0)
    given = [CHALLENGER]
    policy.start(given, now=1.0)
    assert given == [CHALLENGER], f"start() changed the list of challengers it was given: {given}"
    drive_policy(policy, seed=2, steps=FIRST_STEPS)
    state = json_round_trip(policy.to_dict(), "to_dict()")
    kept = copy.deepcopy(state)
    restored = type(policy).from_dict(state)
    assert_same(state, kept, "from_dict() changed the state it was given")
    _second_half(restored)
    assert_same(state, kept, "from_dict() kept parts of the state it was given, and later calls changed them")


def to_dict_does_not_alias_internal_state(subject: Subject) -> None:
    policy = subject.make(0)
    _first_half(policy)
    reference = copy.deepcopy(policy.to_dict())
    scribble(policy.to_dict())
    assert_same(policy.to_dict(), reference, "emptying the lists and dicts of to_dict() changed the policy")


def from_dict_refuses_another_kind(subject: Subject) -> None:
    policy = subject.make(0)
    state = policy.to_dict()
    assert "kind" in state, "to_dict() should carry 'kind', so from_dict() can refuse another policy's state"
    try:
        type(policy).from_dict({**state, "kind": "something_else"})
    except ValueError as err:
        assert "something_else" in str(err), f"the error does not name the state's kind: {err}"
    else:
        raise AssertionError("from_dict() accepted a state whose 'kind' is 'something_else'")


ROLLOUT_POLICY_CHECKS: dict[str, Check] = {
    check.__name__: check
    for check in (
        implements_the_protocol,
        drives_observable_behaviour,
        state_round_trip_through_json_continues_identically,
        pickle_round_trip_continues_identically,
        same_seed_same_result,
        time_comes_only_from_now,
        decisions_are_plain_records,
        explain_changes_nothing,
        inputs_are_not_mutated,
        to_dict_does_not_alias_internal_state,
        from_dict_refuses_another_kind,
    )
}


def check_rollout_policy(
    factory: Callable[[int], RolloutPolicy] | Subject,
    *,
    uses_seed: bool = True,
    name: str | None = None,
    only: Iterable[str] | None = None,
) -> None:
    """Run every rollout policy check on the policies ``factory`` builds.

    Args:
        factory: ``factory(seed)`` returns a fresh policy whose ``rng`` is ``random.Random(seed)``,
            e.g. ``lambda seed: CanaryPolicy("7", rng=random.Random(seed))``; or a :class:`Subject`.
        uses_seed: Whether different seeds must split anonymous requests differently.
        name: How failures name it (default: the class it builds). A :class:`Subject` brings
            its own name and ``uses_seed``.
        only: Run just these checks (names from :data:`ROLLOUT_POLICY_CHECKS`).

    Raises:
        AssertionError: Naming every check that failed, and why.
    """
    subject = as_subject(factory, name=name, uses_seed=uses_seed)
    run_checks("rollout policy", ROLLOUT_POLICY_CHECKS, subject, only)
