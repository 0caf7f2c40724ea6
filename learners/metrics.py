"""The online learner's Prometheus metrics, through Ray's own metrics export.

Recorded by :class:`learners.feedback_loop.FeedbackLoop` in each Ray Train worker and
exported by the Ray metrics agent of its node, beside the serving metrics
(:mod:`serve._private.metrics`); every series carries the service's ``app`` and the worker's
``rank``. Outside a Ray
worker (``cl learn --foreground``) Ray discards them. Exported as ``ray_<name>`` (counters
with ``_total``).

=====================================  ============================================================
``cl_learner_events``                  events learned from (rate: events/s)
``cl_learner_loss``                    loss of the last micro-batch (gauge)
``cl_learner_drift_detections``        drifts the detector flagged
``cl_learner_versions_published``      snapshots published to MLflow
``cl_learner_dead_letters``            events sent to the dead-letter topic, by ``reason``
``cl_learner_replay_size``             examples in the replay buffer (gauge)
``cl_learner_expert_max_violation``    EMA of max expert load / mean load - 1 while training (gauge)
``cl_consumer_lag``                    records not yet read, by ``topic`` (gauge)
=====================================  ============================================================
"""

from __future__ import annotations

import math

from ray.util import metrics

__all__ = ["LearnerMetrics"]


class LearnerMetrics:
    """One worker's metrics.

    Args:
        app: The service (``config.app``), a tag on every series: several may share a cluster.
        rank: The worker's rank, a tag on every series.
    """

    def __init__(self, app: str, rank: int) -> None:
        tags = ("app", "rank")
        self._tags = {"app": app, "rank": str(rank)}
        self.events = metrics.Counter("cl_learner_events", "Feedback events learned from.", tag_keys=tags)
        self.loss = metrics.Gauge("cl_learner_loss", "Loss of the last micro-batch.", tag_keys=tags)
        self.drifts = metrics.Counter("cl_learner_drift_detections", "Concept drifts detected.", tag_keys=tags)
        self.published = metrics.Counter("cl_learner_versions_published", "Snapshots published.", tag_keys=tags)
        self.dead = metrics.Counter("cl_learner_dead_letters", "Events dead-lettered.", tag_keys=(*tags, "reason"))
        self.replay = metrics.Gauge("cl_learner_replay_size", "Examples in the replay buffer.", tag_keys=tags)
        self.violation = metrics.Gauge(
            "cl_learner_expert_max_violation", "EMA of max expert load / mean load - 1.", tag_keys=tags
        )
        self.lag = metrics.Gauge("cl_consumer_lag", "Records not read yet.", tag_keys=(*tags, "topic"))
        self._dead_seen: dict[str, int] = {}
        self._last_loss = math.nan

    def step(self, n_events: int, loss: float, drift: bool) -> None:
        """After one micro-batch."""
        if n_events > 0:
            self.events.inc(n_events, tags=self._tags)
        if math.isfinite(loss):
            self._last_loss = loss
            self.loss.set(loss, tags=self._tags)
        if drift:
            self.drifts.inc(1, tags=self._tags)

    def version_published(self) -> None:
        self.published.inc(1, tags=self._tags)

    def progress(self, learner_metrics: dict[str, float], dead_letters: dict[str, int], lag: dict[str, int]) -> None:
        """Every few seconds: gauges from ``OnlineLearner.metrics()``, dead letters (running
        counts by reason) and the consumer lag by topic. The last loss is set again: Ray exports
        a gauge only while it is being set, and an idle learner takes no step."""
        if math.isfinite(self._last_loss):
            self.loss.set(self._last_loss, tags=self._tags)
        self.replay.set(float(learner_metrics.get("replay_size", 0.0)), tags=self._tags)
        violation = learner_metrics.get("expert_max_violation", float("nan"))
        if math.isfinite(violation):
            self.violation.set(violation, tags=self._tags)
        for reason, count in dead_letters.items():
            new = count - self._dead_seen.get(reason, 0)
            if new > 0:
                self.dead.inc(new, tags={**self._tags, "reason": reason})
            self._dead_seen[reason] = count
        for topic, value in lag.items():
            self.lag.set(float(value), tags={**self._tags, "topic": topic})
