"""The shared check suite: every replay buffer and every drift detector passes the same checks.

Each implementation is wrapped in a ``Subject`` that knows how to build it and how to
drive it with a fixed input stream while recording what it does (a *trace*). The generic
checks then compare traces: after a pickle round trip, after a state_dict round trip
(through JSON), for two instances with the same seed. A test below makes sure every
registered implementation has a subject, so a new one cannot skip the suite.
"""

from __future__ import annotations

import copy
import inspect
import json
import pickle
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest

from cl.drift import ADWIN, DRIFT_DETECTORS, DriftDetector, PageHinkley
from cl.replay import (
    REPLAY_BUFFERS,
    ClassBalancedBuffer,
    LossPrioritisedBuffer,
    ReplayBuffer,
    ReservoirBuffer,
    mix_batch,
)

# ---- the inputs ---------------------------------------------------------------------

N_EXAMPLES = 600


def make_examples(n: int = N_EXAMPLES) -> list[tuple[dict, Any, float | None]]:
    """A fixed stream of (example, label, loss): imbalanced labels, some losses unknown."""
    rng = np.random.default_rng(1234)
    labels = rng.choice(4, size=n, p=[0.6, 0.25, 0.1, 0.05])
    losses = rng.gamma(2.0, 0.5, size=n)
    out = []
    for i in range(n):
        example = {"i": i, "x": [float(i), float(i) / 7.0], "text": f"example {i}"}
        loss = None if i % 5 == 0 else float(losses[i])
        out.append((example, int(labels[i]), loss))
    return out


