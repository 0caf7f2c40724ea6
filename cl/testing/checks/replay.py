"""The checks every replay buffer passes (the contract is :mod:`cl.replay.base`).

Example:
    >>> from cl.replay import ReservoirBuffer
    >>> check_replay_buffer(lambda seed: ReservoirBuffer(50, seed))
    >>> check_replay_buffer(lambda seed: ReservoirBuffer(50, seed=0))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    AssertionError: ReservoirBuffer failed 1 of 13 replay buffer check(s):
      same_seed_same_result: seeds 11 and 12 behave identically: the seed is ignored ...
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Iterable

import numpy as np

from cl.replay import ReplayBuffer, mix_batch
from cl.testing.checks import _stateful
from cl.testing.checks._common import Check, Subject, as_subject, missing_members, run_checks
from cl.testing.checks._stateful import Driver, rng

__all__ = ["N_EXAMPLES", "REPLAY_BUFFER_CHECKS", "check_replay_buffer", "drive_buffer", "make_examples"]

N_EXAMPLES = 600


def make_examples(n: int = N_EXAMPLES) -> list[tuple[dict, Any, float | None]]:
    """A fixed stream of ``(example, label, loss)``: imbalanced labels, every fifth loss unknown."""
    gen = np.random.default_rng(1234)
    labels = gen.choice(4, size=n, p=[0.6, 0.25, 0.1, 0.05])
    losses = gen.gamma(2.0, 0.5, size=n)
    out = []
    for i in range(n):
        example = {"i": i, "x": [float(i), float(i) / 7.0], "text": f"example {i}"}
        loss = None if i % 5 == 0 else float(losses[i])
        out.append((example, int(labels[i]), loss))
    return out


def drive_buffer(buf: Any, items: list, gen: np.random.Generator) -> list:
    """Add ``items`` one by one; every 7th add, sample with keys and report new losses. Returns the trace."""
    trace: list = []
    for j, (example, label, loss) in enumerate(items):
        buf.add(example, label=label, loss=loss)
        if j % 7 == 6:
            pairs = buf.sample(5, gen, return_keys=True)
            keys = [k for k, _ in pairs]
            buf.update_losses(keys, [float(gen.random()) * 2 for _ in keys])
            trace.append((len(buf), buf.seen, keys, [ex["i"] for _, ex in pairs]))
    trace.append(sorted(ex["i"] for ex in buf.sample(len(buf), np.random.default_rng(0))))
    return trace


DRIVER = Driver(
    drive=drive_buffer,
    first_half=lambda: make_examples()[: N_EXAMPLES // 2],
    second_half=lambda: make_examples()[N_EXAMPLES // 2 :],
    whole=make_examples,
    by_reference=("examples",),  # examples are the caller's objects, stored by reference by design
)


# ---- the checks ----------------------------------------------------------------------------


def implements_the_protocol(subject: Subject) -> None:
    buf = subject.make(0)
    assert isinstance(buf, ReplayBuffer), f"{type(buf).__name__} lacks {missing_members(buf, ReplayBuffer)}"


def drives_observable_behaviour(subject: Subject) -> None:
    """Guard for the other checks: the traces they compare must not be trivial."""
    buf = subject.make(0)
    assert 1 <= buf.capacity <= N_EXAMPLES // 4, (
        f"build it with a capacity of at most {N_EXAMPLES // 4} (got {buf.capacity}), "
        f"so the {N_EXAMPLES}-example check stream makes it evict"
    )
    trace = drive_buffer(buf, make_examples(), rng(5))
    assert len(buf) == buf.capacity and trace[-1], "the buffer is not full after the check stream"


def pickle_round_trip_continues_identically(subject: Subject) -> None:
    _stateful.pickle_round_trip_continues_identically(subject, DRIVER)


def state_round_trip_through_json_continues_identically(subject: Subject) -> None:
    _stateful.state_round_trip_through_json_continues_identically(subject, DRIVER)


def same_seed_same_result(subject: Subject) -> None:
    _stateful.same_seed_same_result(subject, DRIVER)


def inputs_are_not_mutated(subject: Subject) -> None:
    buf = subject.make(0)
    items = make_examples()
    before = copy.deepcopy(items)
    drive_buffer(buf, items, rng(0))
    assert items == before, "adding, sampling or scoring changed the examples passed to add()"
    new = [{"i": -1 - k, "x": [0.0]} for k in range(8)]
    new_before = copy.deepcopy(new)
    mix_batch(new, buf, 1.5, rng(0))
    assert new == new_before, "mix_batch() with this buffer changed the new examples"


def state_dict_does_not_alias_internal_state(subject: Subject) -> None:
    _stateful.state_dict_does_not_alias_internal_state(subject, DRIVER)


def load_state_dict_refuses_other_kinds_and_configs(subject: Subject) -> None:
    _stateful.load_state_dict_refuses_other_kinds_and_configs(subject, DRIVER)


def capacity_is_respected_and_seen_counted(subject: Subject) -> None:
    buf = subject.make(0)
    assert len(buf) == 0 and buf.seen == 0, f"a fresh buffer holds {len(buf)} and has seen {buf.seen}"
    for j, (example, label, loss) in enumerate(make_examples()):
        buf.add(example, label=label, loss=loss)
        assert buf.seen == j + 1, f"after {j + 1} adds seen is {buf.seen}"
        assert len(buf) == min(j + 1, buf.capacity), f"after {j + 1} adds it holds {len(buf)} (capacity {buf.capacity})"


def samples_never_repeat_an_example(subject: Subject) -> None:
    for n_added in sorted({0, 7, subject.make(0).capacity, N_EXAMPLES // 2}):
        buf = subject.make(0)
        for example, label, loss in make_examples()[:n_added]:
            buf.add(example, label=label, loss=loss)
        stored = {k for k, _ in buf.sample(len(buf), rng(0), return_keys=True)}
        assert len(stored) == len(buf), f"sample(len(buf)) returned {len(stored)} distinct keys of {len(buf)}"
        gen = rng(8)
        for n in [0, 1, 3, len(buf) // 2, len(buf), len(buf) + 5, 1000]:
            pairs = buf.sample(n, gen, return_keys=True)
            keys = [k for k, _ in pairs]
            where = f"sample({n}) after {n_added} adds"
            assert len(keys) == min(n, len(buf)), f"{where} returned {len(keys)} examples"
            assert len(set(keys)) == len(keys), f"{where} repeated an example"
            assert set(keys) <= stored, f"{where} returned keys it does not hold"
            assert all(ex["i"] == k for k, ex in pairs), f"{where}: keys are not the arrival numbers 0, 1, 2, ..."
            examples = buf.sample(n, np.random.default_rng(n))
            assert len({ex["i"] for ex in examples}) == len(examples) == min(n, len(buf)), f"{where} without keys"


def sample_leaves_the_buffer_alone(subject: Subject) -> None:
    buf = subject.make(0)
    for example, label, loss in make_examples()[:120]:
        buf.add(example, label=label, loss=loss)
    before = buf.state_dict()
    buf.sample(30, rng(0))
    assert buf.state_dict() == before, "sample() changed the buffer's state (it must draw from the caller's rng)"


def update_losses_ignores_unknown_keys_and_checks_its_input(subject: Subject) -> None:
    buf = subject.make(0)
    for example, label, loss in make_examples()[:200]:
        buf.add(example, label=label, loss=loss)
    before = buf.state_dict()
    buf.update_losses([10_000, -3], [0.5, 0.5])  # never stored
    assert buf.state_dict() == before, "update_losses() with keys it never held changed the buffer"
    ((key, _),) = buf.sample(1, rng(0), return_keys=True)
    buf.update_losses([key], [0.123])
    state = buf.state_dict()
    if "keys" in state and "losses" in state:  # the house layout; other buffers may store losses elsewhere
        assert state["losses"][state["keys"].index(key)] == 0.123, "update_losses() did not record the loss"
    _raises(ValueError, lambda: buf.update_losses([key], [0.1, 0.2]), "update_losses() with 1 key and 2 losses")
    _raises(ValueError, lambda: buf.update_losses([key], [-1.0]), "update_losses() with a loss of -1.0", "-1")
    _raises(ValueError, lambda: buf.add({"i": -1}, loss=float("nan")), "add() with a loss of nan", "nan")


def bad_arguments_are_named(subject: Subject) -> None:
    buf = subject.make(0)
    _raises(TypeError, lambda: buf.sample(1, 42), "sample() with rng=42", "default_rng")  # the fix
    _raises(ValueError, lambda: buf.sample(-1, rng(0)), "sample(-1)", "-1")
    _raises(ValueError, lambda: type(buf)(0, 1), f"{type(buf).__name__}(capacity=0, seed=1)", "capacity")


def _raises(kind: type[Exception], call: Callable[[], Any], what: str, names: str | None = None) -> None:
    try:
        call()
    except kind as err:
        assert names is None or names in str(err), f"{what} raised {kind.__name__} without naming {names!r}: {err}"
    else:
        raise AssertionError(f"{what} did not raise {kind.__name__}")


REPLAY_BUFFER_CHECKS: dict[str, Check] = {
    check.__name__: check
    for check in (
        implements_the_protocol,
        drives_observable_behaviour,
        pickle_round_trip_continues_identically,
        state_round_trip_through_json_continues_identically,
        same_seed_same_result,
        inputs_are_not_mutated,
        state_dict_does_not_alias_internal_state,
        load_state_dict_refuses_other_kinds_and_configs,
        capacity_is_respected_and_seen_counted,
        samples_never_repeat_an_example,
        sample_leaves_the_buffer_alone,
        update_losses_ignores_unknown_keys_and_checks_its_input,
        bad_arguments_are_named,
    )
}


def check_replay_buffer(
    factory: Callable[[int], ReplayBuffer] | Subject,
    *,
    uses_seed: bool = True,
    name: str | None = None,
    only: Iterable[str] | None = None,
) -> None:
    """Run every replay buffer check on the buffers ``factory`` builds.

    Args:
        factory: ``factory(seed)`` returns a fresh, empty buffer of capacity at most 150, as
            ``make_replay_buffer`` builds it, e.g. ``lambda seed: MyBuffer(50, seed)``; or a
            :class:`Subject`.
        uses_seed: Whether different seeds must keep different examples (False for a buffer
            without randomness).
        name: How failures name it (default: the class it builds). A :class:`Subject` brings
            its own name and ``uses_seed``.
        only: Run just these checks (names from :data:`REPLAY_BUFFER_CHECKS`).

    Raises:
        AssertionError: Naming every check that failed, and why.
    """
    subject = as_subject(factory, name=name, uses_seed=uses_seed)
    run_checks("replay buffer", REPLAY_BUFFER_CHECKS, subject, only)
