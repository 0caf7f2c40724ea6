"""The shared check suite (``cl.testing.checks``) over every implementation, and proof that it can fail.

Every check runs on every subject, one test each, so a failure names both. The tests below
them make sure no registered or exported implementation skips the suite, and that each
family's checks catch a deliberately broken implementation: a check that cannot fail proves
nothing.
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
import time
import types

import numpy as np
import pytest

import cl.rollout
import streams
from cl.drift import DRIFT_DETECTORS, PageHinkley
from cl.replay import REPLAY_BUFFERS, ReplayBuffer, ReservoirBuffer
from cl.rollout import CanaryPolicy, FixedIntervalPolicy, RolloutPolicy
from cl.testing.checks import (
    DRIFT_DETECTOR_CHECKS,
    JOINER_CHECKS,
    REPLAY_BUFFER_CHECKS,
    ROLLOUT_POLICY_CHECKS,
    Joiner,
    Subject,
    check_drift_detector,
    check_joiner,
    check_replay_buffer,
    check_rollout_policy,
    implementations,
    protocol_members,
)
from cl.testing.checks.subjects import DRIFT_DETECTOR_SUBJECTS, REPLAY_BUFFER_SUBJECTS, ROLLOUT_POLICY_SUBJECTS
from streams import FeedbackJoiner

JOINER_SUBJECTS = (
    Subject("feedback_joiner", lambda seed: FeedbackJoiner(max_requests=50, max_age_s=20.0), key="FeedbackJoiner"),
    Subject(
        "feedback_joiner[max_requests=10]",  # the window is bounded by count more than by age
        lambda seed: FeedbackJoiner(max_requests=10, max_age_s=20.0),
        key="FeedbackJoiner",
    ),
)

FAMILIES = (
    (check_replay_buffer, REPLAY_BUFFER_SUBJECTS, REPLAY_BUFFER_CHECKS),
    (check_drift_detector, DRIFT_DETECTOR_SUBJECTS, DRIFT_DETECTOR_CHECKS),
    (check_joiner, JOINER_SUBJECTS, JOINER_CHECKS),
    (check_rollout_policy, ROLLOUT_POLICY_SUBJECTS, ROLLOUT_POLICY_CHECKS),
)


# Failures the suite found in code outside this change; strict, so a fix makes them fail here.
def cases():
    for run, subjects, checks in FAMILIES:
        for subject in subjects:
            for check in checks:
                yield pytest.param(run, subject, check, id=f"{subject.name}-{check}")


@pytest.mark.parametrize(("run", "subject", "check"), list(cases()))
def test_every_implementation_passes_every_check(run, subject, check):
    run(subject, only=[check])


# ---- no implementation skips the suite ---------------------------------------------------------


def test_every_registered_buffer_and_detector_is_checked():
    assert {s.key for s in REPLAY_BUFFER_SUBJECTS} == set(REPLAY_BUFFERS)
    assert {type(s.make(0)) for s in REPLAY_BUFFER_SUBJECTS} == set(REPLAY_BUFFERS.values())
    assert {s.key for s in DRIFT_DETECTOR_SUBJECTS} == set(DRIFT_DETECTORS)
    assert {type(s.make(0)) for s in DRIFT_DETECTOR_SUBJECTS} == set(DRIFT_DETECTORS.values())


def test_every_rollout_policy_cl_rollout_exports_is_checked():
    exported = set(implementations(cl.rollout, RolloutPolicy))
    assert exported == {CanaryPolicy, FixedIntervalPolicy}
    assert {type(s.make(0)) for s in ROLLOUT_POLICY_SUBJECTS} == exported


def test_every_joiner_streams_exports_is_checked():
    exported = set(implementations(streams, Joiner))
    assert exported == {FeedbackJoiner}
    assert {type(s.make(0)) for s in JOINER_SUBJECTS} == exported


def test_implementations_needs_the_whole_interface():
    class Half:  # a buffer without sampling
        capacity = seen = 0

        def add(self, example, *, label=None, loss=None): ...

    module = types.SimpleNamespace(__all__=["Half", "ReplayBuffer", "ReservoirBuffer", "make"])
    module.Half, module.ReplayBuffer, module.ReservoirBuffer, module.make = Half, ReplayBuffer, ReservoirBuffer, len
    assert implementations(module, ReplayBuffer) == [ReservoirBuffer]  # not the protocol itself, nor a function
    assert "__len__" in protocol_members(ReplayBuffer) and "sample" in protocol_members(ReplayBuffer)
    assert "__init__" not in protocol_members(ReplayBuffer)


# ---- the suite can fail ------------------------------------------------------------------------


def failed(err: pytest.ExceptionInfo) -> set[str]:
    """The names of the checks an AssertionError from a ``check_*`` call says failed."""
    return set(re.findall(r"^  (\w+): ", str(err.value), flags=re.M))


class ForgetfulBuffer(ReservoirBuffer):
    """Its snapshots drop the newest stored example."""

    def state_dict(self):
        state = super().state_dict()
        for key in ("keys", "examples", "labels", "losses"):
            state[key] = state[key][:-1]
        return state


class PeekingBuffer(ReservoirBuffer):
    """Samples with its own generator, so sampling changes what it will keep."""

    def sample(self, n, rng, *, return_keys=False):
        return super().sample(n, self._rng, return_keys=return_keys)


class LeakyBuffer(ReservoirBuffer):
    """Hands out its own list of keys in the state."""

    def state_dict(self):
        return {**super().state_dict(), "keys": self._keys}


def test_replay_checks_catch_broken_buffers():
    with pytest.raises(AssertionError, match="ForgetfulBuffer failed") as err:
        check_replay_buffer(lambda seed: ForgetfulBuffer(50, seed))
    assert "state_round_trip_through_json_continues_identically" in failed(err)
    with pytest.raises(AssertionError) as err:
        check_replay_buffer(lambda seed: ReservoirBuffer(50, seed=0))  # ignores its seed
    assert failed(err) == {"same_seed_same_result"}
    with pytest.raises(AssertionError) as err:
        check_replay_buffer(lambda seed: PeekingBuffer(50, seed))
    assert "sample_leaves_the_buffer_alone" in failed(err)
    with pytest.raises(AssertionError) as err:
        check_replay_buffer(lambda seed: LeakyBuffer(50, seed))
    assert failed(err) == {"state_dict_does_not_alias_internal_state"}
    with pytest.raises(AssertionError) as err:
        check_replay_buffer(lambda seed: ReservoirBuffer(500, seed))  # too big to evict on the check stream
    assert "drives_observable_behaviour" in failed(err)


class UnseededPageHinkley(PageHinkley):
    """Jitters its input with a generator that ignores the seed it was given."""

    def __init__(self, seed: int | None = None, threshold: float = 20.0) -> None:
        super().__init__(threshold=threshold)
        self.seed = seed
        self._noise = np.random.default_rng()

    def update(self, x):
        super().update(float(x) + self._noise.normal(0.0, 0.5))


class ChattyPageHinkley(PageHinkley):
    """Says a drift was detected on every update."""

    @property
    def drift_detected(self):
        return True


def test_drift_checks_catch_broken_detectors():
    with pytest.raises(AssertionError, match="UnseededPageHinkley failed") as err:
        check_drift_detector(lambda seed: UnseededPageHinkley(seed), uses_seed=True)
    assert "same_seed_same_result" in failed(err)
    with pytest.raises(AssertionError) as err:
        check_drift_detector(lambda seed: ChattyPageHinkley(threshold=20.0))
    assert "drift_detected_is_read_only_and_counted" in failed(err)
    with pytest.raises(AssertionError) as err:
        check_drift_detector(lambda seed: PageHinkley(threshold=1e9))  # never fires: the checks would be vacuous
    assert "drives_observable_behaviour" in failed(err)


class ForgetsPendingJoiner(FeedbackJoiner):
    """Its snapshots drop the feedback that is waiting for its request."""

    def state_dict(self):
        return {**super().state_dict(), "pending": []}


class WallClockJoiner(FeedbackJoiner):
    """Ages what it holds by the wall clock as well as by ``now``."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._born = time.time()

    def expire(self, now):
        return super().expire(now + (time.time() - self._born))


