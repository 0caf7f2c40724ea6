"""Read a topic's history once, between two times, up to where it ended when reading began.

What an offline retrain replays: unlike :class:`~streams.reader.OffsetReader`, nothing is
committed and no consumer group is joined, so the online learner's positions are untouched,
and the end is fixed at the start so a busy topic still gives a finite read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from kafka import KafkaConsumer, TopicPartition

from streams.reader import Record

__all__ = ["read_history"]


def read_history(
    bootstrap_servers: str,
    topic: str,
    *,
    since: float | None = None,
    until: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    poll_timeout_ms: int = 500,
    max_idle_s: float = 30.0,
) -> Iterator[Record]:
    """Yield every record of ``topic`` with ``since <= timestamp <= until`` (unix seconds).

    Partitions are read one after the other, each from the first offset at or after ``since``
    (``offsets_for_times``) to its end offset as it was when this call began.

    Args:
        bootstrap_servers: ``host:port[,host:port]``.
        topic: The topic to read.
        since: Skip records older than this (default: from the beginning).
        until: Skip records newer than this (default: to the end).
        progress: Called as ``progress(records_read, records_to_read)`` every few thousand.
        poll_timeout_ms: One poll's wait.
        max_idle_s: Give up when a partition yields nothing for this long before its end.

    Raises:
        ValueError: ``since`` is after ``until``, or the topic does not exist.
        TimeoutError: The broker stopped delivering before the end offsets were reached.
    """
    if since is not None and until is not None and since > until:
        raise ValueError(f"since={since} is after until={until}; give a time range that starts before it ends")
    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False, group_id=None)
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise ValueError(
                f"topic {topic!r} does not exist on {bootstrap_servers}; check the name (cl up creates the service's topics)"
            )
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        ends = consumer.end_offsets(tps)
        starts = _start_offsets(consumer, tps, since, ends)
        total = sum(max(0, ends[tp] - starts[tp]) for tp in tps)
        read = 0
        for tp in tps:
            if starts[tp] >= ends[tp]:
                continue
            consumer.assign([tp])
            consumer.seek(tp, starts[tp])
            position, idle_since = starts[tp], time.monotonic()
            while position < ends[tp]:
                batch = consumer.poll(timeout_ms=poll_timeout_ms).get(tp, [])
                if not batch:
                    if time.monotonic() - idle_since > max_idle_s:
                        raise TimeoutError(
                            f"{topic}[{tp.partition}] stopped at offset {position} of {ends[tp]}; is the broker up?"
                        )
                    continue
                idle_since = time.monotonic()
                for m in batch:
                    if m.offset >= ends[tp]:
                        break
                    position = m.offset + 1
                    read += 1
                    if progress and read % 5000 == 0:
                        progress(read, total)
                    if until is not None and m.timestamp / 1000.0 > until:
                        continue
                    yield Record(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp)
        if progress:
            progress(read, total)
    finally:
        consumer.close()


def _start_offsets(
    consumer: KafkaConsumer, tps: list[TopicPartition], since: float | None, ends: dict[TopicPartition, int]
) -> dict[TopicPartition, int]:
    """The first offset at or after ``since`` (no such record: the end), or the beginning."""
    if since is None:
        return consumer.beginning_offsets(tps)
    found = consumer.offsets_for_times({tp: int(since * 1000) for tp in tps})
    return {tp: (found[tp].offset if found.get(tp) is not None else ends[tp]) for tp in tps}
