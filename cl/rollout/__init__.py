"""Rollout of challenger adapter versions: sticky traffic split, canary steps, promotion, rollback.

Pure decisions (no Ray, Kafka or MLflow here): the rollout actor feeds a policy what it
observes and acts on the :class:`Decision` records it gets back. See ``docs/rollout.md``.

Public API:

- :class:`RolloutPolicy`: the protocol every policy implements.
- :class:`CanaryPolicy`: canary steps judged by an always-valid mixture SPRT (the default).
- :class:`FixedIntervalPolicy`: the fixed-interval, K-failed-checks baseline.
- :class:`Decision`, :data:`ACTIONS`: decision records and their actions.
- :class:`StickyAssigner`: sticky, monotone assignment of users to versions.
- :class:`MixtureSPRT`, :class:`Comparison`: the sequential test and one look at it.
- :func:`simulate`, :class:`Scenario`, :class:`Outcome`: seeded simulation of rated traffic.
"""

from cl.rollout.assignment import StickyAssigner
from cl.rollout.decision import ACTIONS, Decision
from cl.rollout.fixed_interval import FixedIntervalPolicy
from cl.rollout.policy import CanaryPolicy
from cl.rollout.protocol import RolloutPolicy
from cl.rollout.sequential import Comparison, MixtureSPRT
from cl.rollout.simulate import Outcome, Scenario, simulate

__all__ = [
    "ACTIONS",
    "CanaryPolicy",
    "Comparison",
    "Decision",
    "FixedIntervalPolicy",
    "MixtureSPRT",
    "Outcome",
    "RolloutPolicy",
    "Scenario",
    "StickyAssigner",
    "simulate",
]
