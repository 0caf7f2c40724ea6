"""Test support the suite and the service's own checks share: failpoints, simulated users, check suites.

``failpoints`` lets a crash test kill a process at a named step; ``simulated_users`` are the
demo's and the tests' users; ``checks`` runs one contract over every implementation of an
interface (replay buffers, drift detectors, joiners, rollout policies), as River's checks do.
"""

from cl.testing.failpoints import FAILPOINTS_ENV, failpoint
from cl.testing.simulated_users import SimulatedUsers

__all__ = ["FAILPOINTS_ENV", "SimulatedUsers", "failpoint"]
