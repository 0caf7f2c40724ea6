"""The serving side's Prometheus metrics, through Ray's own metrics export.

Ray Serve tags each series with its ``deployment``, ``replica`` and ``application``; Ray's
metrics agent on every node serves them at ``http://<node>:<ray.metrics_port>/metrics``
(``infra/prometheus.yml`` scrapes it, ``infra/grafana/cl-service.json`` draws them). Ray
exports a custom metric ``cl_x`` as ``ray_cl_x``, with ``_total`` for a counter and
``_bucket`` / ``_sum`` / ``_count`` for a histogram.

=====================================  ==========================================================
``cl_requests``                        answered requests by ``endpoint``, ``version``, ``arm``, ``status``
``cl_request_latency_ms``              ingress latency by ``endpoint``, ``version``, ``arm`` (histogram)
``cl_feedback``                        feedback by ``outcome`` (``accepted`` or the refusal's reason)
``cl_batch_size``                      rows per replica batch by ``method`` (histogram)
``cl_adapter_loads``                   adapter versions loaded into a replica's slots
``cl_adapter_evictions``               versions evicted from a replica's slots
``cl_expert_load_share``               share of routed tokens per ``layer`` and ``expert`` (gauge)
``cl_expert_load_max_violation``       max load / mean load - 1 per ``layer`` (gauge; 0 is even)
=====================================  ==========================================================
"""

from __future__ import annotations

import time
from typing import Any

from ray.serve import metrics

__all__ = ["IngressMetrics", "MeasureRequests", "ReplicaMetrics", "record_served"]

LATENCY_BOUNDARIES_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]
BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128]


class IngressMetrics:
    """What the HTTP edge counts: requests, latency and feedback."""

    def __init__(self) -> None:
        self.requests = metrics.Counter(
            "cl_requests", "Answered requests.", tag_keys=("endpoint", "version", "arm", "status")
        )
        self.latency = metrics.Histogram(
            "cl_request_latency_ms",
            "Time from receiving a request to answering it.",
            boundaries=LATENCY_BOUNDARIES_MS,
            tag_keys=("endpoint", "version", "arm"),
        )
        self.feedback = metrics.Counter("cl_feedback", "Feedback posted over HTTP.", tag_keys=("outcome",))

    def answered(self, endpoint: str, version: str | None, arm: str | None, status: int, seconds: float) -> None:
        """One request answered with ``status`` after ``seconds``."""
        tags = {"endpoint": endpoint, "version": str(version or "none"), "arm": str(arm or "none")}
        self.requests.inc(1, tags={**tags, "status": str(status)})
        self.latency.observe(seconds * 1000.0, tags=tags)

    def feedback_outcome(self, outcome: str) -> None:
        """``accepted``, or why feedback was refused (``invalid``, ``unavailable``, ``rate_limited``, ...)."""
        self.feedback.inc(1, tags={"outcome": outcome})


MEASURED = {
    "/v1/predict": "predict",
    "/v1/generate": "generate",
    "/v1/completions": "completions",
    "/v1/chat/completions": "chat_completions",
    "/v1/feedback": "feedback",
}
FEEDBACK_OUTCOMES = {
    202: "accepted",
    401: "unauthorized",
    403: "forbidden",
    413: "too_large",
    422: "invalid",
    429: "rate_limited",
    503: "unavailable",
}
_ingress: list[IngressMetrics] = []  # made on first use, in the ingress replica's process


def record_served(request: Any, version: str, arm: str) -> None:
    """Tell :class:`MeasureRequests` which version and arm answered ``request`` (a Starlette request)."""
    request.state.cl_served = (version, arm)


class MeasureRequests:
    """ASGI middleware: counts and times every answer of a measured path (refusals included),
    with the version and arm its handler recorded (``record_served``)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        endpoint = MEASURED.get(scope.get("path", "")) if scope["type"] == "http" else None
        if endpoint is None:
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [500]

        async def watched_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        finally:
            if not _ingress:
                _ingress.append(IngressMetrics())
            version, arm = (scope.get("state") or {}).get("cl_served", (None, None))
            _ingress[0].answered(endpoint, version, arm, status[0], time.perf_counter() - started)
            if endpoint == "feedback":
                _ingress[0].feedback_outcome(FEEDBACK_OUTCOMES.get(status[0], f"status_{status[0]}"))


class ReplicaMetrics:
    """What a model replica counts: batch sizes, adapter loads and evictions, expert load."""

    def __init__(self) -> None:
        self.batch_size = metrics.Histogram(
            "cl_batch_size", "Rows per batch a replica runs.", boundaries=BATCH_BOUNDARIES, tag_keys=("method",)
        )
        self.loads = metrics.Counter("cl_adapter_loads", "Adapter versions loaded into slots.")
        self.evictions = metrics.Counter("cl_adapter_evictions", "Adapter versions evicted from slots.")
        self.expert_share = metrics.Gauge(
            "cl_expert_load_share",
            "Share of routed tokens per expert since the last report.",
            tag_keys=("layer", "expert"),
        )
        self.expert_violation = metrics.Gauge(
            "cl_expert_load_max_violation",
            "Max expert load / mean load - 1 since the last report (0 = even).",
            tag_keys=("layer",),
        )
        self._last_load: dict[str, tuple[float, list[float]]] = {}

    def batch(self, method: str, size: int) -> None:
        self.batch_size.observe(size, tags={"method": method})

    def adapter_loaded(self) -> None:
        self.loads.inc()

    def adapter_evicted(self) -> None:
        self.evictions.inc()

    def expert_load(self, stats: dict[str, dict[str, Any]]) -> None:
        """Set the gauges from ``MoETransformer.expert_load_stats()``.

        A layer that routed no token since the last report keeps its last figures: Ray exports
        a gauge only while it is set, so an idle replica would otherwise drop the series.
        """
        for layer, s in stats.items():
            if s["tokens"]:
                self._last_load[layer] = (float(s["max_violation"]), [float(x) for x in s["share"]])
        for layer, (violation, shares) in self._last_load.items():
            self.expert_violation.set(violation, tags={"layer": layer})
            for expert, share in enumerate(shares):
                self.expert_share.set(share, tags={"layer": layer, "expert": str(expert)})
