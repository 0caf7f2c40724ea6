"""The dead-letter topic: every event we could not use, with the reason, never silently dropped."""

from __future__ import annotations

from cl.events import DeadLetter, EventError, FeedbackEvent, FieldError
from streams.producer import EventProducer
from streams.reader import Record

__all__ = ["DeadLetters"]


class DeadLetters:
    """Writes ``DeadLetter`` records to the dead-letter topic and counts them by reason."""

    def __init__(self, producer: EventProducer, topic: str):
        self.producer = producer
        self.topic = topic
        self.counts: dict[str, int] = {}

    def _send(self, letter: DeadLetter, key: str | None) -> None:
        self.counts[letter.reason] = self.counts.get(letter.reason, 0) + 1
        self.producer.send(self.topic, letter, key=key)

    def invalid(self, record: Record, error: EventError) -> None:
        """A payload that failed validation."""
        letter = DeadLetter.from_error(
            record.value, error, topic=record.topic, partition=record.partition, offset=record.offset
        )
        self._send(letter, record.key.decode(errors="replace") if record.key else None)

    def rejected(
        self, feedback: FeedbackEvent, reason: str, field: str, message: str, source_topic: str | None = None
    ) -> None:
        """A valid event the learner cannot use (unjoined, a label out of range, ...)."""
        letter = DeadLetter(
            raw=feedback.model_dump_json(),
            reason=reason,
            errors=[FieldError(field=field, message=message)],
            source_topic=source_topic,
        )
        self._send(letter, feedback.request_id)

    def flush(self) -> None:
        self.producer.flush()
