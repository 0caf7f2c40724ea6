"""One shared check suite per interface, run over every implementation (as River's ``checks``).

Each ``check_*`` function builds fresh instances from a factory, ``factory(seed)``, runs every
check of its interface on them and raises one ``AssertionError`` naming each check that
failed. The checks are the contract beyond the signatures: state round trips (pickle, and
through JSON) go on exactly as the original would, the same seed gives the same result,
inputs are not mutated, time comes only from ``now``. Write a new buffer, detector, joiner or
policy, and run its family's check from a test:

- :func:`check_replay_buffer` (:class:`cl.replay.ReplayBuffer`)
- :func:`check_drift_detector` (:class:`cl.drift.DriftDetector`)
- :func:`check_joiner` (:class:`Joiner`, which ``streams.join.FeedbackJoiner`` implements)
- :func:`check_rollout_policy` (:class:`cl.rollout.RolloutPolicy`)

The ``*_CHECKS`` tables map each check's name to the check, for running one at a time
(``only=[name]``) or parametrising a test; :func:`implementations` lists the classes a module
exports that implement an interface, for the test that none skips its checks.
:mod:`cl.testing.checks.subjects` holds the service's own implementations as :class:`Subject` s.

Example:
    >>> from cl.replay import ReservoirBuffer
    >>> from cl.testing.checks import check_replay_buffer
    >>> check_replay_buffer(lambda seed: ReservoirBuffer(50, seed))
    >>> class Forgetful(ReservoirBuffer):  # its snapshots drop the newest stored example
    ...     def state_dict(self):
    ...         state = super().state_dict()
    ...         for key in ("keys", "examples", "labels", "losses"):
    ...             state[key] = state[key][:-1]
    ...         return state
    >>> check_replay_buffer(lambda seed: Forgetful(50, seed), only=["state_round_trip_through_json_continues_identically"])
    Traceback (most recent call last):
    ...
    AssertionError: Forgetful failed 1 of 1 replay buffer check(s):
      state_round_trip_through_json_continues_identically: load_state_dict(state_dict()) does not restore it: ...
"""

from cl.testing.checks._common import Check, Subject, implementations, protocol_members
from cl.testing.checks.drift import DRIFT_DETECTOR_CHECKS, check_drift_detector
from cl.testing.checks.joiner import JOINER_CHECKS, Joiner, check_joiner
from cl.testing.checks.replay import REPLAY_BUFFER_CHECKS, check_replay_buffer
from cl.testing.checks.rollout import ROLLOUT_POLICY_CHECKS, check_rollout_policy

__all__ = [
    "DRIFT_DETECTOR_CHECKS",
    "JOINER_CHECKS",
    "REPLAY_BUFFER_CHECKS",
    "ROLLOUT_POLICY_CHECKS",
    "Check",
    "Joiner",
    "Subject",
    "check_drift_detector",
    "check_joiner",
    "check_replay_buffer",
    "check_rollout_policy",
    "implementations",
    "protocol_members",
]
