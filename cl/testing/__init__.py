"""Test support the suite and the service's own checks share: failpoints, simulated users, check suites.

``failpoints`` lets a crash test kill a process at a named step; ``simulated_users`` are the
demo's and the tests' users; ``checks`` runs one contract over every implementation of an
interface (replay buffers, drift detectors, joiners, rollout policies), as River's checks do:
``check_replay_buffer(lambda seed: MyBuffer(50, seed))`` raises naming each check it fails.
"""

from typing import Any

from cl.testing.failpoints import FAILPOINTS_ENV, failpoint
from cl.testing.simulated_users import SimulatedUsers

__all__ = [
    "FAILPOINTS_ENV",
    "SimulatedUsers",
    "check_drift_detector",
    "check_joiner",
    "check_replay_buffer",
    "check_rollout_policy",
    "failpoint",
]

_CHECKS = {"check_drift_detector", "check_joiner", "check_replay_buffer", "check_rollout_policy"}


def __getattr__(name: str) -> Any:
    # The learner imports failpoints in production; the check suite (numpy, every domain
    # package) loads only when a check is asked for.
    if name in _CHECKS:
        from cl.testing import checks

        return getattr(checks, name)
    raise AttributeError(f"module 'cl.testing' has no attribute {name!r}")
