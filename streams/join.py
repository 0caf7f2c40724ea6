"""Join feedback to the request it rates, within a bounded window, exactly once per event id.

Pure logic (no Kafka): the learner feeds it requests and feedback in arrival order. Feedback
that arrives before its request waits (``max_age_s``); feedback whose request never shows up
is released as unjoined, for the dead-letter topic. Requests are kept for ``max_age_s`` and at
most ``max_requests`` of them.

Resuming without storing the request window: the joiner knows the offset of the oldest request
it still holds per partition (``request_resume_offsets``); a learner that restarts re-reads
requests from there, which rebuilds the window exactly. Only pending feedback and the recent
event ids (for de-duplication) go into the snapshot.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from cl.events import FeedbackEvent, RequestEvent

__all__ = ["FeedbackJoiner", "JoinResult"]


@dataclass
class JoinResult:
    """What one call produced: joined pairs, duplicates dropped, feedback given up on."""

    joined: list[tuple[RequestEvent, FeedbackEvent]]
    duplicates: list[FeedbackEvent]
    unjoined: list[FeedbackEvent]


class FeedbackJoiner:
    """Bounded request window + pending feedback + recent event ids.

    Args:
        max_requests: requests held at most (oldest evicted first).
        max_age_s: how long a request is kept, and how long feedback waits for its request.
        dedupe_window: how many recent feedback ``event_id`` s are remembered.

    Example:
        >>> from cl.events import RequestEvent, FeedbackEvent
        >>> j = FeedbackJoiner(max_requests=100, max_age_s=60)
        >>> fb = FeedbackEvent(request_id="r1", label=2, ts=10.0)
        >>> j.add_feedback(fb, now=10.0).joined          # the request has not arrived yet
        []
        >>> req = RequestEvent(request_id="r1", kind="predict", input={"features": [1.0]},
        ...                    output={"label": 0}, model_version="base", arm="champion", ts=9.0)
        >>> [(r.request_id, f.label) for r, f in j.add_request(req, now=10.5).joined]
        [('r1', 2)]
        >>> len(j.add_feedback(fb, now=11.0).duplicates)  # the same event again
        1
    """

    def __init__(self, max_requests: int = 50_000, max_age_s: float = 600.0, dedupe_window: int = 10_000):
        self.max_requests = max_requests
        self.max_age_s = max_age_s
        self.dedupe_window = dedupe_window
        # request_id -> (request, partition, offset, arrival time)
        self._requests: OrderedDict[str, tuple[RequestEvent, int, int, float]] = OrderedDict()
        # request_id -> [(feedback, arrival time)]
        self._pending: OrderedDict[str, list[tuple[FeedbackEvent, float]]] = OrderedDict()
        self._seen_ids: deque[str] = deque()
        self._seen_set: set[str] = set()

    # -- feeding --------------------------------------------------------------------------------

    def add_request(self, request: RequestEvent, *, now: float, partition: int = 0, offset: int = -1) -> JoinResult:
        """Hold ``request``; release any feedback that was waiting for it (and is still in the window)."""
        result = JoinResult([], [], self.expire(now))  # first: what is past the window joins nothing
        self._requests[request.request_id] = (request, partition, offset, now)
        self._requests.move_to_end(request.request_id)
        for feedback, _ in self._pending.pop(request.request_id, []):
            self._join(request, feedback, result)
        self._evict_requests(now)  # the count cap, now that one more is held
        return result

    def add_feedback(self, feedback: FeedbackEvent, *, now: float) -> JoinResult:
        """Join ``feedback`` now, hold it until its request comes, or drop it as a duplicate."""
        result = JoinResult([], [], self.expire(now))  # first: a request past the window joins nothing
        if feedback.event_id in self._seen_set or any(
            f.event_id == feedback.event_id for f, _ in self._pending.get(feedback.request_id, [])
        ):
            result.duplicates.append(feedback)
            return result
        held = self._requests.get(feedback.request_id)
        if held is not None:
            self._join(held[0], feedback, result)
        else:
            self._pending.setdefault(feedback.request_id, []).append((feedback, now))
        return result

    def expire(self, now: float) -> list[FeedbackEvent]:
        """Drop requests past the window; return feedback that waited too long for its request."""
        self._evict_requests(now)
        expired: list[FeedbackEvent] = []
        for request_id in list(self._pending):
            waiting = self._pending[request_id]
            keep = [(f, t) for f, t in waiting if t >= now - self.max_age_s]
            expired += [f for f, t in waiting if t < now - self.max_age_s]
            if keep:
                self._pending[request_id] = keep
            else:
                del self._pending[request_id]
        return expired

    def _evict_requests(self, now: float) -> None:
        """Drop the oldest requests while more than ``max_requests`` are held or they are past ``max_age_s``."""
        while self._requests and (
            len(self._requests) > self.max_requests or next(iter(self._requests.values()))[3] < now - self.max_age_s
        ):
            self._requests.popitem(last=False)

    def _join(self, request: RequestEvent, feedback: FeedbackEvent, result: JoinResult) -> None:
        if feedback.event_id in self._seen_set:
            result.duplicates.append(feedback)
            return
        self._seen_ids.append(feedback.event_id)
        self._seen_set.add(feedback.event_id)
        while len(self._seen_ids) > self.dedupe_window:
            self._seen_set.discard(self._seen_ids.popleft())
        result.joined.append((request, feedback))

    # -- resuming -------------------------------------------------------------------------------

    @property
    def n_requests(self) -> int:
        return len(self._requests)

    @property
    def n_pending(self) -> int:
        return sum(len(v) for v in self._pending.values())

    def request_resume_offsets(self, positions: dict[int, int]) -> dict[int, int]:
        """Per partition, where a restarted reader must re-read requests from to rebuild the window.

        Args:
            positions: the reader's next offset per requests partition.
        """
        out = dict(positions)
        for _, partition, offset, _ in self._requests.values():
            if offset >= 0 and partition in out:
                out[partition] = min(out[partition], offset)
        return out

    def state_dict(self) -> dict[str, Any]:
        """Pending feedback and recent ids, as plain data (the request window is re-read instead)."""
        return {
            "pending": [[f.model_dump_json(), t] for waiting in self._pending.values() for f, t in waiting],
            "seen_ids": list(self._seen_ids),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending.clear()
        for raw, t in state.get("pending", []):
            feedback = FeedbackEvent.model_validate_json(raw)
            self._pending.setdefault(feedback.request_id, []).append((feedback, float(t)))
        self._seen_ids = deque(state.get("seen_ids", []))
        self._seen_set = set(self._seen_ids)
