"""Read topics from saved positions and commit only when told: the learner's consumer.

Offsets are the learner's to manage: it snapshots them with the model in MLflow and commits
them to Kafka only after the snapshot is registered, so a crash never loses or double-applies
an event. Partitions are split among workers by rank (partition % world_size == rank), except
on topics every worker reads whole (``every_partition``): the learners read all of the request
log, so feedback joins its request whichever partition a client posted it to.
"""

from __future__ import annotations

from dataclasses import dataclass

from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition

__all__ = ["OffsetReader", "Record", "position_key"]


@dataclass(frozen=True)
class Record:
    """One message as read, with where it came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int


def position_key(topic: str, partition: int) -> str:
    """``"topic:partition"``: how positions are keyed in snapshots (JSON-friendly)."""
    return f"{topic}:{partition}"


class OffsetReader:
    """A consumer with manual assignment and manual offsets.

    Args:
        bootstrap_servers: ``host:port[,host:port]``.
        topics: topics to read.
        group_id: consumer group used for committing (and lag monitoring).
        rank, world_size: this worker's share of the partitions.
        positions: where to start, ``{"topic:partition": next_offset}`` (from a snapshot); a
            partition without one starts at the group's committed offset, else the beginning.
        every_partition: topics of ``topics`` read whole by every rank.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topics: list[str],
        group_id: str,
        *,
        rank: int = 0,
        world_size: int = 1,
        positions: dict[str, int] | None = None,
        max_poll_records: int = 1000,
        every_partition: list[str] | tuple[str, ...] = (),
    ):
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_poll_records,
        )
        self.partitions: list[TopicPartition] = []
        for topic in topics:
            found = self._consumer.partitions_for_topic(topic)
            if not found:
                raise ValueError(f"topic {topic!r} does not exist; run `cl up` to create the service's topics")
            mine = [p for p in sorted(found) if topic in every_partition or p % world_size == rank]
            self.partitions += [TopicPartition(topic, p) for p in mine]
        self._consumer.assign(self.partitions)
        positions = positions or {}
        for tp in self.partitions:
            saved = positions.get(position_key(tp.topic, tp.partition))
            committed = self._consumer.committed(tp) if saved is None else None
            if saved is not None:
                self._consumer.seek(tp, saved)
            elif committed is not None:
                self._consumer.seek(tp, committed)
            else:
                self._consumer.seek_to_beginning(tp)

    def poll(self, timeout_ms: int = 200, max_records: int | None = None) -> list[Record]:
        """The next records, in order within each partition."""
        batches = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        return [
            Record(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp)
            for tp in sorted(batches, key=lambda tp: (tp.topic, tp.partition))
            for r in batches[tp]
        ]

    def positions(self) -> dict[str, int]:
        """The next offset to read per assigned partition."""
        return {position_key(tp.topic, tp.partition): self._consumer.position(tp) for tp in self.partitions}

    def seek(self, positions: dict[str, int]) -> None:
        for tp in self.partitions:
            key = position_key(tp.topic, tp.partition)
            if key in positions:
                self._consumer.seek(tp, positions[key])

    def commit(self, positions: dict[str, int]) -> None:
        """Record ``positions`` as the group's committed offsets."""
        offsets = {
            tp: OffsetAndMetadata(positions[position_key(tp.topic, tp.partition)], "", -1)
            for tp in self.partitions
            if position_key(tp.topic, tp.partition) in positions
        }
        if offsets:
            self._consumer.commit(offsets)

    def lag(self) -> int:
        """Messages on the assigned partitions not read yet (consumer lag)."""
        return sum(self.lag_by_topic().values())

    def lag_by_topic(self) -> dict[str, int]:
        """Consumer lag of each topic (its assigned partitions summed)."""
        ends = self._consumer.end_offsets(self.partitions)
        lag: dict[str, int] = {}
        for tp in self.partitions:
            lag[tp.topic] = lag.get(tp.topic, 0) + max(0, ends[tp] - self._consumer.position(tp))
        return lag

    def close(self) -> None:
        self._consumer.close()