class MovingJoiner(FeedbackJoiner):
    """Writes the resume offsets into the positions it was given."""

    def request_resume_offsets(self, positions):
        positions.update(super().request_resume_offsets(positions))
        return positions


def test_joiner_checks_catch_broken_joiners():
    window = {"max_requests": 50, "max_age_s": 20.0}
    with pytest.raises(AssertionError, match="ForgetsPendingJoiner failed") as err:
        check_joiner(lambda seed: ForgetsPendingJoiner(**window))
    assert "restart_from_state_and_resume_offsets_continues_identically" in failed(err)
    with pytest.raises(AssertionError) as err:
        check_joiner(lambda seed: WallClockJoiner(**window), only=["time_comes_only_from_now"])
    assert failed(err) == {"time_comes_only_from_now"}
    with pytest.raises(AssertionError) as err:
        check_joiner(lambda seed: MovingJoiner(**window))
    assert "inputs_are_not_mutated" in failed(err)
    with pytest.raises(AssertionError) as err:
        check_joiner(lambda seed: FeedbackJoiner(max_requests=50, max_age_s=20.0, dedupe_window=5))
    assert "every_feedback_is_accounted_for_once" in failed(err)  # a duplicate outlived the window


class ForgetfulCanary(CanaryPolicy):
    """Loses the eval scores when rebuilt from its state."""

    @classmethod
    def from_dict(cls, state):
        return super().from_dict({**state, "eval": {}})


