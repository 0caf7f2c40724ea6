"""Feedback acceptance without Kafka: 503 (nothing accepted) when the broker is missing or silent."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from cl.events import FeedbackEvent
from serve._private.feedback import accept_feedback
from serve._private.producer_link import ProducerLink
from serve.schemas import FeedbackAccepted
from streams.errors import ProduceError


class Producer:
    """Records what it was asked to send; fails on demand (a stand-in for EventProducer)."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.sent: list[tuple[str, FeedbackEvent, str | None]] = []
        self.closed = False

    def send_and_wait(self, topic: str, event: FeedbackEvent, key: str | None = None, timeout_s: float = 10.0) -> None:
        if self.fail:
            raise ProduceError(f"Kafka did not acknowledge the event on {topic!r} within {timeout_s:g} s")
        self.sent.append((topic, event, key))

    def flush(self, timeout_s: float = 10.0) -> None:
        pass

    def close(self) -> None:
        self.closed = True


EVENT = FeedbackEvent(request_id="r-1", thumbs="up")


def _ready_link(producer: Producer) -> ProducerLink:
    link = ProducerLink(lambda: producer)
    link.get(timeout_s=5.0)
    return link


def test_acknowledged_feedback_is_accepted_keyed_by_request_id():
    producer = Producer()
    result = asyncio.run(accept_feedback(_ready_link(producer), "t.feedback", EVENT))
    assert isinstance(result, FeedbackAccepted)
    assert (result.event_id, result.request_id) == (EVENT.event_id, "r-1")
    assert producer.sent == [("t.feedback", EVENT, "r-1")]


def test_unacknowledged_feedback_gets_503():
    result = asyncio.run(accept_feedback(_ready_link(Producer(fail=True)), "t.feedback", EVENT))
    assert result.status_code == 503
    body = json.loads(result.body)
    assert "feedback not accepted" in body["detail"] and "did not acknowledge" in body["detail"]
    assert result.headers["retry-after"] == "5"


def test_unreachable_kafka_gets_503_within_the_connect_wait():
    def connect() -> Producer:
        raise ProduceError("Kafka at 127.0.0.1:1 is not reachable")

    link = ProducerLink(connect, what="Kafka at 127.0.0.1:1")
    start = time.monotonic()
    result = asyncio.run(accept_feedback(link, "t.feedback", EVENT, connect_wait_s=0.5))
    assert time.monotonic() - start < 5
    assert result.status_code == 503 and "not connected to Kafka at 127.0.0.1:1" in json.loads(result.body)["detail"]


def test_slow_connection_is_waited_for_and_closed_on_shutdown():
    producer = Producer()

    def connect() -> Producer:
        time.sleep(0.3)
        return producer

    link = ProducerLink(connect)
    assert link.get(timeout_s=5.0) is producer and link.connected
    link.close()
    assert producer.closed and not link.connected
    with pytest.raises(ProduceError, match="still connecting|not connected"):
        link.get(timeout_s=0.1)
