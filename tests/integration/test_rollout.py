"""Rollouts on the real stack: a good challenger is promoted step by step, a bad one is rolled
back by itself, users stay on one version, manual rollback serves at once, and a restarted
controller keeps its state.

Challengers are adapters trained here, in the test process, on the simulated users' truth
(good) or on labels that are all wrong (bad); they are published and announced as the
learner would. Users then call the service over HTTP and post label feedback.
"""

from __future__ import annotations

import time
import uuid

import httpx
import numpy as np
import pytest
import ray

from cl.config import Config
from cl.events import LifecycleEvent
from cl.learning.example import Example
from cl.learning.online_learner import OnlineLearner
from cl.model.base_model import build_base_model
from cl.registry import AdapterRegistry
from cl.testing.simulated_users import SimulatedUsers
from infra.kafka_broker import KafkaBroker
from streams import EventProducer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rollout(stack):
    from serve.app import deploy, shutdown

    tag = uuid.uuid4().hex[:6]
    values = stack.to_dict()
    values["app"] = f"ro{tag}"
    values["mlflow"]["model_name"] = f"ro{tag}-adapter"
    values["kafka"]["topic_prefix"] = f"ro{tag}"
    values["serve"]["serve_new_versions"] = False
    values["learner"]["join_window_s"] = 30.0
    values["rollout"].update(
        canary_steps="0.2,0.5,1.0", min_events=20, min_step_events=40, negative_min_events=60, error_min_requests=50
    )
    config = Config.from_dict(values)
    KafkaBroker(config).create_topics()
    url = deploy(config)
    users = SimulatedUsers(config.model.n_features, config.model.n_labels, seed=5)
    yield {
        "config": config,
        "url": url,
        "users": users,
        "client": httpx.Client(base_url=url, timeout=30.0),
        "registry": AdapterRegistry(config.mlflow.tracking_uri, config.mlflow.model_name),
    }
    shutdown(config)


def _publish_trained(state, *, wrong: bool) -> str:
    """Train an adapter on the users' truth (or on always-wrong labels), register and announce it."""
    config, users = state["config"], state["users"]
    model = build_base_model(config.model, n_adapter_slots=1)
    learner = OnlineLearner(model, config.learner)
    n = config.model.n_labels
    for step in range(60):
        batch = []
        for i in range(32):
            x = users.query()
            target = (users.truth(x) + 1) % n if wrong else users.truth(x)
            batch.append(
                Example(f"t{step}-{i}", "r", "predict", "label", features=tuple(x), served_label=0, target=target)
            )
        learner.learn(batch)
    version = state["registry"].publish(
        model.adapter_state(0), tags={"base_version": config.model.base_version, "events_seen": "0", "reason": "test"}
    )
    producer = EventProducer(config.kafka.bootstrap_servers)
    payload = {"version": version, "model_name": config.mlflow.model_name, "base_version": config.model.base_version}
    producer.send_and_wait(config.topics.events, LifecycleEvent(type="version_published", payload=payload))
    producer.close()
    return version


def _status(state) -> dict:
    return state["client"].get("/v1/rollout").raise_for_status().json()


