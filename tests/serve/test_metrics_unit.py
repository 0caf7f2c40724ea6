"""The metrics' own logic, with Ray's metric objects replaced by recorders (a unit test of pure
logic; the export itself is tested on the live app in test_app.py and test_online_loop.py)."""

from __future__ import annotations

import asyncio
import math


class Recorder:
    """Stands in for a Ray Counter / Gauge / Histogram: keeps every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, dict]] = []

    def set(self, value, tags=None):  # noqa: ANN001
        self.calls.append((value, dict(tags or {})))

    inc = observe = set


def test_an_idle_replica_keeps_exporting_its_last_expert_load():
    from serve._private.metrics import ReplicaMetrics

    m = ReplicaMetrics()
    m.expert_share, m.expert_violation = Recorder(), Recorder()
    m.expert_load(
        {
            "layer0": {"tokens": 10, "share": [0.75, 0.25], "max_violation": 0.5},
            "layer1": {"tokens": 0, "share": [0.0, 0.0], "max_violation": 0.0},
        }
    )
    assert m.expert_share.calls == [
        (0.75, {"layer": "layer0", "expert": "0"}),
        (0.25, {"layer": "layer0", "expert": "1"}),
    ]
    m.expert_share.calls.clear()
    m.expert_load({"layer0": {"tokens": 0, "share": [0.0, 0.0], "max_violation": 0.0}})  # idle since
    assert [v for v, _ in m.expert_share.calls] == [0.75, 0.25] and m.expert_violation.calls[-1][0] == 0.5


def test_the_learner_sets_its_last_loss_again_and_counts_new_dead_letters_once():
    from learners.metrics import LearnerMetrics

    m = LearnerMetrics("app", 1)
    m.loss, m.dead, m.lag, m.events = Recorder(), Recorder(), Recorder(), Recorder()
    m.step(16, 0.5, drift=False)
    m.step(0, math.nan, drift=False)  # no step: the gauge keeps 0.5
    m.progress({"replay_size": 3.0}, {"invalid": 2}, {"t.feedback": 7})
    m.progress({"replay_size": 3.0}, {"invalid": 5, "unjoined": 1}, {"t.feedback": 0})
    assert [v for v, _ in m.loss.calls] == [0.5, 0.5, 0.5]
    assert [(v, t["reason"]) for v, t in m.dead.calls] == [(2, "invalid"), (3, "invalid"), (1, "unjoined")]
    assert m.lag.calls[-1] == (0.0, {"app": "app", "rank": "1", "topic": "t.feedback"})
    assert m.events.calls == [(16, {"app": "app", "rank": "1"})]


def test_the_middleware_counts_every_answer_with_the_version_and_arm_its_handler_named():
    from serve._private import metrics

    recorded = metrics.IngressMetrics()
    recorded.requests, recorded.latency, recorded.feedback = Recorder(), Recorder(), Recorder()
    metrics._ingress[:] = [recorded]

    async def app(scope, receive, send):  # noqa: ANN001 - a handler that names what served it
        if scope["path"] == "/v1/predict":
            scope.setdefault("state", {})["cl_served"] = ("7", "challenger")
        status = 200 if scope["path"] == "/v1/predict" else 422
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def call(path: str) -> None:
        async def send(message):  # noqa: ANN001
            pass

        await metrics.MeasureRequests(app)({"type": "http", "path": path}, None, send)

    for path in ("/v1/predict", "/v1/feedback", "/healthz"):
        asyncio.run(call(path))
    tags = [t for _, t in recorded.requests.calls]
    assert tags == [
        {"endpoint": "predict", "version": "7", "arm": "challenger", "status": "200"},
        {"endpoint": "feedback", "version": "none", "arm": "none", "status": "422"},
    ]
    assert recorded.feedback.calls == [(1, {"outcome": "invalid"})] and len(recorded.latency.calls) == 2
    metrics._ingress.clear()
