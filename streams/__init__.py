"""Kafka: producing events, reading with manual offsets, joining feedback, dead letters.

``streams.eval_feed`` (not imported here: it loads torch) carries the evaluation streams.
"""

from streams.dead_letter import DeadLetters
from streams.errors import ProduceError
from streams.join import FeedbackJoiner, JoinResult
from streams.producer import EventProducer
from streams.reader import OffsetReader, Record, position_key
from streams.tail import EventTail

__all__ = [
    "DeadLetters",
    "EventProducer",
    "EventTail",
    "FeedbackJoiner",
    "JoinResult",
    "OffsetReader",
    "ProduceError",
    "Record",
    "position_key",
]
