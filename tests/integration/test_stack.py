"""The real local stack: Kafka round trips, the MLflow registry, `ray job submit`, a broker crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _consume_all(bootstrap: str, topic: str, expect: int, timeout_s: float = 30.0) -> list[bytes]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=f"test-{uuid.uuid4().hex}",
        consumer_timeout_ms=2000,
    )
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(values) < expect and time.monotonic() < deadline:
            values.extend(m.value for m in consumer)
    finally:
        consumer.close()
    return values


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", retries=5)
    for v in values:
        producer.send(topic, v)
    producer.flush(timeout=30)
    producer.close()


@pytest.fixture
def scratch_topic(stack) -> str:
    """A topic of its own, so raw test payloads never reach the service's typed topics."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    name = f"{stack.kafka.topic_prefix}.scratch-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=stack.kafka.bootstrap_servers)
    try:
        admin.create_topics([NewTopic(name, 2, 1)])
    finally:
        admin.close()
    return name


def test_topics_exist_with_configured_partitions(stack):
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=stack.kafka.bootstrap_servers)
    try:
        topics = {t["name"]: len(t["partitions"]) for t in admin.describe_topics()}
    finally:
        admin.close()
    t, k = stack.topics, stack.kafka
    assert topics[t.requests] == k.requests_partitions
    assert topics[t.feedback] == k.feedback_partitions
    assert topics[t.dlq] == k.dlq_partitions
    assert topics[t.events] == k.events_partitions


def test_kafka_produce_consume_round_trip(stack, scratch_topic):
    topic = scratch_topic
    sent = [json.dumps({"event_id": uuid.uuid4().hex, "n": i}).encode() for i in range(25)]
    _produce(stack.kafka.bootstrap_servers, topic, sent)
    got = _consume_all(stack.kafka.bootstrap_servers, topic, expect=len(sent))
    assert set(sent) <= set(got)


def test_mlflow_register_alias_and_load_round_trip(stack, tmp_path: Path):
    import mlflow
    import torch
    from mlflow import MlflowClient
    from safetensors.torch import load_file, save_file

    mlflow.set_tracking_uri(stack.mlflow.tracking_uri)
    client = MlflowClient(stack.mlflow.tracking_uri)
    name = f"{stack.mlflow.model_name}-{uuid.uuid4().hex[:8]}"
    weights = {"lora_a": torch.randn(4, 16), "lora_b": torch.randn(16, 4)}
    save_file(weights, tmp_path / "adapter.safetensors")

    mlflow.set_experiment("stack-test")
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(tmp_path / "adapter.safetensors"), artifact_path="adapter")
        mlflow.log_metric("loss", 0.5)
    client.create_registered_model(name)
    version = client.create_model_version(
        name, f"runs:/{run.info.run_id}/adapter", run_id=run.info.run_id, tags={"events_seen": "25"}
    )
    client.set_registered_model_alias(name, "champion", version.version)

    by_alias = client.get_model_version_by_alias(name, "champion")
    assert by_alias.version == version.version and by_alias.tags["events_seen"] == "25"
    local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}@champion", dst_path=str(tmp_path / "dl"))
    loaded = load_file(Path(local) / "adapter.safetensors")
    for key, tensor in weights.items():
        assert torch.equal(loaded[key], tensor)


def test_ray_job_submit_reads_from_kafka(stack, scratch_topic, tmp_path: Path):
    marker = f"hello-{uuid.uuid4().hex}"
    _produce(stack.kafka.bootstrap_servers, scratch_topic, [marker.encode()])
    entry = tmp_path / "read_topic.py"
    entry.write_text(
        "import sys, uuid\n"
        "from kafka import KafkaConsumer\n"
        "c = KafkaConsumer(sys.argv[2], bootstrap_servers=sys.argv[1], auto_offset_reset='earliest',\n"
        "                  group_id=uuid.uuid4().hex, consumer_timeout_ms=10000)\n"
        "print('read:', [m.value.decode() for m in c])\n"
    )
    ray_bin = Path(sys.executable).with_name("ray")
    result = subprocess.run(
        [
            str(ray_bin),
            "job",
            "submit",
            "--address",
            stack.ray.dashboard_url,
            "--working-dir",
            str(tmp_path),
            "--",
            "python",
            "read_topic.py",
            stack.kafka.bootstrap_servers,
            scratch_topic,
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert marker in result.stdout


def test_killed_broker_is_reported_and_restarted_without_losing_messages(
    stack, stack_environ, cl_command, scratch_topic
):
    from infra._private.process import read_pid
    from infra.kafka_broker import KafkaBroker

    if not stack.kafka.managed:
        pytest.fail("this test kills the local broker; unset CL_KAFKA_BOOTSTRAP to run it")
    topic = scratch_topic
    sent = [f"before-kill-{i}-{uuid.uuid4().hex}".encode() for i in range(40)]
    _produce(stack.kafka.bootstrap_servers, topic, sent)

    broker = KafkaBroker(stack)
    pid = read_pid(broker.pid_file)
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while read_pid(broker.pid_file) is not None and time.monotonic() < deadline:
        time.sleep(0.2)

    status = cl_command(["status"], stack_environ)
    assert status.returncode != 0
    assert "DOWN kafka" in status.stdout and "cl up" in status.stdout + status.stderr

    up = cl_command(["up"], stack_environ)
    assert up.returncode == 0, up.stderr
    assert cl_command(["status"], stack_environ).returncode == 0
    got = _consume_all(stack.kafka.bootstrap_servers, topic, expect=len(sent), timeout_s=60)
    assert set(sent) <= set(got)