class WallClockCanary(CanaryPolicy):
    """Decides on the wall clock instead of the caller's ``now``."""

    def decide(self, now):
        return super().decide(time.time())


def test_rollout_checks_catch_broken_policies():
    with pytest.raises(AssertionError, match="ForgetfulCanary failed") as err:
        check_rollout_policy(lambda seed: ForgetfulCanary("7", rng=random.Random(seed)))
    assert "state_round_trip_through_json_continues_identically" in failed(err)
    with pytest.raises(AssertionError) as err:
        check_rollout_policy(lambda seed: WallClockCanary("7", rng=random.Random(seed)))
    assert "time_comes_only_from_now" in failed(err)
    with pytest.raises(AssertionError) as err:
        check_rollout_policy(lambda seed: CanaryPolicy("7", rng=random.Random(0)))  # ignores its seed
    assert failed(err) == {"same_seed_same_result"}


def test_a_failure_names_every_failed_check_and_a_crash_counts_as_one():
    class Broken(ReservoirBuffer):
        def sample(self, n, rng, *, return_keys=False):
            raise RuntimeError("out of order")

    with pytest.raises(AssertionError) as err:
        check_replay_buffer(
            lambda seed: Broken(50, seed),
            name="broken",
            only=["implements_the_protocol", "sample_leaves_the_buffer_alone", "same_seed_same_result"],
        )
    message = str(err.value)
    assert message.startswith("broken failed 2 of 3 replay buffer check(s):")
    assert failed(err) == {"sample_leaves_the_buffer_alone", "same_seed_same_result"}
    assert "RuntimeError: out of order (raised at" in message
    assert isinstance(err.value.__cause__, RuntimeError)


def test_unknown_check_names_are_refused():
    with pytest.raises(ValueError, match="unknown joiner check"):
        check_joiner(JOINER_SUBJECTS[0], only=["pickle_round_trip"])


def test_the_suite_imports_without_pytest():
    code = "import sys, cl.testing, cl.testing.checks; assert 'pytest' not in sys.modules, 'pytest was imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_cl_testing_loads_the_suite_only_when_asked():
    code = (
        "import sys, cl.testing; assert 'cl.testing.checks' not in sys.modules; "
        "from cl.testing import check_joiner; assert check_joiner.__module__ == 'cl.testing.checks.joiner'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
