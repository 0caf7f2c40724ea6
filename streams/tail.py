"""Follow a topic from now on, without a consumer group (each follower sees every event)."""

from __future__ import annotations

import time
from typing import Generic, TypeVar

from kafka import KafkaConsumer, TopicPartition

from cl.events import Event, EventError, parse_event

__all__ = ["EventTail"]

E = TypeVar("E", bound=Event)


class EventTail(Generic[E]):
    """Reads new events of one type from one topic; skips payloads that do not parse.

    Used by serving replicas to hear ``version_published`` on ``cl.events``: every replica
    must see every announcement, so there is no group and no committed offset.

    Args:
        bootstrap_servers: ``host:port[,host:port]``.
        topic: the topic to follow.
        model_cls: the event model, e.g. ``LifecycleEvent``.
        from_beginning: read the topic's whole history first (e.g. to rebuild state).
    """

    def __init__(self, bootstrap_servers: str, topic: str, model_cls: type[E], *, from_beginning: bool = False):
        self.topic = topic
        self.model_cls = model_cls
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False, group_id=None)
        partitions = [TopicPartition(topic, p) for p in sorted(self._consumer.partitions_for_topic(topic) or [])]
        if not partitions:
            raise ValueError(f"topic {topic!r} does not exist; run `cl up` to create the service's topics")
        self._consumer.assign(partitions)
        if from_beginning:
            self._consumer.seek_to_beginning(*partitions)
        else:
            self._consumer.seek_to_end(*partitions)
            for tp in partitions:  # resolve "end" now, so events sent after construction are seen
                self._consumer.position(tp)

    def poll(self, timeout_ms: int = 500) -> list[E]:
        events: list[E] = []
        for records in self._consumer.poll(timeout_ms=timeout_ms).values():
            for record in records:
                try:
                    events.append(parse_event(self.model_cls, record.value))  # type: ignore[arg-type]
                except EventError:
                    continue
        return events

    def read_to_end(self, timeout_s: float = 30.0) -> list[E]:
        """Every event up to the topic's end as of now (e.g. a history to rebuild state from).

        Raises:
            TimeoutError: The end was not reached within ``timeout_s``.
        """
        partitions = list(self._consumer.assignment())
        ends = self._consumer.end_offsets(partitions)
        events: list[E] = []
        deadline = time.monotonic() + timeout_s
        while any(self._consumer.position(tp) < ends[tp] for tp in partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {self.topic} to its end within {timeout_s:g} s")
            events += self.poll(timeout_ms=500)
        return events

    def close(self) -> None:
        self._consumer.close()
