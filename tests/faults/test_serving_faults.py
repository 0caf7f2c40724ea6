"""Serving under faults on the real stack, with clients that retry as documented.

One app with two model replicas serves both tests, in this order: a corrupted adapter
artifact must be refused by its checksum and never served, then a model replica killed
under load must be replaced without a request failing after the documented retry (and the
replacement must come up on the good version, not on the corrupted newest one).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
import ray

from bench.bench_online import fresh_config
from bench.bench_soak import SteadyLoad, alive_actors, summarize
from cl.config import Config
from cl.events import LifecycleEvent
from cl.model.base_model import build_base_model
from cl.registry import ADAPTER_FILE, AdapterRegistry
from streams import EventProducer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def service(stack):
    """A fresh app (own topics and registered model) with ``serve.replicas = 2``."""
    from serve.app import deploy, shutdown

    config = fresh_config(stack)
    config = dataclasses.replace(config, serve=dataclasses.replace(config.serve, replicas=2))
    url = deploy(config)
    registry = AdapterRegistry(config.mlflow.tracking_uri, config.mlflow.model_name)
    yield {"config": config, "url": url, "registry": registry}
    shutdown(config)


def _publish_and_announce(service, *, corrupt: bool = False) -> str:
    """Register an adapter version (corrupting its stored artifact first if asked) and announce it."""
    config: Config = service["config"]
    adapter = build_base_model(config.model, n_adapter_slots=1).adapter_state(0)
    version = service["registry"].publish(adapter, tags={"base_version": config.model.base_version, "reason": "test"})
    if corrupt:
        _corrupt_artifact(config, service["registry"], version)
    producer = EventProducer(config.kafka.bootstrap_servers)
    payload = {"version": version, "model_name": config.mlflow.model_name, "base_version": config.model.base_version}
    producer.send_and_wait(config.topics.events, LifecycleEvent(type="version_published", payload=payload))
    producer.close()
    return version


def _corrupt_artifact(config: Config, registry: AdapterRegistry, version: str) -> Path:
    """Flip the last bytes of ``version``'s adapter file in the local MLflow artifact store: the
    file still parses as safetensors (silent corruption of the weights), only its checksum differs."""
    from infra.mlflow_server import MLflowServer

    server = MLflowServer(config)
    if not server.managed:
        pytest.skip("the artifact store of an external MLflow (CL_MLFLOW_URI) is not on this disk")
    mv = registry.client.get_model_version(config.mlflow.model_name, version)
    run_uri = registry.client.get_run(mv.run_id).info.artifact_uri  # mlflow-artifacts:/<exp>/<run>/artifacts
    snapshot = mv.source.removeprefix(f"runs:/{mv.run_id}/")
    path = server.dir / "artifacts" / run_uri.removeprefix("mlflow-artifacts:/") / snapshot / ADAPTER_FILE
    assert path.is_file(), f"adapter artifact of version {version} not found at {path} (artifact URI {run_uri})"
    data = bytearray(path.read_bytes())
    data[-8:] = bytes(b ^ 0xFF for b in data[-8:])
    path.write_bytes(bytes(data))
    return path


def _replicas(service) -> list[dict[str, Any]]:
    """What each live model replica last reported to the app's status board."""
    from serve._private.status_board import get_board

    alive = {a.name.rsplit("#", 1)[-1] for a in _replica_actors(service["config"])}
    return [s for s in ray.get(get_board(service["config"].app).snapshot.remote()) if s["replica_id"] in alive]


def _replica_actors(config: Config) -> list[Any]:
    return alive_actors(config, f"ServeReplica:{config.app}:ModelReplica")