def _wait_for_rollout_of(state, version: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while version not in _status(state)["challengers"]:
        assert time.monotonic() < deadline, f"no rollout of {version} started: {_status(state)}"
        time.sleep(0.2)


def _drive(state, until, *, max_requests: int = 4000, returning: int = 10) -> dict:
    """Users ask and post label feedback until ``until(status)``; returns the (version, arm)
    pairs each user got."""
    client, users = state["client"], state["users"]
    seen: dict[str, set[tuple[str, str]]] = {}
    for i in range(max_requests):
        user = f"back-{i % returning}" if i % 4 == 0 else f"user-{uuid.uuid4().hex[:8]}"
        x = users.query()
        answer = client.post("/v1/predict", json={"features": x, "user_id": user}).raise_for_status().json()
        seen.setdefault(user, set()).add((answer["model_version"], answer["arm"]))
        client.post(
            "/v1/feedback", json={"request_id": answer["request_id"], "label": users.truth(x), "user_id": user}
        ).raise_for_status()
        if i % 20 == 19 and until(_status(state)):
            return seen
    pytest.fail(f"not done after {max_requests} requests: {_status(state)}")


def test_a_good_challenger_is_promoted_step_by_step(rollout):
    good = _publish_trained(rollout, wrong=False)
    _wait_for_rollout_of(rollout, good)
    seen = _drive(rollout, lambda s: s["champion"] == good)
    actions = [(d["action"], d["version"]) for d in _status(rollout)["recent_decisions"]]
    steps = [a for a in actions if a[0] in ("start", "advance", "promote")]
    assert steps == [("start", good), ("advance", good), ("advance", good), ("promote", good)], actions
    assert rollout["registry"].alias_version("champion") == good
    # Returning users kept one version for the whole rollout: none met both arms (after the
    # promotion everyone gets the new champion, as its champion arm).
    both = {("base", "champion"), (good, "challenger")}
    returning = {user: got for user, got in seen.items() if user.startswith("back-")}
    assert returning and not any(both <= got for got in returning.values()), returning
    rollout["good"] = good


def test_a_bad_challenger_is_rolled_back_by_itself(rollout):
    good = rollout["good"]
    bad = _publish_trained(rollout, wrong=True)
    _wait_for_rollout_of(rollout, bad)
    started = time.monotonic()
    _drive(rollout, lambda s: not s["active"])
    seconds = time.monotonic() - started
    status = _status(rollout)
    rollback = [d for d in status["recent_decisions"] if d["action"] == "rollback" and d["version"] == bad][-1]
    events = rollback["evidence"]["challenger"]["rated"]
    print(
        f"bad challenger rolled back after {events} rated challenger events, {seconds:.1f} s; rule {rollback['evidence'].get('rule')}"
    )
    assert status["champion"] == good and status["weights"].get(bad, 0.0) == 0.0
    assert rollout["registry"].alias_version("champion") == good
    answer = rollout["client"].post("/v1/predict", json={"features": rollout["users"].query(), "user_id": "x"}).json()
    assert answer["model_version"] == good and answer["arm"] == "champion"


def test_manual_rollback_serves_the_older_version_on_the_next_request(rollout, capsys):
    import argparse

    from cl.cli.admin import promote as _promote
    from cl.cli.admin import rollback as _rollback
    from cl.cli.admin import versions as _versions

    client, config = rollout["client"], rollout["config"]
    started = time.perf_counter()
    assert _rollback(config, argparse.Namespace(to="base")) == 0  # `cl rollback --to base`
    answer = client.post("/v1/predict", json={"features": rollout["users"].query(), "user_id": "y"}).json()
    print(f"manual rollback to the next request served by the old version: {time.perf_counter() - started:.3f} s")
    assert answer["model_version"] == "base"
    assert _promote(config, argparse.Namespace(version="424242")) == 1
    assert "424242" in capsys.readouterr().err
    assert _versions(config, argparse.Namespace(json=False)) == 0
    assert "champion: base" in capsys.readouterr().out
    assert rollout["registry"].alias_version("champion") is None
    bad = client.post("/v1/admin/promote", json={"version": "999"})
    assert bad.status_code == 422 and "999" in bad.text
    assert client.post("/v1/admin/traffic", json={"version": "1", "weight": 2}).status_code == 422
    assert client.post("/v1/admin/promote", json={"version": rollout["good"]}).status_code == 200
    answer = client.post("/v1/predict", json={"features": rollout["users"].query(), "user_id": "y"}).json()
    assert answer["model_version"] == rollout["good"]


def test_a_restarted_controller_keeps_its_state(rollout):
    from serve.rollout_controller import NAMESPACE, controller_name

    before = _status(rollout)
    actor = ray.get_actor(controller_name(rollout["config"].app), namespace=NAMESPACE)
    ray.get(actor.checkpoint_now.remote())
    ray.kill(actor, no_restart=False)
    deadline = time.monotonic() + 60
    while True:
        try:
            after = _status(rollout)
            if after["restored_from"]:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the controller did not come back"
        time.sleep(0.5)
    assert after["champion"] == before["champion"] == rollout["good"]
    assert after["history"] == before["history"] and after["judged"] == before["judged"]
    assert np.isclose(sum(after["weights"].values()), 1.0)