def make_error_stream(n: int = 3000, seed: int = 99) -> np.ndarray:
    """A 0/1 error stream whose rate moves 0.2 -> 0.6 -> 0.3, so detectors fire mid-stream."""
    rng = np.random.default_rng(seed)
    rates = np.repeat([0.2, 0.6, 0.3], n // 3)
    return (rng.random(rates.size) < rates).astype(float)


# ---- subjects -----------------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    name: str
    family: str  # "replay" or "drift"
    registry_key: str
    make: Callable[[int], Any]  # seed -> fresh instance
    uses_seed: bool = False


def drive_buffer(buf: Any, items: list, rng: np.random.Generator) -> list:
    """Add ``items`` one by one; every 7th add, sample with keys and report new losses."""
    trace = []
    for j, (example, label, loss) in enumerate(items):
        buf.add(example, label=label, loss=loss)
        if j % 7 == 6:
            pairs = buf.sample(5, rng, return_keys=True)
            keys = [k for k, _ in pairs]
            buf.update_losses(keys, [float(rng.random()) * 2 for _ in keys])
            trace.append((len(buf), buf.seen, keys, [ex["i"] for _, ex in pairs]))
    trace.append(sorted(ex["i"] for ex in buf.sample(len(buf), np.random.default_rng(0))))
    return trace


def drive_detector(det: Any, xs: np.ndarray, rng: np.random.Generator | None = None) -> list:
    """Feed ``xs``; record the steps that detected and the final counters."""
    trace = [t for t, x in enumerate(xs) if (det.update(float(x)), det.drift_detected)[1]]
    return [trace, det.n_detections]


SUBJECTS = [
    Subject("reservoir", "replay", "reservoir", lambda seed: ReservoirBuffer(50, seed), uses_seed=True),
    Subject("class_balanced", "replay", "class_balanced", lambda seed: ClassBalancedBuffer(50, seed), uses_seed=True),
    Subject(
        "loss_prioritised[lowest_loss]",
        "replay",
        "loss_prioritised",
        lambda seed: LossPrioritisedBuffer(50, seed, alpha=0.8),
    ),
    Subject(
        "loss_prioritised[oldest]",
        "replay",
        "loss_prioritised",
        lambda seed: LossPrioritisedBuffer(50, seed, alpha=1.0, evict="oldest"),
    ),
    Subject("adwin", "drift", "adwin", lambda seed: ADWIN()),
    Subject("adwin[clock=1]", "drift", "adwin", lambda seed: ADWIN(delta=0.01, clock=1, max_buckets=3)),
    Subject("page_hinkley[up]", "drift", "page_hinkley", lambda seed: PageHinkley(threshold=20.0)),
    Subject("page_hinkley[both]", "drift", "page_hinkley", lambda seed: PageHinkley(threshold=20.0, mode="both")),
]
BUFFERS = [s for s in SUBJECTS if s.family == "replay"]
DETECTORS = [s for s in SUBJECTS if s.family == "drift"]


def ids(subjects: list[Subject]) -> list[str]:
    return [s.name for s in subjects]


def first_half(subject: Subject) -> Any:
    return make_examples()[: N_EXAMPLES // 2] if subject.family == "replay" else make_error_stream()[:1500]


def second_half(subject: Subject) -> Any:
    return make_examples()[N_EXAMPLES // 2 :] if subject.family == "replay" else make_error_stream()[1500:]


def drive(subject: Subject, obj: Any, inputs: Any, rng: np.random.Generator) -> list:
    return (drive_buffer if subject.family == "replay" else drive_detector)(obj, inputs, rng)


# ---- checks over every implementation -------------------------------------------------


def test_every_registered_implementation_is_checked():
    assert {s.registry_key for s in BUFFERS} == set(REPLAY_BUFFERS)
    assert {s.registry_key for s in DETECTORS} == set(DRIFT_DETECTORS)


@pytest.mark.parametrize("subject", SUBJECTS, ids=ids(SUBJECTS))
def test_implements_protocol(subject):
    obj = subject.make(0)
    protocol = ReplayBuffer if subject.family == "replay" else DriftDetector
    assert isinstance(obj, protocol)


@pytest.mark.parametrize("subject", SUBJECTS, ids=ids(SUBJECTS))
def test_inputs_drive_observable_behaviour(subject):
    """Guard for the checks below: the traces they compare must not be trivial."""
    trace = drive(
        subject,
        subject.make(0),
        make_examples() if subject.family == "replay" else make_error_stream(),
        np.random.default_rng(5),
    )
    if subject.family == "replay":
        assert len(trace) > 50 and trace[-1], trace[-1]
    else:
        assert trace[1] >= 1, f"{subject.name} never fired on the check stream; the checks would be vacuous"


@pytest.mark.parametrize("subject", SUBJECTS, ids=ids(SUBJECTS))
def test_pickle_round_trip_continues_identically(subject):
    original = subject.make(3)
    drive(subject, original, first_half(subject), np.random.default_rng(1))
    clone = pickle.loads(pickle.dumps(original))
    assert clone.state_dict() == original.state_dict()
    a = drive(subject, original, second_half(subject), np.random.default_rng(2))
    b = drive(subject, clone, second_half(subject), np.random.default_rng(2))
    assert a == b
    assert clone.state_dict() == original.state_dict()


@pytest.mark.parametrize("subject", SUBJECTS, ids=ids(SUBJECTS))
def test_state_dict_round_trip_through_json_continues_identically(subject):
    original = subject.make(3)
    drive(subject, original, first_half(subject), np.random.default_rng(1))
    state = json.loads(json.dumps(original.state_dict()))  # what a snapshot to MLflow would hold
    restored = subject.make(777)  # another seed: the generator's state must come from the snapshot
    restored.load_state_dict(state)
    assert restored.state_dict() == original.state_dict()
    assert len(restored) == len(original) if subject.family == "replay" else True
    a = drive(subject, original, second_half(subject), np.random.default_rng(2))
    b = drive(subject, restored, second_half(subject), np.random.default_rng(2))
    assert a == b
    assert restored.state_dict() == original.state_dict()


@pytest.mark.parametrize("subject", SUBJECTS, ids=ids(SUBJECTS))
def test_same_seed_same_result(subject):
    inputs = make_examples() if subject.family == "replay" else make_error_stream()
    a = drive(subject, subject.make(11), inputs, np.random.default_rng(4))
    b = drive(subject, subject.make(11), inputs, np.random.default_rng(4))
    assert a == b
    if subject.uses_seed:
        c = drive(subject, subject.make(12), inputs, np.random.default_rng(4))
        assert a != c, "the seed should change which examples are kept"


@pytest.mark.parametrize("subject", SUBJECTS, ids=ids(SUBJECTS))
def test_inputs_are_not_mutated(subject):
    obj = subject.make(0)
    if subject.family == "replay":
        items = make_examples()
        before = copy.deepcopy(items)
        drive_buffer(obj, items, np.random.default_rng(0))
        new = [{"i": -1 - k, "x": [0.0]} for k in range(8)]
        new_before = copy.deepcopy(new)
        mix_batch(new, obj, 1.5, np.random.default_rng(0))
        assert items == before
        assert new == new_before
    else:
        xs = make_error_stream()
        before = xs.copy()
        drive_detector(obj, xs)
        np.testing.assert_array_equal(xs, before)


@pytest.mark.parametrize("subject", SUBJECTS, ids=ids(SUBJECTS))
def test_state_dict_does_not_alias_internal_state(subject):
    obj = subject.make(0)
    drive(subject, obj, first_half(subject), np.random.default_rng(0))
    reference = copy.deepcopy(obj.state_dict())

    def scribble(value):  # empty every container in place
        if isinstance(value, dict):
            for v in list(value.values()):
                scribble(v)
            value.clear()
        elif isinstance(value, list):
            for v in value:
                scribble(v)
            value.clear()

    state = obj.state_dict()
    for key, value in state.items():
        if key != "examples":  # examples are the caller's objects, stored by reference by design
            scribble(value)
    assert obj.state_dict() == reference

    loaded = subject.make(0)
    state = copy.deepcopy(reference)
    loaded.load_state_dict(state)
    for key, value in state.items():
        if key != "examples":
            scribble(value)
    assert loaded.state_dict() == reference


@pytest.mark.parametrize("subject", SUBJECTS, ids=ids(SUBJECTS))
def test_load_state_dict_rejects_other_kinds_and_configs(subject):
    obj = subject.make(0)
    state = obj.state_dict()
    with pytest.raises(ValueError, match="state is for"):
        obj.load_state_dict({**state, "kind": "something_else"})
    changed = dict(state["config"])
    key = next(k for k in changed if k != "seed")
    changed[key] = "a different value"
    with pytest.raises(ValueError, match=key):
        obj.load_state_dict({**state, "config": changed})


# ---- checks over every replay buffer --------------------------------------------------


@pytest.mark.parametrize("subject", BUFFERS, ids=ids(BUFFERS))
def test_capacity_respected_and_seen_counted(subject):
    buf = subject.make(0)
    assert buf.capacity == 50 and len(buf) == 0 and buf.seen == 0
    for j, (example, label, loss) in enumerate(make_examples()):
        buf.add(example, label=label, loss=loss)
        assert buf.seen == j + 1
        assert len(buf) == min(j + 1, buf.capacity)


@pytest.mark.parametrize("subject", BUFFERS, ids=ids(BUFFERS))
@pytest.mark.parametrize("n_added", [0, 7, 50, 300])
def test_sampling_without_duplicates(subject, n_added):
    buf = subject.make(0)
    for example, label, loss in make_examples()[:n_added]:
        buf.add(example, label=label, loss=loss)
    stored = {k for k, _ in buf.sample(len(buf), np.random.default_rng(0), return_keys=True)}
    assert len(stored) == len(buf)
    rng = np.random.default_rng(8)
    for n in [0, 1, 3, len(buf) // 2, len(buf), len(buf) + 5, 1000]:
        pairs = buf.sample(n, rng, return_keys=True)
        keys = [k for k, _ in pairs]
        assert len(keys) == min(n, len(buf))
        assert len(set(keys)) == len(keys), "a sample repeated an example"
        assert set(keys) <= stored
        assert all(ex["i"] == k for k, ex in pairs), "keys are arrival numbers"
        examples = buf.sample(n, np.random.default_rng(n))
        assert len({ex["i"] for ex in examples}) == len(examples) == min(n, len(buf))


@pytest.mark.parametrize("subject", BUFFERS, ids=ids(BUFFERS))
def test_sample_leaves_buffer_state_alone(subject):
    buf = subject.make(0)
    for example, label, loss in make_examples()[:120]:
        buf.add(example, label=label, loss=loss)
    before = buf.state_dict()
    buf.sample(30, np.random.default_rng(0))
    assert buf.state_dict() == before


@pytest.mark.parametrize("subject", BUFFERS, ids=ids(BUFFERS))
def test_update_losses_ignores_evicted_keys_and_checks_its_input(subject):
    buf = subject.make(0)
    for example, label, loss in make_examples()[:200]:
        buf.add(example, label=label, loss=loss)
    before = buf.state_dict()
    buf.update_losses([10_000, -3], [0.5, 0.5])  # never stored
    assert buf.state_dict() == before
    ((key, _),) = buf.sample(1, np.random.default_rng(0), return_keys=True)
    buf.update_losses([key], [0.123])
    state = buf.state_dict()
    assert state["losses"][state["keys"].index(key)] == 0.123
    with pytest.raises(ValueError, match="one loss per key"):
        buf.update_losses([key], [0.1, 0.2])
    with pytest.raises(ValueError, match="finite number >= 0"):
        buf.update_losses([key], [-1.0])
    with pytest.raises(ValueError, match="finite number >= 0"):
        buf.add({"i": -1}, loss=float("nan"))


@pytest.mark.parametrize("subject", BUFFERS, ids=ids(BUFFERS))
def test_bad_arguments_are_named(subject):
    buf = subject.make(0)
    with pytest.raises(TypeError, match="default_rng"):
        buf.sample(1, 42)
    with pytest.raises(ValueError, match="non-negative"):
        buf.sample(-1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="capacity"):
        type(buf)(0, 1)


# ---- checks over every drift detector ---------------------------------------------------


@pytest.mark.parametrize("subject", DETECTORS, ids=ids(DETECTORS))
def test_constructor_arguments_are_stored_as_given(subject):
    det = subject.make(0)
    params = inspect.signature(type(det)).parameters
    for name in params:
        assert hasattr(det, name), f"{type(det).__name__} does not keep its argument {name!r}"
    kwargs = {name: getattr(det, name) for name in params}
    twin = type(det)(**kwargs)
    assert all(getattr(twin, name) == kwargs[name] for name in params)
    assert repr(twin) == repr(det)


@pytest.mark.parametrize("subject", DETECTORS, ids=ids(DETECTORS))
def test_drift_detected_is_read_only_and_only_true_for_one_update(subject):
    det = subject.make(0)
    with pytest.raises(AttributeError):
        det.drift_detected = True
    with pytest.raises(AttributeError):
        det.n_detections = 3
    flags = []
    for x in make_error_stream():
        det.update(float(x))
        flags.append(det.drift_detected)
    assert sum(flags) == det.n_detections >= 1
    assert not any(a and b for a, b in zip(flags, flags[1:])) or isinstance(det, ADWIN)


@pytest.mark.parametrize("subject", DETECTORS, ids=ids(DETECTORS))
def test_reset_behaves_like_a_fresh_detector_but_keeps_the_count(subject):
    xs = make_error_stream()
    used = subject.make(0)
    drive_detector(used, xs)
    count = used.n_detections
    used.reset()
    assert not used.drift_detected and used.n_detections == count
    fresh = subject.make(0)
    assert drive_detector(used, xs)[0] == drive_detector(fresh, xs)[0]


@pytest.mark.parametrize("subject", DETECTORS, ids=ids(DETECTORS))
def test_rejects_values_that_are_not_finite_numbers(subject):
    det = subject.make(0)
    for bad in [float("nan"), float("inf"), "high", None]:
        with pytest.raises(ValueError, match="finite numbers"):
            det.update(bad)
    det.update(np.float32(0.5))
    det.update(True)  # a 0/1 error as a bool is fine