def _wait(condition: Callable[[], Any], timeout_s: float, what: str) -> float:
    """Poll ``condition`` until it is truthy; returns the seconds it took."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout_s, f"{what} within {timeout_s:g} s"
        time.sleep(0.25)
    return time.monotonic() - start


def _all_serve(service, version: str) -> bool:
    states = _replicas(service)
    return len(states) == 2 and all(s["current_version"] == version for s in states)


def test_a_corrupted_adapter_is_refused_by_its_checksum_and_never_served(service):
    config, url = service["config"], service["url"]
    good = _publish_and_announce(service)
    _wait(lambda: _all_serve(service, good), 60, f"both replicas did not serve the good version {good}")
    service["good"] = good

    load = SteadyLoad(url, config, rate=8, feedback_share=0.0, threads=2, seed=1)
    load.start()
    try:
        bad = _publish_and_announce(service, corrupt=True)
        _wait(
            lambda: all(bad in s.get("refused_versions", {}) for s in _replicas(service)),
            30,
            f"the replicas did not refuse the corrupted version {bad} after its announcement",
        )
        features = [0.5] * config.model.n_features
        with httpx.Client(base_url=url, timeout=30) as client:  # raw answers: no retry
            pinned = [client.post("/v1/predict", json={"features": features, "model_version": bad}) for _ in range(4)]
        time.sleep(2.0)  # keep the load on after the refusals
    finally:
        calls = load.stop()

    for answer in pinned:
        assert answer.status_code == 503, (
            f"pinning the corrupted version {bad} answered {answer.status_code}: {answer.text}"
        )
        [detail] = answer.json()["detail"]
        assert detail["field"] == "model_version" and "checksum" in detail["msg"], detail
    predicts = summarize(calls, "predict")
    print(
        f"corrupted version {bad}: {predicts['sent']} unpinned predicts, answered by {predicts['versions']}; "
        f"pinned answer: {pinned[0].json()['detail'][0]['msg']}"
    )
    assert predicts["sent"] >= 10 and predicts["failed"] == 0, predicts
    assert set(predicts["versions"]) == {good}, f"answers came from {predicts['versions']}, not only the good {good}"
    assert _all_serve(service, good), _replicas(service)


def test_a_killed_model_replica_is_replaced_and_no_request_fails_after_retry(service):
    from ray import serve

    config, url = service["config"], service["url"]
    load = SteadyLoad(url, config, rate=10, feedback_share=0.3, threads=4, seed=2)
    # A burst around the kill, so that requests are in flight on the victim when it dies.
    burst = SteadyLoad(url, config, rate=80, feedback_share=0.0, threads=16, seed=3)
    load.start()
    try:
        time.sleep(3.0)  # steady traffic on both replicas
        [victim, *_] = _replica_actors(config)
        burst.start()
        time.sleep(0.3)
        killed_at = time.monotonic()
        ray.kill(ray.get_actor(victim.name, namespace="serve"), no_restart=True)
        time.sleep(1.0)
        burst.stop()

        def replaced() -> bool:
            actors = _replica_actors(config)
            deployment = serve.status().applications[config.app].deployments["ModelReplica"]
            return (
                len(actors) == 2
                and victim.actor_id not in {a.actor_id for a in actors}
                and deployment.replica_states.get("RUNNING") == 2
                and deployment.status == "HEALTHY"
            )

        _wait(replaced, 120, "Serve did not bring ModelReplica back to 2 running replicas")
        replaced_s = time.monotonic() - killed_at
        _wait(lambda: len(_replicas(service)) == 2, 30, "the new replica did not report to the status board")
        time.sleep(2.0)  # traffic on the new replica too
    finally:
        calls = load.stop() + burst.stop()

    s = {kind: summarize(calls, kind) for kind in ("predict", "feedback")}
    print(
        f"replica killed: replaced in {replaced_s:.1f} s; "
        + "; ".join(
            f"{k} sent {v['sent']}, failed before retry {v['raw_failures']}, after retry {v['failed']} "
            f"{v['failed_statuses'] or ''}"
            for k, v in s.items()
        )
    )
    assert s["predict"]["sent"] >= 40 and s["feedback"]["sent"] >= 3, s
    assert s["predict"]["failed"] == 0 and s["feedback"]["failed"] == 0, (
        f"requests failed after the documented retry: {s}"
    )
    versions = {r["current_version"] for r in _replicas(service)}
    expected = service.get("good", "base")
    assert versions == {expected}, f"after the replacement the replicas serve {versions}, not {expected}"
