"""One user posting many wrong labels cannot steer the model: the real learner caps and quarantines them.

Honest simulated users rate a mostly good server; an attacker labels every answer wrongly.
Everything goes through the real Kafka topics and the real learner loop, and the verdicts are
read back from the dead-letter topic and ``cl.events``.
"""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from cl.config import Config
from cl.events import DeadLetter, FeedbackEvent, LifecycleEvent, RequestEvent
from cl.testing.simulated_users import SimulatedUsers
from infra.kafka_broker import KafkaBroker
from learners.feedback_loop import FeedbackLoop, LoopLimits
from streams import EventProducer, EventTail

pytestmark = pytest.mark.integration

CAP = 25
ATTACKER = "mallory"


@pytest.fixture(scope="module")
def config(stack) -> Config:
    """A fresh app (own topics, registered model, consumer group) with a small per-user cap."""
    tag = uuid.uuid4().hex[:6]
    values = stack.to_dict()
    values["app"] = f"poison{tag}"
    values["mlflow"]["model_name"] = f"poison{tag}-adapter"
    values["kafka"]["topic_prefix"] = f"poison{tag}"
    values["learner"].update(
        consumer_group=f"poison{tag}-learner",
        user_cap_events=CAP,
        user_cap_window_s=600.0,
        quarantine_min_events=30,
        snapshot_every_s=5.0,
    )
    config = Config.from_dict(values)
    KafkaBroker(config).create_topics()
    return config


def _read_all(config: Config, topic: str, model_cls):
    tail = EventTail(config.kafka.bootstrap_servers, topic, model_cls, from_beginning=True)
    try:
        return tail.read_to_end(timeout_s=30)
    finally:
        tail.close()


def test_an_attacker_is_capped_then_quarantined_and_honest_users_are_all_learned(config):
    n_labels = config.model.n_labels
    users = SimulatedUsers(config.model.n_features, n_labels, seed=5)
    rng = np.random.default_rng(5)
    producer = EventProducer(config.kafka.bootstrap_servers)
    sent: dict[str, int] = {}

    def pair(user: str, attack: bool) -> None:
        x = users.query()
        truth = users.truth(x)
        served = truth if rng.random() < 0.85 else int(rng.integers(n_labels))  # a mostly good server
        label = (served + 1) % n_labels if attack else truth
        request = RequestEvent(
            request_id=uuid.uuid4().hex,
            kind="predict",
            input={"features": x},
            output={"label": served},
            model_version="base",
            arm="champion",
            user_id=user,
        )
        # One key: the learner reads the events in the order they were produced.
        producer.send(config.topics.requests, request, key="poison")
        feedback = FeedbackEvent(request_id=request.request_id, label=label, user_id=user)
        producer.send(config.topics.feedback, feedback, key="poison")
        sent[user] = sent.get(user, 0) + 1

    for i in range(100):  # ten honest users build the reference
        pair(f"honest-{i % 10}", attack=False)
    for i in range(90):  # then the attacker, among ten more honest users
        if i % 9 < 4:
            pair(ATTACKER, attack=True)
        else:
            pair(f"honest-{10 + i % 10}", attack=False)
    producer.flush()
    producer.close()
    honest = sum(n for user, n in sent.items() if user != ATTACKER)
    assert max(n for user, n in sent.items() if user != ATTACKER) <= CAP, (
        "the test's honest users must stay under the cap"
    )

    started = time.time()
    metrics = FeedbackLoop(config, limits=LoopLimits(idle_exit_s=3, max_runtime_s=120), say=print).run()
    windows = int(time.time() // 600) - int(started // 600) + 1

    letters = [d for d in _read_all(config, config.topics.dlq, DeadLetter) if d.reason.startswith("user_")]
    refused = [(d.reason, FeedbackEvent.model_validate_json(d.raw).user_id) for d in letters]
    assert {user for _, user in refused} == {ATTACKER}, f"honest users' events were refused: {refused}"
    quarantined = [r for r, _ in refused if r == "user_quarantined"]
    capped = [r for r, _ in refused if r == "user_capped"]
    learned_from_attacker = sent[ATTACKER] - len(refused)
    print(
        f"attacker: {sent[ATTACKER]} events, {learned_from_attacker} learned, {len(capped)} capped, "
        f"{len(quarantined)} quarantined; honest: {honest} events, {int(metrics['events_seen'])} learned in all"
    )
    assert quarantined, "the attacker was never quarantined (learner.quarantine_alpha)"
    assert all(d.errors[0].field == "user_id" for d in letters)
    assert learned_from_attacker <= CAP * windows, f"{learned_from_attacker} attacker events learned, cap {CAP}"
    assert metrics["events_seen"] == honest + learned_from_attacker, "not every honest event was learned"
    assert metrics["users_quarantined"] == 1
    assert metrics["events_quarantined"] == len(quarantined) and metrics["events_capped"] == len(capped)

    announced = [e for e in _read_all(config, config.topics.events, LifecycleEvent) if e.type == "user_quarantined"]
    assert [e.payload["user_id"] for e in announced] == [ATTACKER]
    payload = announced[0].payload
    assert payload["events"] == payload["disagreements"] >= 30 and payload["p_value"] < 1e-6, payload
