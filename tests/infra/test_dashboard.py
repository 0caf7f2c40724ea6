"""The Grafana dashboard draws exactly the metrics the code exports, as Ray names them
(``ray_`` + our name + Prometheus' suffix for the kind)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ray.util import metrics as ray_metrics

from learners.metrics import LearnerMetrics
from serve._private.metrics import IngressMetrics, ReplicaMetrics

REPO = Path(__file__).resolve().parents[2]
SUFFIXES = {
    ray_metrics.Counter: ("_total",),
    ray_metrics.Histogram: ("_bucket", "_sum", "_count"),
    ray_metrics.Gauge: ("",),
}


def _exported() -> dict[str, tuple[str, ...]]:
    """Metric name -> the suffixes Prometheus sees it with, from the classes that define them."""
    out = {}
    for owner in (IngressMetrics(), ReplicaMetrics(), LearnerMetrics("app", 0)):
        for metric in vars(owner).values():
            if isinstance(metric, ray_metrics.Metric):
                kind = next(k for k in SUFFIXES if isinstance(metric, k))
                out[metric.info["name"]] = SUFFIXES[kind]
    return out


def _exprs() -> list[str]:
    dashboard = json.loads((REPO / "infra/grafana/cl-service.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def test_every_series_the_dashboard_queries_is_exported_with_its_suffix():
    exported = _exported()
    for expr in _exprs():
        for name in re.findall(r"\bray_cl_[a-z_]+\b", expr):
            base = next((b for b in exported if any(name == f"ray_{b}{s}" for s in exported[b])), None)
            assert base is not None, f"{expr!r} queries {name}, which no metric of ours exports under that name"


def test_every_exported_metric_is_on_the_dashboard():
    queried = " ".join(_exprs())
    missing = [name for name, suffixes in _exported().items() if not any(f"ray_{name}{s}" in queried for s in suffixes)]
    assert not missing, f"not drawn on infra/grafana/cl-service.json: {missing}"


def test_prometheus_config_scrapes_the_configured_metrics_port():
    from cl.config import Config

    text = (REPO / "infra/prometheus.yml").read_text()
    assert f"127.0.0.1:{Config().ray.metrics_port}" in text
