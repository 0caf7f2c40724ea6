"""Online-loop benchmarks on the running local stack (``cl up`` first; ``make bench`` does it).

Measured side by side in one run, on fresh topics and a fresh registered model:

1. Learner absorption (events/s through join + learn + snapshots) beside the raw Kafka read
   rate of the same records.
2. Serving throughput at concurrency 32 with dynamic batching vs without, and the feedback
   endpoint's rate and p99.
3. Freshness: from a rating accepted (202) to a response served by a version that includes it.

Usage: ``python -m bench.bench_online [--events 6000] [--requests 1500] [--samples 20]``
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np

from cl.config import Config, load_config
from cl.events import FeedbackEvent, RequestEvent
from cl.registry import AdapterRegistry
from cl.testing.simulated_users import SimulatedUsers
from infra.kafka_broker import KafkaBroker
from streams import EventProducer, OffsetReader


def fresh_config(base: Config, **learner) -> Config:
    """A copy of ``base`` with its own app name, topics, registered model and consumer group, auth off."""
    tag = f"bench{uuid.uuid4().hex[:6]}"
    values = base.to_dict()
    values["app"] = tag
    values["mlflow"]["model_name"] = f"{tag}-adapter"
    values["kafka"]["topic_prefix"] = tag
    values["learner"].update(consumer_group=f"{tag}-learner", **learner)
    values["auth"]["enabled"] = False  # these benchmarks measure serving and learning, not access control
    config = Config.from_dict(values)
    KafkaBroker(config).create_topics()
    return config


def produce_stream(config: Config, n: int, seed: int = 0) -> None:
    users = SimulatedUsers(config.model.n_features, config.model.n_labels, seed=seed)
    rng = np.random.default_rng(seed)
    producer = EventProducer(config.kafka.bootstrap_servers)
    for _ in range(n):
        x = users.query()
        request = RequestEvent(
            request_id=uuid.uuid4().hex,
            kind="predict",
            input={"features": x},
            output={"label": int(rng.integers(config.model.n_labels))},
            model_version="base",
            arm="champion",
        )
        producer.send(config.topics.requests, request, key=request.request_id)
        producer.send(
            config.topics.feedback,
            FeedbackEvent(request_id=request.request_id, **users.feedback(x, request.output.label)),
            key=request.request_id,
        )
    producer.flush(60)
    producer.close()


def bench_absorption(base: Config, n: int) -> dict[str, float]:
    """Raw read rate vs learner absorption on the same 2n records (n requests + n feedback)."""
    from learners.feedback_loop import FeedbackLoop, LoopLimits

    config = fresh_config(base)
    produce_stream(config, n)
    reader = OffsetReader(
        config.kafka.bootstrap_servers, [config.topics.requests, config.topics.feedback], f"raw-{uuid.uuid4().hex}"
    )
    start, got = time.perf_counter(), 0
    while got < 2 * n:
        got += len(reader.poll(timeout_ms=500))
    raw_s = time.perf_counter() - start
    reader.close()

    loop = FeedbackLoop(config, limits=LoopLimits(max_events=n), say=lambda line: None)
    start = time.perf_counter()
    metrics = loop.run()
    learn_s = time.perf_counter() - start
    return {
        "events": n,
        "raw_read_events_per_s": n / raw_s,  # one event = a request + its feedback
        "learner_events_per_s": metrics["events_seen"] / learn_s,
        "versions_published": metrics["versions_published"],
    }


def _load(url: str, path: str, bodies: list[dict], concurrency: int) -> tuple[float, list[float], int]:
    """Send ``bodies`` with ``concurrency`` clients; returns (requests/s, latencies, failures)."""
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()

    def one(client: httpx.Client, body: dict) -> None:
        nonlocal failures
        t0 = time.perf_counter()
        ok = client.post(path, json=body).status_code < 300
        with lock:
            latencies.append(time.perf_counter() - t0)
            failures += not ok

    with httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_connections=concurrency)) as client:
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(lambda b: one(client, b), bodies[: 2 * concurrency]))  # warm-up
            latencies.clear()
            start = time.perf_counter()
            list(pool.map(lambda b: one(client, b), bodies))
            elapsed = time.perf_counter() - start
    return len(bodies) / elapsed, latencies, failures


def _p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def bench_serving(base: Config, n: int, concurrency: int = 32) -> dict[str, float]:
    from serve.app import deploy, shutdown

    config = fresh_config(base)
    users = SimulatedUsers(config.model.n_features, config.model.n_labels, seed=5)
    bodies = [{"features": users.query()} for _ in range(n)]
    out: dict[str, float] = {}
    for batching in (True, False):
        url = deploy(config, batching=batching)
        rate, lat, failed = _load(url, "/v1/predict", bodies, concurrency)
        key = "batched" if batching else "unbatched"
        out[f"predict_{key}_rps"], out[f"predict_{key}_p50_ms"], out[f"predict_{key}_p99_ms"] = (
            rate,
            _p(lat, 50) * 1e3,
            _p(lat, 99) * 1e3,
        )
        out[f"predict_{key}_failures"] = failed
        if batching:
            with httpx.Client(base_url=url, timeout=60) as client:
                ids = [client.post("/v1/predict", json=b).json()["request_id"] for b in bodies[: min(n, 400)]]
            feedback = [{"request_id": ids[i % len(ids)], "thumbs": "up"} for i in range(n)]
            rate, lat, failed = _load(url, "/v1/feedback", feedback, concurrency)
            out["feedback_rps"], out["feedback_p50_ms"], out["feedback_p99_ms"] = (
                rate,
                _p(lat, 50) * 1e3,
                _p(lat, 99) * 1e3,
            )
            out["feedback_failures"] = failed
    out.update(_replica_batching(config, bodies, concurrency))
    shutdown(config)
    out["batching_speedup"] = out["predict_batched_rps"] / out["predict_unbatched_rps"]
    return out


def _replica_batching(config: Config, bodies: list[dict], concurrency: int) -> dict[str, float]:
    """The model replica alone, through a DeploymentHandle (no HTTP proxy, no ingress): batched vs not."""
    import asyncio

    from ray import serve

    handle = serve.get_deployment_handle("ModelReplica", app_name=config.app)

    async def drive(method) -> float:
        queue = list(bodies)

        async def worker() -> None:
            while queue:
                body = queue.pop()
                await method.remote({"text": None, "features": body["features"], "model_version": None})

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(bodies) / (time.perf_counter() - start)

    async def both() -> tuple[float, float]:
        await drive(handle.predict)  # warm-up
        return await drive(handle.predict), await drive(handle.predict_unbatched)

    batched, unbatched = asyncio.run(both())
    return {
        "replica_batched_rps": batched,
        "replica_unbatched_rps": unbatched,
        "replica_batching_speedup": batched / unbatched,
    }


def bench_freshness(base: Config, samples: int) -> dict[str, float]:
    """Post one rating at a time; time until a served response comes from a version that has it."""
    from ray.job_submission import JobSubmissionClient

    from learners.jobs import submit_learner
    from serve.app import deploy, shutdown

    config = fresh_config(base)
    url = deploy(config)
    registry = AdapterRegistry(config.mlflow.tracking_uri, config.mlflow.model_name)
    jobs = JobSubmissionClient(config.ray.dashboard_url)
    job_id = submit_learner(config)
    while "reading" not in jobs.get_job_logs(job_id):
        time.sleep(0.5)
    seen_by_version: dict[str, int] = {"base": 0}
    users = SimulatedUsers(config.model.n_features, config.model.n_labels, seed=9)
    delays: list[float] = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in range(1, samples + 1):
            x = users.query()
            served = client.post("/v1/predict", json={"features": x}).json()
            accepted = time.perf_counter()
            client.post(
                "/v1/feedback", json={"request_id": served["request_id"], **users.feedback(x, served["label"])}
            ).raise_for_status()
            while True:
                version = client.post("/v1/predict", json={"features": x}).json()["model_version"]
                if version not in seen_by_version:
                    seen_by_version[version] = int(registry.get_version(version).tags["events_seen"])
                if seen_by_version[version] >= i:
                    delays.append(time.perf_counter() - accepted)
                    break
                time.sleep(0.05)
    jobs.stop_job(job_id)
    shutdown(config)
    return {"samples": samples, "freshness_p50_s": statistics.median(delays), "freshness_p95_s": _p(delays, 95)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args(argv)
    base = load_config()
    print("== learner absorption vs raw Kafka read (same records, same run)")
    a = bench_absorption(base, args.events)
    print(
        f"   raw read {a['raw_read_events_per_s']:.0f} events/s | learner {a['learner_events_per_s']:.0f} events/s "
        f"| ratio {a['learner_events_per_s'] / a['raw_read_events_per_s']:.2f} | versions {a['versions_published']:.0f}"
    )
    print("== serving at concurrency 32: dynamic batching vs none; feedback endpoint")
    s = bench_serving(base, args.requests)
    print(
        f"   predict batched {s['predict_batched_rps']:.0f} req/s (p99 {s['predict_batched_p99_ms']:.0f} ms) | "
        f"unbatched {s['predict_unbatched_rps']:.0f} req/s (p99 {s['predict_unbatched_p99_ms']:.0f} ms) | "
        f"speed-up {s['batching_speedup']:.2f}x"
    )
    print(
        f"   model replica alone (DeploymentHandle, no HTTP): batched {s['replica_batched_rps']:.0f} req/s | "
        f"unbatched {s['replica_unbatched_rps']:.0f} req/s | speed-up {s['replica_batching_speedup']:.2f}x"
    )
    print(
        f"   feedback {s['feedback_rps']:.0f} req/s, p50 {s['feedback_p50_ms']:.1f} ms, p99 {s['feedback_p99_ms']:.1f} ms, "
        f"failures {s['feedback_failures']:.0f}"
    )
    print("== freshness: rating accepted -> served by a version that includes it")
    f = bench_freshness(base, args.samples)
    print(f"   p50 {f['freshness_p50_s']:.2f} s | p95 {f['freshness_p95_s']:.2f} s over {f['samples']} ratings")


if __name__ == "__main__":
    main()
