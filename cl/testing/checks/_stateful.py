"""Checks for anything with ``state_dict`` / ``load_state_dict``: replay buffers, drift detectors (internal).

Each family says how to drive an instance (a :class:`Driver`); these checks compare the traces
the drive records: after a pickle round trip, after a state round trip through JSON, for two
instances built with the same seed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from cl.testing.checks._common import Subject, assert_same, json_round_trip, pickle_round_trip, scribble


@dataclass(frozen=True)
class Driver:
    """How to exercise one family.

    Attributes:
        drive: ``drive(obj, inputs, rng) -> trace``: feed ``inputs``, record what ``obj`` does.
        first_half: The check stream up to the snapshot point.
        second_half: The rest of it.
        whole: All of it.
        by_reference: State keys that hold the caller's own objects (stored by reference by design).
    """

    drive: Callable[[Any, Any, np.random.Generator], list]
    first_half: Callable[[], Any]
    second_half: Callable[[], Any]
    whole: Callable[[], Any]
    by_reference: tuple[str, ...] = ()


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def pickle_round_trip_continues_identically(subject: Subject, driver: Driver) -> None:
    original = subject.make(3)
    driver.drive(original, driver.first_half(), rng(1))
    clone = pickle_round_trip(original)
    assert_same(clone.state_dict(), original.state_dict(), "the unpickled copy's state_dict() differs")
    a = driver.drive(original, driver.second_half(), rng(2))
    b = driver.drive(clone, driver.second_half(), rng(2))
    assert_same(b, a, "after a pickle round trip the copy behaves differently from the original")
    assert_same(clone.state_dict(), original.state_dict(), "the unpickled copy ends in another state")


def state_round_trip_through_json_continues_identically(subject: Subject, driver: Driver) -> None:
    original = subject.make(3)
    driver.drive(original, driver.first_half(), rng(1))
    state = json_round_trip(original.state_dict(), "state_dict()")  # what a snapshot to MLflow would hold
    restored = subject.make(777)  # another seed: the generator's state must come from the snapshot
    restored.load_state_dict(state)
    assert_same(restored.state_dict(), original.state_dict(), "load_state_dict(state_dict()) does not restore it")
    if hasattr(original, "__len__"):
        assert len(restored) == len(original), f"restored holds {len(restored)}, the original {len(original)}"
    a = driver.drive(original, driver.second_half(), rng(2))
    b = driver.drive(restored, driver.second_half(), rng(2))
    assert_same(b, a, "after a state round trip through JSON it behaves differently from the original")
    assert_same(restored.state_dict(), original.state_dict(), "the restored one ends in another state")


def same_seed_same_result(subject: Subject, driver: Driver) -> None:
    a = driver.drive(subject.make(11), driver.whole(), rng(4))
    b = driver.drive(subject.make(11), driver.whole(), rng(4))
    assert_same(b, a, "two instances built with the same seed, fed the same inputs, behave differently")
    if subject.uses_seed:
        c = driver.drive(subject.make(12), driver.whole(), rng(4))
        assert a != c, (
            "seeds 11 and 12 behave identically: the seed is ignored "
            "(or, if it has no randomness, say so with uses_seed=False)"
        )


def state_dict_does_not_alias_internal_state(subject: Subject, driver: Driver) -> None:
    obj = subject.make(0)
    driver.drive(obj, driver.first_half(), rng(0))
    reference = copy.deepcopy(obj.state_dict())
    state = obj.state_dict()
    for key, value in state.items():
        if key not in driver.by_reference:
            scribble(value)
    assert_same(obj.state_dict(), reference, "emptying the lists and dicts of state_dict() changed the instance")

    loaded = subject.make(0)
    state = copy.deepcopy(reference)
    loaded.load_state_dict(state)
    for key, value in state.items():
        if key not in driver.by_reference:
            scribble(value)
    assert_same(
        loaded.state_dict(), reference, "emptying the state given to load_state_dict() afterwards changed the instance"
    )


def load_state_dict_refuses_other_kinds_and_configs(subject: Subject, driver: Driver) -> None:
    obj = subject.make(0)
    state = obj.state_dict()
    assert "kind" in state and isinstance(state.get("config"), dict) and state["config"], (
        "state_dict() should carry 'kind' and a non-empty 'config' dict, so that load_state_dict() can refuse "
        f"a state taken from another implementation or configuration; it has {sorted(state)}"
    )
    try:
        obj.load_state_dict({**state, "kind": "something_else"})
    except ValueError as err:
        assert "something_else" in str(err), f"the error does not name the state's kind: {err}"
    else:
        raise AssertionError("load_state_dict() accepted a state whose 'kind' is 'something_else'")
    changed = dict(state["config"])
    key = next((k for k in changed if k != "seed"), None)
    assert key is not None, "the state's 'config' holds only the seed; nothing to compare a snapshot against"
    changed[key] = "a different value"
    try:
        obj.load_state_dict({**state, "config": changed})
    except ValueError as err:
        assert key in str(err), f"the error does not name the differing config key {key!r}: {err}"
    else:
        raise AssertionError(f"load_state_dict() accepted a state taken with another {key!r}")
