"""`cl report` draws the service's curve from its real cl.events history; `cl eval` writes a
protocol's Markdown and plots, and the index lists its goals."""

from __future__ import annotations

import uuid

import pytest

from cl.config import Config
from cl.events import LifecycleEvent
from infra.kafka_broker import KafkaBroker
from streams import EventProducer

pytestmark = pytest.mark.integration


def test_cl_report_plots_versions_drifts_promotions_and_rollbacks(stack, stack_environ, cl_command, tmp_path):
    tag = uuid.uuid4().hex[:6]
    env = {**stack_environ, "CL_KAFKA_TOPIC_PREFIX": f"rep{tag}", "CL_MLFLOW_MODEL_NAME": f"rep{tag}-adapter"}
    values = stack.to_dict()
    values["kafka"]["topic_prefix"], values["mlflow"]["model_name"] = (
        env["CL_KAFKA_TOPIC_PREFIX"],
        env["CL_MLFLOW_MODEL_NAME"],
    )
    config = Config.from_dict(values)
    KafkaBroker(config).create_topics()
    name = config.mlflow.model_name
    events = [
        LifecycleEvent(
            type="version_published",
            ts=100.0 + i,
            payload={
                "version": str(i + 1),
                "model_name": name,
                "metrics": {
                    "served_error_rate": 0.5 - 0.1 * i,
                    "prequential_accuracy": 0.4,
                    "events_seen": 200.0 * (i + 1),
                },
            },
        )
        for i in range(3)
    ]
    events += [
        LifecycleEvent(type="version_published", ts=101.5, payload={"version": "7", "model_name": "another-model"}),
        LifecycleEvent(type="drift_detected", ts=101.2, payload={"events_seen": 250}),
        LifecycleEvent(type="promoted", ts=102.5, payload={"version": "2", "model_name": name, "reason": "better"}),
        LifecycleEvent(
            type="rolled_back",
            ts=102.8,
            payload={"version": "3", "model_name": name, "reason": "worse, with confidence"},
        ),
    ]
    producer = EventProducer(config.kafka.bootstrap_servers)
    for e in events:
        producer.send(config.topics.events, e)
    producer.flush(30)
    producer.close()

    done = cl_command(["report", "--out", str(tmp_path)], env)
    assert done.returncode == 0, done.stderr
    md = (tmp_path / "service.md").read_text()
    assert "| 3 | 1 | 1 | 1 | 600 | 0.700 |" in md, md  # another model's version is not counted
    assert "| rolled_back | 3 | worse, with confidence |" in md
    assert (tmp_path / "service-curve.png").stat().st_size > 10_000
    assert "[The running service" in (tmp_path / "README.md").read_text()


def test_cl_eval_writes_a_protocol_report_and_the_index(stack_environ, cl_command, tmp_path):
    done = cl_command(["eval", "--quick", "--only", "detector_calibration", "--out", str(tmp_path)], stack_environ)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "detector_calibration done" in done.stdout
    md = (tmp_path / "detector_calibration.md").read_text()
    assert md.startswith("# Drift-detector calibration") and "quick (test-suite) size" in md
    pngs = list(tmp_path.glob("detector_calibration-*.png"))
    assert pngs and all(p.stat().st_size > 5_000 for p in pngs)
    assert "[Drift-detector calibration](detector_calibration.md) (quick)" in (tmp_path / "README.md").read_text()
    bad = cl_command(["eval", "--only", "digitz"], stack_environ)
    assert bad.returncode == 2 and "unknown protocol 'digitz'; choose from digits" in bad.stderr
