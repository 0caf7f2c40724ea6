"""The stream layer against the real broker: positions, commits, tails, dead letters."""

from __future__ import annotations

import time
import uuid

import pytest

from cl.events import DeadLetter, EventError, FeedbackEvent, LifecycleEvent, parse_event
from streams import DeadLetters, EventProducer, EventTail, OffsetReader, position_key

pytestmark = pytest.mark.integration


def _read_all(reader: OffsetReader, expect: int, timeout_s: float = 30.0):
    records, deadline = [], time.monotonic() + timeout_s
    while len(records) < expect and time.monotonic() < deadline:
        records += reader.poll(timeout_ms=500)
    return records


def test_reader_resumes_from_saved_positions_and_commits(stack):
    producer = EventProducer(stack.kafka.bootstrap_servers)
    topic, group = stack.topics.feedback, f"g-{uuid.uuid4().hex}"
    first = FeedbackEvent(request_id=f"r-{uuid.uuid4().hex}", label=1)
    producer.send_and_wait(topic, first, key=first.request_id)
    reader = OffsetReader(stack.kafka.bootstrap_servers, [topic], group)
    seen = _read_all(reader, expect=1)
    assert first.event_id in {parse_event(FeedbackEvent, r.value).event_id for r in seen}
    saved = reader.positions()
    reader.commit(saved)
    reader.close()

    second = FeedbackEvent(request_id=f"r-{uuid.uuid4().hex}", thumbs="up")
    producer.send_and_wait(topic, second, key=second.request_id)
    # From the saved positions: exactly the new event, nothing before it.
    again = OffsetReader(stack.kafka.bootstrap_servers, [topic], f"other-{uuid.uuid4().hex}", positions=saved)
    records = _read_all(again, expect=1)
    assert [parse_event(FeedbackEvent, r.value).event_id for r in records] == [second.event_id]
    again.close()
    # Without positions, the group's committed offsets are the start.
    committed = OffsetReader(stack.kafka.bootstrap_servers, [topic], group)
    assert committed.positions() == saved and committed.lag() >= 1
    committed.close()
    producer.close()


def test_partitions_are_split_by_rank(stack):
    topic = stack.topics.feedback
    n = stack.kafka.feedback_partitions
    readers = [OffsetReader(stack.kafka.bootstrap_servers, [topic], "split", rank=r, world_size=2) for r in range(2)]
    owned = [set(reader.positions()) for reader in readers]
    assert owned[0].isdisjoint(owned[1])
    assert owned[0] | owned[1] == {position_key(topic, p) for p in range(n)}
    for reader in readers:
        reader.close()


def test_tail_sees_new_events_only_and_dead_letters_carry_reasons(stack):
    producer = EventProducer(stack.kafka.bootstrap_servers)
    before = LifecycleEvent(type="version_published", payload={"version": "old"})
    producer.send_and_wait(stack.topics.events, before)
    tail = EventTail(stack.kafka.bootstrap_servers, stack.topics.events, LifecycleEvent)
    after = LifecycleEvent(type="version_published", payload={"version": "new"})
    producer.send_and_wait(stack.topics.events, after)
    got, deadline = [], time.monotonic() + 20
    while after.event_id not in {e.event_id for e in got} and time.monotonic() < deadline:
        got += tail.poll(500)
    assert after.event_id in {e.event_id for e in got}
    assert before.event_id not in {e.event_id for e in got}
    tail.close()

    dlq_tail = EventTail(stack.kafka.bootstrap_servers, stack.topics.dlq, DeadLetter)
    letters = DeadLetters(producer, stack.topics.dlq)
    from streams import Record

    bad = Record(stack.topics.feedback, 0, 7, b"r-9", b'{"request_id": "r-9", "rating": 9}', 0)
    try:
        parse_event(FeedbackEvent, bad.value)
    except EventError as err:
        letters.invalid(bad, err)
    letters.flush()
    found, deadline = [], time.monotonic() + 20
    while not found and time.monotonic() < deadline:
        found += dlq_tail.poll(500)
    assert found[0].reason == "invalid_event" and found[0].source_offset == 7
    assert found[0].errors[0].field == "rating"
    assert letters.counts == {"invalid_event": 1}
    dlq_tail.close()
    producer.close()
