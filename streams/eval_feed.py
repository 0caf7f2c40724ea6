"""Fresh Kafka topics for one evaluation stream, and the round trip of each micro-batch through them.

The drifting-streams protocol (:mod:`cl.evaluation.drifting_streams`) is handed one
:class:`EvalFeed` per stream, so its learner reads events the way the service's learner does:
a ``RequestEvent`` and a ``FeedbackEvent`` per event, read back with the service's reader,
parser (:func:`cl.events.parse_event`) and joiner, built into examples with
:meth:`Example.from_join`.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError

from cl.config import Config
from cl.events import FeedbackEvent, RequestEvent, parse_event
from cl.learning.example import Example
from streams.join import FeedbackJoiner
from streams.producer import EventProducer
from streams.reader import OffsetReader

__all__ = ["EvalFeed"]


class EvalFeed:
    """Fresh request and feedback topics for one stream, and the round trip of a micro-batch.

    Each event is produced as a ``RequestEvent`` (what was served) and a ``FeedbackEvent``
    (the true label), both keyed by request id, then read back with the service's reader,
    parser and joiner. ``counts`` keeps what was produced, consumed, joined and dropped.
    """

    def __init__(self, config: Config, stream: str):
        self.run_id = uuid.uuid4().hex[:8]
        base = f"{config.kafka.topic_prefix}.eval.{stream}.{self.run_id}"
        self.requests_topic, self.feedback_topic = f"{base}.requests", f"{base}.feedback"
        self.bootstrap = config.kafka.bootstrap_servers
        self._create_topics(config)
        self.producer = EventProducer(self.bootstrap, client_id="cl-eval")
        self.reader = self._open_reader(f"{base}.reader")
        self.joiner = FeedbackJoiner(max_requests=1_000_000, max_age_s=3600.0)
        self.index: dict[str, int] = {}  # request_id -> event index
        self.counts: Counter[str] = Counter()

    def _create_topics(self, config: Config) -> None:
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="cl-eval")
        try:
            # One partition each: the stream's order is the read order. Replicas as infra does.
            brokers = 1 if config.kafka.managed else len(admin.describe_cluster().get("brokers") or [1])
            replicas = min(3, brokers)
            admin.create_topics([NewTopic(t, 1, replicas) for t in (self.requests_topic, self.feedback_topic)])
        finally:
            admin.close()

    def _open_reader(self, group: str, wait_s: float = 15.0) -> Any:
        deadline = time.monotonic() + wait_s
        while True:  # a topic created a moment ago may not be in the metadata yet
            try:
                return OffsetReader(self.bootstrap, [self.requests_topic, self.feedback_topic], group)
            except ValueError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def round_trip(
        self, first: int, features: list[list[float]], served: list[Any], labels: list[int], timeout_s: float = 60.0
    ) -> list[Example]:
        """Produce events ``first, first + 1, ...`` and return their joined examples in event order.

        Raises:
            TimeoutError: not every event came back within ``timeout_s``; names the counts.
        """
        ids = [f"{self.run_id}-{first + i}" for i in range(len(features))]
        for i, (rid, x, pred, y) in enumerate(zip(ids, features, served, labels)):
            self.index[rid] = first + i
            request = RequestEvent(
                request_id=rid,
                kind="predict",
                input={"features": x},
                output={"label": pred.label, "probabilities": pred.probabilities},
                model_version=f"eval-{self.run_id}",
                arm="champion",
            )
            self.producer.send(self.requests_topic, request, key=rid)
            self.producer.send(self.feedback_topic, FeedbackEvent(request_id=rid, label=y), key=rid)
        self.producer.flush()
        self.counts["requests produced"] += len(ids)
        self.counts["feedback produced"] += len(ids)
        joined: list[Example] = []
        deadline = time.monotonic() + timeout_s
        while len(joined) < len(ids):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"Kafka returned {len(joined)} of {len(ids)} events of the micro-batch at "
                    f"{first} within {timeout_s:g} s ({dict(self.counts)}); "
                    "is the broker healthy?"
                )
            for record in self.reader.poll(timeout_ms=100):
                joined += self._consume(record)
        self.counts["examples joined"] += len(joined)
        return sorted(joined, key=lambda ex: self.index[ex.request_id])

    def _consume(self, record: Any) -> list[Example]:
        now = time.time()
        if record.topic == self.requests_topic:
            self.counts["requests consumed"] += 1
            event = parse_event(RequestEvent, record.value)
            result = self.joiner.add_request(event, now=now, partition=record.partition, offset=record.offset)
        else:
            self.counts["feedback consumed"] += 1
            result = self.joiner.add_feedback(parse_event(FeedbackEvent, record.value), now=now)
        self.counts["duplicates"] += len(result.duplicates)
        self.counts["unjoined"] += len(result.unjoined)
        return [Example.from_join(request, feedback) for request, feedback in result.joined]

    def close(self, say: Callable[[str], None]) -> None:
        """Close the clients and delete the topics (they are this run's alone)."""
        self.producer.close()
        self.reader.close()
        try:
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="cl-eval")
            try:
                admin.delete_topics([self.requests_topic, self.feedback_topic])
            finally:
                admin.close()
        except KafkaError as e:
            say(f"could not delete {self.requests_topic} / {self.feedback_topic} ({e}); delete them by hand")
