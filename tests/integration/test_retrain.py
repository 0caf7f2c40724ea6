"""Offline retrain on the real stack: `cl retrain` submits a Ray job that replays the feedback
topic, trains, and registers and announces a challenger; a time range and a parent version are
honoured; duplicates and unjoined ratings are counted, not trained on."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from cl.config import Config
from cl.events import FeedbackEvent, LifecycleEvent, RequestEvent
from cl.learning.eval_set import is_held_out, score_adapter
from cl.model.base_model import build_base_model
from cl.registry import AdapterRegistry
from cl.testing.simulated_users import SimulatedUsers
from infra.kafka_broker import KafkaBroker
from learners.retrain import RetrainError, RetrainOptions, collect_examples, retrain
from streams import EventProducer, EventTail

pytestmark = pytest.mark.integration

PHASE = 400  # rated requests per phase
HOLDOUT = 0.25


def _produce(config: Config, users: SimulatedUsers, n: int, rng: np.random.Generator) -> None:
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
            FeedbackEvent(request_id=request.request_id, label=users.truth(x)),
            key=request.request_id,
        )
    producer.flush(60)
    producer.close()


@pytest.fixture(scope="module")
def history(stack, stack_environ):
    """Two phases of rated requests a second apart, plus one duplicate and one unjoined rating."""
    tag = uuid.uuid4().hex[:6]
    # A quarter held out (not the default 5%): the accuracy comparisons below then rest on about
    # 200 held-out ratings, not 40, whose ids are random, so one unlucky draw cannot hide a lift.
    env = {
        **stack_environ,
        "CL_APP": f"rt{tag}",
        "CL_KAFKA_TOPIC_PREFIX": f"rt{tag}",
        "CL_MLFLOW_MODEL_NAME": f"rt{tag}-adapter",
        "CL_LEARNER_HOLDOUT_FRACTION": str(HOLDOUT),
    }
    values = stack.to_dict()
    values.update(app=env["CL_APP"])
    values["learner"]["holdout_fraction"] = HOLDOUT
    values["kafka"]["topic_prefix"] = env["CL_KAFKA_TOPIC_PREFIX"]
    values["mlflow"]["model_name"] = env["CL_MLFLOW_MODEL_NAME"]
    config = Config.from_dict(values)
    KafkaBroker(config).create_topics()
    users, rng = (
        SimulatedUsers(config.model.n_features, config.model.n_labels, seed=11, label_rate=1.0),
        np.random.default_rng(0),
    )
    _produce(config, users, PHASE, rng)
    time.sleep(1.5)
    middle = time.time()
    time.sleep(1.5)
    _produce(config, users, PHASE, rng)
    producer = EventProducer(config.kafka.bootstrap_servers)
    again = FeedbackEvent(request_id="never-served", label=1)
    producer.send(config.topics.feedback, again)  # its request never comes
    producer.send(config.topics.feedback, again)  # and a duplicate of it
    producer.flush(30)
    producer.close()
    return {
        "config": config,
        "env": env,
        "middle": middle,
        "registry": AdapterRegistry(config.mlflow.tracking_uri, config.mlflow.model_name),
    }


def test_cl_retrain_submits_a_job_that_registers_and_announces_a_better_challenger(history, cl_command):
    config, registry = history["config"], history["registry"]
    done = cl_command(["retrain", "--wait", "--", "--epochs", "3", "--batch-size", "32"], history["env"], timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "retrain running as Ray job" in out and "epoch 3/3" in out, out  # the job's progress reached the user
    versions = [v for v in registry.list_versions() if v.tags.get("source") == "retrain"]
    assert len(versions) == 1, versions
    v = versions[0]
    run = registry.client.get_run(v.run_id)
    assert run.data.params["duplicates"] == "1" and run.data.params["unjoined"] == "1", run.data.params
    assert int(run.data.params["examples"]) + int(run.data.params["held_out"]) == 2 * PHASE
    base, trained = run.data.metrics["eval_accuracy_base"], run.data.metrics["eval_accuracy"]
    print(f"held-out accuracy: base {base:.3f}, retrained {trained:.3f}")
    assert trained > base + 0.1, (base, trained)  # it learned the users' labelling rule
    assert len(registry.client.get_metric_history(v.run_id, "loss")) >= 10  # the loss curve is on the run
    tail = EventTail(config.kafka.bootstrap_servers, config.topics.events, LifecycleEvent, from_beginning=True)
    try:
        announced = [e.payload for e in tail.read_to_end() if e.type == "version_published"]
    finally:
        tail.close()
    assert [(p["version"], p["role"]) for p in announced] == [(v.version, "challenger")]
    # The online learner never resumes from a retrain's version.
    assert registry.latest_version() == v.version and registry.latest_version(source="online") is None


def test_retrain_honours_the_time_range_and_the_parent_version(history):
    config, registry = history["config"], history["registry"]
    first = retrain(config, RetrainOptions(until=history["middle"], epochs=2, announce=False), say=print)
    assert first.counts.feedback == PHASE and first.counts.joined == PHASE
    second = retrain(
        config,
        RetrainOptions(since=history["middle"], continue_from=first.version, epochs=1, announce=False),
        say=print,
    )
    assert second.counts.feedback == PHASE + 2 and second.counts.joined == PHASE
    assert second.counts.duplicates == 1 and second.counts.unjoined == 1
    assert registry.get_version(second.version).tags["parent_version"] == first.version
    # Continuing from the first version starts from what it learned, not from the base.
    print(f"second retrain starts at {second.curve[0]['eval_accuracy']:.3f}, base {second.base_accuracy:.3f}")
    assert second.curve[0]["eval_accuracy"] > second.base_accuracy + 0.1


def test_retrain_explains_what_to_change(history):
    config = history["config"]
    with pytest.raises(RetrainError, match="no version has that alias"):
        retrain(config, RetrainOptions(continue_from="nonexistent-alias"))
    with pytest.raises(RetrainError, match="no such version"):
        retrain(config, RetrainOptions(continue_from="9999"))
    future = time.time() + 3600
    with pytest.raises(RetrainError, match="widen --since/--until"):
        retrain(config, RetrainOptions(since=future, epochs=1, announce=False))


def test_train_base_lifts_the_base_and_every_process_can_build_it(history, tmp_path):
    config, registry = history["config"], history["registry"]
    result = retrain(config, RetrainOptions(until=history["middle"], epochs=2, announce=False, train_base="feedback"))
    run = registry.client.get_run(result.run_id)
    seeded = retrain(config, RetrainOptions(until=history["middle"], epochs=1, announce=False)).base_accuracy
    print(f"base held-out accuracy: seeded {seeded:.3f}, trained {result.base_accuracy:.3f}")
    assert result.base_accuracy > seeded + 0.1
    tag = registry.get_version(result.version).tags["base_version"]
    assert tag != config.model.base_version and tag.startswith(config.model.base_version + "-w")
    assert [a.path for a in registry.client.list_artifacts(run.info.run_id, "base")]  # the weights are on the run
    # A replica or learner configured with model.base_weights builds exactly that base.
    values = config.to_dict()
    values["model"]["base_weights"] = result.base_weights
    rebuilt = Config.from_dict(values)
    assert rebuilt.model.base_version == tag
    model = build_base_model(rebuilt.model)
    model.load_adapter_state(0, registry.load_adapter(result.version))
    examples, _ = collect_examples(config, None, history["middle"], say=print)
    held = [ex for ex in examples if is_held_out(ex.event_id, config.learner.holdout_fraction)]
    assert score_adapter(model, -1, held) == pytest.approx(result.base_accuracy)
    assert score_adapter(model, 0, held) == pytest.approx(result.curve[-1]["eval_accuracy"])


def test_a_bad_base_dataset_is_refused_with_its_line(history, tmp_path):
    data = tmp_path / "base.jsonl"
    data.write_text(
        '{"features": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], "label": 1}\n{"features": [1.0], "label": 1}\n'
    )
    with pytest.raises(RetrainError, match="base.jsonl line 2: .*feature"):
        retrain(history["config"], RetrainOptions(epochs=1, announce=False, train_base=str(data)))
