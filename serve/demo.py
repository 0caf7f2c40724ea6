"""The bundled demo: simulated users call the live service and rate what they get.

Halfway the users change their minds (``SimulatedUsers.shift``): the served accuracy drops,
the learner's drift detector fires, and the service recovers as new versions are published.
Progress is one line every couple of seconds; drift and version events are printed as they
arrive on ``cl.events``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import httpx

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


def _post_feedback(client: httpx.Client, body: dict, attempts: int = 5) -> None:
    """Post feedback, waiting out a 429 (rate limit) or 503 (Kafka busy) as its Retry-After says."""
    for attempt in range(attempts):
        response = client.post("/v1/feedback", json=body)
        if response.status_code not in (429, 503) or attempt == attempts - 1:
            response.raise_for_status()
            return
        time.sleep(float(response.headers.get("Retry-After", "1")))


def run_demo(
    config: Config,
    base_url: str,
    *,
    requests: int = 4000,
    shift_at: int | None = None,
    concurrency: int = 4,
    seed: int = 1,
    say: Callable[[str], None] = print,
    api_key: str | None = None,
) -> DemoResult:
    """Send ``requests`` predict calls with feedback; users shift at ``shift_at`` (default: halfway).

    ``api_key`` (roles predict and feedback) is sent as a bearer token when auth is on.
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

    def one(i: int, features: list[float], client: httpx.Client) -> None:
        try:
            r = client.post("/v1/predict", json={"features": features, "user_id": f"user-{i % 97}"})
            r.raise_for_status()
            served = r.json()
            body = {
                "request_id": served["request_id"],
                "user_id": f"user-{i % 97}",
                **users.feedback(features, served["label"]),
            }
            _post_feedback(client, body)
            ok = served["label"] == users.truth(features)
            with lock:
                result.correct.append(ok)
                result.versions.append(served["model_version"])
                recent.append(ok)
        except httpx.HTTPError:
            with lock:
                result.errors += 1

    last = time.monotonic()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with (
        httpx.Client(base_url=base_url, timeout=30.0, headers=headers) as client,
        ThreadPoolExecutor(concurrency) as pool,
    ):
        for start in range(0, requests, concurrency * 8):
            if start <= shift_at < start + concurrency * 8:
                users.shift()
                say(f"  ~ after {len(result.correct)} requests the users change their minds (every class renamed)")
            chunk = [(i, users.query()) for i in range(start, min(requests, start + concurrency * 8))]
            list(pool.map(lambda item: one(item[0], item[1], client), chunk))
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
