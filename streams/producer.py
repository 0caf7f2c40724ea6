"""Write events to Kafka: JSON values, request-id keys, ``acks=all``."""

from __future__ import annotations

from kafka import KafkaProducer
from kafka.errors import KafkaError

from cl.events import Event
from streams.errors import ProduceError

__all__ = ["EventProducer"]


class EventProducer:
    """A thin, typed wrapper over ``KafkaProducer`` for the service's events.

    Keys matter: requests and their feedback are keyed by ``request_id``, so with equal
    partition counts both land on the same partition number and one learner worker sees both.

    Args:
        bootstrap_servers: ``host:port[,host:port]``.
        client_id: shown in the broker's logs.
    """

    def __init__(self, bootstrap_servers: str, client_id: str = "cl"):
        self.bootstrap_servers = bootstrap_servers
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=bootstrap_servers,
                client_id=client_id,
                acks="all",
                retries=10,
                linger_ms=2,
                max_in_flight_requests_per_connection=1,  # keep per-key order across retries
                request_timeout_ms=10_000,
            )
        except (KafkaError, OSError) as e:
            raise ProduceError(f"Kafka at {bootstrap_servers} is not reachable ({e}); is `cl up` running?") from e

    def send(self, topic: str, event: Event, key: str | None = None):
        """Queue ``event`` for ``topic``; returns kafka-python's future (``.get()`` waits)."""
        return self._producer.send(topic, value=event.to_bytes(), key=key.encode() if key else None)

    def send_and_wait(self, topic: str, event: Event, key: str | None = None, timeout_s: float = 10.0) -> None:
        """Write ``event`` and wait until every in-sync replica has it.

        Raises:
            ProduceError: the broker did not acknowledge within ``timeout_s``.
        """
        try:
            self.send(topic, event, key).get(timeout=timeout_s)
        except (KafkaError, OSError) as e:
            raise ProduceError(f"Kafka did not acknowledge the event on {topic!r} within {timeout_s:g} s: {e}") from e

    def flush(self, timeout_s: float = 10.0) -> None:
        self._producer.flush(timeout=timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        self._producer.close(timeout=timeout_s)
