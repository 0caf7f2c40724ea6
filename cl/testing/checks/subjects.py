"""The service's own implementations, as subjects of the shared checks.

``tests/testing/test_checks.py`` runs every check on each of them, and makes sure every
registered implementation appears here. (The joiner lives in ``streams``, which ``cl`` may not
import; its subject is in that test.)
"""

from __future__ import annotations

import random

from cl.drift import ADWIN, PageHinkley
from cl.replay import ClassBalancedBuffer, LossPrioritisedBuffer, ReservoirBuffer
from cl.rollout import CanaryPolicy, FixedIntervalPolicy
from cl.testing.checks._common import Subject

__all__ = ["DRIFT_DETECTOR_SUBJECTS", "REPLAY_BUFFER_SUBJECTS", "ROLLOUT_POLICY_SUBJECTS"]

REPLAY_BUFFER_SUBJECTS = (
    Subject("reservoir", lambda seed: ReservoirBuffer(50, seed), uses_seed=True, key="reservoir"),
    Subject("class_balanced", lambda seed: ClassBalancedBuffer(50, seed), uses_seed=True, key="class_balanced"),
    Subject(
        "loss_prioritised[lowest_loss]",
        lambda seed: LossPrioritisedBuffer(50, seed, alpha=0.8),
        key="loss_prioritised",
    ),
    Subject(
        "loss_prioritised[oldest]",
        lambda seed: LossPrioritisedBuffer(50, seed, alpha=1.0, evict="oldest"),
        key="loss_prioritised",
    ),
)

DRIFT_DETECTOR_SUBJECTS = (
    Subject("adwin", lambda seed: ADWIN(), key="adwin"),
    Subject("adwin[clock=1]", lambda seed: ADWIN(delta=0.01, clock=1, max_buckets=3), key="adwin"),
    Subject("page_hinkley[up]", lambda seed: PageHinkley(threshold=20.0), key="page_hinkley"),
    Subject("page_hinkley[both]", lambda seed: PageHinkley(threshold=20.0, mode="both"), key="page_hinkley"),
)

ROLLOUT_POLICY_SUBJECTS = (
    Subject("canary", lambda seed: CanaryPolicy("7", rng=random.Random(seed)), uses_seed=True, key="canary"),
    Subject(
        "fixed_interval",
        lambda seed: FixedIntervalPolicy("7", rng=random.Random(seed), interval_events=50),
        uses_seed=True,
        key="fixed_interval",
    ),
    Subject(
        "fixed_interval[interval_s=300]",
        lambda seed: FixedIntervalPolicy("7", rng=random.Random(seed), interval_events=100, interval_s=300.0),
        uses_seed=True,
        key="fixed_interval",
    ),
)
