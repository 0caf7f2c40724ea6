"""The online loop end to end on the real stack: HTTP → Kafka → Ray Train learner → MLflow → serving.

The tests run in order on one deployed app and one stream; each learner run resumes from the
newest snapshot of the one before, so the event counts add up across tests.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import httpx
import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer

from cl.config import Config
from cl.events import DeadLetter, LifecycleEvent, RequestEvent, parse_event
from cl.registry import AdapterRegistry
from cl.testing.simulated_users import SimulatedUsers
from infra.kafka_broker import KafkaBroker
from learners.feedback_loop import LoopLimits
from learners.online import run_online_learner
from streams import EventProducer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def online(stack):
    """A fresh app (own topics, registered model, consumer group) deployed on the stack."""
    from serve.app import deploy, shutdown

    tag = uuid.uuid4().hex[:6]
    values = stack.to_dict()
    values["app"] = f"loop{tag}"
    values["mlflow"]["model_name"] = f"loop{tag}-adapter"
    values["kafka"]["topic_prefix"] = f"loop{tag}"
    values["learner"].update(consumer_group=f"loop{tag}-learner", snapshot_every_s=1.0, join_window_s=4.0, lr=0.02)
    config = Config.from_dict(values)
    KafkaBroker(config).create_topics()
    url = deploy(config)
    state = {
        "config": config,
        "url": url,
        "applied": 0,
        "registry": AdapterRegistry(config.mlflow.tracking_uri, config.mlflow.model_name),
    }
    yield state
    shutdown(config)


def _learn(online, **limits) -> dict:
    result = run_online_learner(online["config"], LoopLimits(**limits), max_failures=0)
    return result.metrics


def _events_seen(online) -> int:
    registry = online["registry"]
    return int(registry.get_version(registry.latest_version()).tags["events_seen"])


def _predict(client: httpx.Client, features) -> dict:
    response = client.post("/v1/predict", json={"features": [float(v) for v in features]})
    assert response.status_code == 200, response.text
    return response.json()


def _consume(config: Config, topic: str, model_cls, timeout_s: float = 20.0) -> list:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=config.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        group_id=None,
        consumer_timeout_ms=3000,
    )
    found, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = [parse_event(model_cls, m.value) for m in consumer]
        found += batch
        if not batch and found:
            break
    consumer.close()
    return found


def test_http_feedback_teaches_the_served_model(online):
    rng = np.random.default_rng(7)
    x0 = rng.normal(size=online["config"].model.n_features)
    with httpx.Client(base_url=online["url"], timeout=30) as client:
        first = _predict(client, x0)
        assert first["model_version"] == "base"
        target = (first["label"] + 1) % online["config"].model.n_labels
        for _ in range(160):
            served = _predict(client, x0 + rng.normal(scale=0.05, size=x0.shape))
            r = client.post("/v1/feedback", json={"request_id": served["request_id"], "label": target})
            assert r.status_code == 202, r.text
        metrics = _learn(online, max_events=160, idle_exit_s=20)
        online["applied"] = 160
        assert metrics["events_seen"] == 160
        latest = online["registry"].latest_version()
        assert _events_seen(online) == 160
        deadline = time.monotonic() + 60
        answer = _predict(client, x0)
        while answer["model_version"] != latest and time.monotonic() < deadline:
            time.sleep(0.5)
            answer = _predict(client, x0)
    assert answer["model_version"] == latest, "serving did not switch to the newest version"
    assert answer["label"] == target, f"the learned correction did not flip the prediction: {answer}"


def test_ratings_from_a_plain_kafka_producer_are_learned_and_bad_ones_dead_lettered(online):
    config = online["config"]
    with httpx.Client(base_url=online["url"], timeout=30) as client:
        served = [_predict(client, np.random.default_rng(i).normal(size=config.model.n_features)) for i in range(40)]
    producer = KafkaProducer(bootstrap_servers=config.kafka.bootstrap_servers, acks="all")  # no code of ours
    for i, s in enumerate(served):
        body = {
            "request_id": s["request_id"],
            "thumbs": "up" if i % 3 else "down",
            "event_id": uuid.uuid4().hex,
            "ts": time.time(),
        }
        producer.send(config.topics.feedback, json.dumps(body).encode(), key=s["request_id"].encode())
    bad = [
        b"this is not json",
        b'{"request_id": "r-1", "rating": 9}',
        b'{"request_id": "r-1", "ratng": 5}',
        b'{"request_id": "never-served-1", "thumbs": "up"}',
        b'{"request_id": "never-served-2", "label": 1}',
    ]
    for value in bad:
        producer.send(config.topics.feedback, value)
    producer.flush()
    producer.close()

    metrics = _learn(online, idle_exit_s=10)
    online["applied"] += 40
    assert metrics["events_seen"] == online["applied"]
    assert _events_seen(online) == online["applied"]
    letters = _consume(config, config.topics.dlq, DeadLetter)
    reasons = sorted(letter.reason for letter in letters)
    assert reasons == ["invalid_event", "invalid_event", "invalid_json", "unjoined", "unjoined"], reasons
    fields = {e.field for letter in letters for e in letter.errors}
    assert {"rating", "ratng", "request_id"} <= fields


def _produce_pairs(
    config: Config,
    users: SimulatedUsers,
    n: int,
    *,
    served_by=None,
    pause_s: float = 0.0,
    noise: float = 0.0,
    seed: int = 0,
    key: str | None = None,
) -> None:
    """Log n requests and their label feedback straight to Kafka (as the ingress and a client would).

    ``key`` puts every event on one partition, so the learner sees them in production order.
    """
    from cl.events import FeedbackEvent

    producer = EventProducer(config.kafka.bootstrap_servers)
    rng = np.random.default_rng(seed)
    for _ in range(n):
        x = users.query()
        served = served_by(x) if served_by else int(rng.integers(config.model.n_labels))
        if noise and rng.random() < noise:
            served = int(rng.integers(config.model.n_labels))
        request = RequestEvent(
            request_id=uuid.uuid4().hex,
            kind="predict",
            input={"features": x},
            output={"label": served},
            model_version="base",
            arm="champion",
        )
        producer.send(config.topics.requests, request, key=key or request.request_id)
        producer.send(
            config.topics.feedback,
            FeedbackEvent(request_id=request.request_id, label=users.truth(x)),
            key=key or request.request_id,
        )
        if pause_s:
            time.sleep(pause_s)
    producer.flush()
    producer.close()


def test_a_killed_learner_resumes_and_applies_every_event_exactly_once(online):
    from ray.job_submission import JobStatus, JobSubmissionClient

    from learners.jobs import submit_learner

    config = online["config"]
    before = online["applied"]
    users = SimulatedUsers(config.model.n_features, config.model.n_labels, seed=3)
    job_id = submit_learner(config)
    jobs = JobSubmissionClient(config.ray.dashboard_url)
    deadline = time.monotonic() + 180
    while "reading" not in jobs.get_job_logs(job_id) and time.monotonic() < deadline:  # the loop has started
        assert jobs.get_job_status(job_id) not in (JobStatus.FAILED, JobStatus.STOPPED), jobs.get_job_logs(job_id)[
            -3000:
        ]
        time.sleep(0.5)
    feeder = threading.Thread(target=_produce_pairs, args=(config, users, 300), kwargs={"pause_s": 0.05})
    feeder.start()
    while _events_seen(online) <= before and time.monotonic() < deadline:
        assert jobs.get_job_status(job_id) not in (JobStatus.FAILED, JobStatus.STOPPED), jobs.get_job_logs(job_id)[
            -3000:
        ]
        time.sleep(0.2)
    killed_at = _events_seen(online)
    assert killed_at > before, "the learner job published nothing"
    jobs.stop_job(job_id)
    while jobs.get_job_status(job_id) not in (JobStatus.STOPPED, JobStatus.FAILED, JobStatus.SUCCEEDED):
        time.sleep(0.5)
    feeder.join()
    print(f"learner killed after {killed_at - before} of 300 new events had been snapshotted")

    metrics = _learn(online, idle_exit_s=8)
    online["applied"] = before + 300
    assert killed_at < before + 300, "the kill came after the stream ended; nothing was tested mid-stream"
    assert metrics["events_seen"] == online["applied"]
    assert _events_seen(online) == online["applied"]


def test_an_injected_drift_is_detected_and_published(online):
    config = online["config"]
    users = SimulatedUsers(config.model.n_features, config.model.n_labels, seed=11)
    # A good server for the users' first preference: it keeps serving it after they change their minds.
    teacher = SimulatedUsers(config.model.n_features, config.model.n_labels, seed=11)
    start = online["applied"]
    _produce_pairs(config, users, 500, served_by=teacher.truth, noise=0.1, seed=1, key="drift")
    users.shift()
    _produce_pairs(config, users, 500, served_by=teacher.truth, noise=0.1, seed=2, key="drift")
    metrics = _learn(online, idle_exit_s=8)
    online["applied"] = start + 1000
    assert metrics["events_seen"] == online["applied"]
    shift_at = start + 500
    drifts = [e for e in _consume(config, config.topics.events, LifecycleEvent) if e.type == "drift_detected"]
    delays = [int(e.payload["events_seen"]) - shift_at for e in drifts if int(e.payload["events_seen"]) > shift_at]
    print(
        f"drift detected {delays[:1]} events after the shift; all detections at {[e.payload['events_seen'] for e in drifts]}"
    )
    assert delays and delays[0] <= 300, f"no drift published within 300 events of the shift: {delays}"


def test_two_learner_workers_split_the_stream_and_resume_as_one(online):
    """Data-parallel learning: two ranks, one version each snapshot holding both ranks' parts;
    then a single worker resumes from it. Every event is applied exactly once throughout."""
    import dataclasses

    config = online["config"]
    two = dataclasses.replace(config, learner=dataclasses.replace(config.learner, workers=2))
    users = SimulatedUsers(config.model.n_features, config.model.n_labels, seed=21)
    start = online["applied"]
    _produce_pairs(config, users, 300, seed=5)  # random keys: both partitions, both ranks
    metrics = _learn({**online, "config": two}, idle_exit_s=8)
    online["applied"] = start + 300
    assert metrics["events_seen"] == online["applied"]
    registry = online["registry"]
    latest = registry.latest_version()
    state = registry.load_learner_state(latest)
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    per_rank = [int(part["learner"]["stats"]["events_seen"]) for part in state["ranks"]]
    assert sum(per_rank) == online["applied"] and all(n > 0 for n in per_rank), per_rank
    assert registry.get_version(latest).tags["learner_workers"] == "2"

    _produce_pairs(config, users, 60, seed=6)
    metrics = _learn(online, idle_exit_s=8)  # back to one worker: it takes both ranks' share
    online["applied"] += 60
    assert metrics["events_seen"] == online["applied"]
    assert _events_seen(online) == online["applied"]


def test_the_learners_metrics_reach_prometheus(online):
    """The Ray Train workers above exported events learned, versions, loss and consumer lag."""
    from tests.prometheus import total, wait_for

    config = online["config"]
    app = {"app": config.app}
    samples = wait_for(config.ray.metrics_url, lambda s: total(s, "ray_cl_learner_events_total", **app) > 0)
    assert total(samples, "ray_cl_learner_versions_published_total", **app) >= 1
    assert any(n == "ray_cl_learner_loss" and labels.get("app") == config.app for n, labels, _ in samples)
    lagged = {
        labels.get("topic")
        for n, labels, _ in samples
        if n == "ray_cl_consumer_lag" and labels.get("app") == config.app
    }
    assert {config.topics.feedback, config.topics.requests} <= lagged, lagged
