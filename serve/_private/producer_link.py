"""A Kafka producer that connects in the background, so a Kafka outage costs bounded waits.

Creating a producer against an unreachable broker blocks for tens of seconds. The ingress
must not hang that long: it starts connecting when it starts, and each caller waits at most
its own timeout for the connection before it gets a :class:`streams.ProduceError` (feedback
then answers 503; request logging drops the event and counts it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from streams.errors import ProduceError

__all__ = ["ProducerLink"]


class ProducerLink:
    """Holds one producer made by ``connect()``; reconnects in the background after a failure.

    Args:
        connect: Makes a connected producer (e.g. ``lambda: EventProducer(bootstrap)``);
            may block and may raise.
        what: How errors name the broker, e.g. ``"Kafka at 127.0.0.1:9092"``.
    """

    def __init__(self, connect: Callable[[], Any], what: str = "Kafka") -> None:
        self._connect = connect
        self.what = what
        self._producer: Any = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._start()

    @property
    def connected(self) -> bool:
        return self._producer is not None

    def _start(self) -> None:
        with self._lock:
            if self._closed or self._producer is not None or (self._thread and self._thread.is_alive()):
                return
            self._thread = threading.Thread(target=self._run, name="kafka-connect", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            producer = self._connect()
        except Exception as e:  # noqa: BLE001 - reported to the next caller of get()
            self._error = e
            return
        with self._lock:
            if self._closed:
                producer.close()
                return
            self._producer, self._error = producer, None
            self._ready.set()

    def get(self, timeout_s: float) -> Any:
        """The producer, waiting up to ``timeout_s`` for a connection in progress.

        Raises:
            ProduceError: Not connected within ``timeout_s``; names the last failure.
        """
        if self._producer is None:
            self._start()
            if timeout_s > 0:
                self._ready.wait(timeout_s)
        producer = self._producer
        if producer is None:
            why = f"last attempt: {self._error}" if self._error else "still connecting"
            raise ProduceError(f"not connected to {self.what} ({why})")
        return producer

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush and close the producer, if there is one."""
        with self._lock:
            self._closed = True
            producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.flush(timeout_s=timeout_s)
            finally:
                producer.close()
