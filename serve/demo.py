"""The bundled demo: simulated users call the live service and rate what they get.

Halfway the users change their minds (``SimulatedUsers.shift``): the served accuracy drops,
the learner's drift detector fires, and the service recovers as new versions are published.
Progress is one line every couple of seconds; drift and version events are printed as they
arrive on ``cl.events``. The users call the service as any user's code does, through the SDK's
:class:`cl.client.Client`, which waits out a rate-limited or busy feedback post as its
``Retry-After`` says.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from cl.client import Client, ServiceError
from cl.config import Config
from cl.events import LifecycleEvent
from cl.testing.simulated_users import SimulatedUsers
from streams import EventTail

__all__ = ["DemoResult", "run_demo"]


@dataclass
class DemoResult:
    """What the demo saw: per-request correctness, served versions, drift and version events."""

    correct: list[bool] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    drift_at: list[int] = field(default_factory=list)
    published: list[str] = field(default_factory=list)
    errors: int = 0

    def accuracy(self, start: int, end: int | None = None) -> float:
        window = self.correct[start:end]
        return sum(window) / max(1, len(window))


def run_demo(
    config: Config,
    client: Client,
    *,
    requests: int = 4000,
    shift_at: int | None = None,
    concurrency: int = 4,
    seed: int = 1,
    say: Callable[[str], None] = print,
) -> DemoResult:
    """Send ``requests`` predict calls with feedback; users shift at ``shift_at`` (default: halfway).

    Args:
        config: The service config (the model's sizes, ``cl.events``).
        client: A client of the running service; with auth on, its key needs the ``predict`` and
            ``feedback`` roles. Calls go out from ``concurrency`` threads at once.
    """
    users = SimulatedUsers(config.model.n_features, config.model.n_labels, seed=seed)
    shift_at = requests // 2 if shift_at is None else shift_at
    result = DemoResult()
    lock = threading.Lock()
    stop = threading.Event()
    recent: deque[bool] = deque(maxlen=200)

    def watch_events() -> None:
        tail = EventTail(config.kafka.bootstrap_servers, config.topics.events, LifecycleEvent)
        while not stop.is_set():
            for event in tail.poll(500):
                if event.type == "drift_detected":
                    result.drift_at.append(len(result.correct))
                    say(
                        f"  ! drift detected by the learner (after {event.payload.get('events_seen')} events; "
                        f"actions: {', '.join(event.payload.get('actions') or []) or 'none'})"
                    )
                elif event.type == "version_published":
                    result.published.append(str(event.payload.get("version")))
        tail.close()

    watcher = threading.Thread(target=watch_events, daemon=True)
    watcher.start()
    time.sleep(1.0)  # let the watcher reach the end of the topic

    def one(i: int, features: list[float]) -> None:
        user = f"user-{i % 97}"
        try:
            served = client.predict(features=features, user_id=user)
            client.feedback(served.request_id, user_id=user, **users.feedback(features, served.label))
            ok = served.label == users.truth(features)
            with lock:
                result.correct.append(ok)
                result.versions.append(served.model_version)
                recent.append(ok)
        except ServiceError:  # refused, failed after the client's retries, or no answer (Unreachable)
            with lock:
                result.errors += 1

    last = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        for start in range(0, requests, concurrency * 8):
            if start <= shift_at < start + concurrency * 8:
                users.shift()
                say(f"  ~ after {len(result.correct)} requests the users change their minds (every class renamed)")
            chunk = [(i, users.query()) for i in range(start, min(requests, start + concurrency * 8))]
            list(pool.map(lambda item: one(*item), chunk))
            if time.monotonic() - last >= 2.0 or start + len(chunk) >= requests:
                with lock:
                    acc = sum(recent) / max(1, len(recent))
                    serving = result.versions[-1] if result.versions else "-"
                say(
                    f"  requests {len(result.correct):5d} | positive-rating rate (last 200) {acc:5.1%} | serving version {serving:>5}"
                    f" | versions published {len(result.published):3d} | errors {result.errors}"
                )
                last = time.monotonic()
    stop.set()
    watcher.join(timeout=5)
    return result
