"""When the online learner steps, snapshots and stops: the rules, apart from the wiring.

:class:`learners.feedback_loop.FeedbackLoop` polls Kafka, learns and publishes; this object
only decides. It reads no clock: every call takes the time (seconds on the loop's monotonic
clock), so each rule can be tested by moving time by hand. With several ranks, each rank
sends its :class:`RankStatus` to all, and every rank decides from the same list, so all take
the same steps and snapshots (the collectives line up).

The rules:

* **step** when some rank's micro-batch is ready: ``batch_size`` examples, or its oldest has
  waited ``max_wait_s``. Every rank steps then (with what it has), as often as the rank with
  the most waiting needs in micro-batches of ``max_batch_size``.
* **snapshot** when examples are unpublished and ``snapshot_every_events`` of them have been
  learned, or ``snapshot_every_s`` has passed since the last snapshot (the timer starts at
  the first snapshot), or drift was detected in this poll, or the loop is stopping; never
  while a rank still holds examples it has not learned, never with nothing new, and not
  before ``retry_at`` after a failed try (backoff doubling from 1 s to ``retry_max_s``).
* **stop** at ``max_events`` events applied, after ``idle_exit_s`` with nothing read, or at
  ``max_runtime_s``; only with nothing waiting, and only once every learned example is published.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from cl.config import LearnerConfig

__all__ = ["LoopLimits", "LoopSchedule", "PollDecision", "RankStatus", "SnapshotReason"]

SnapshotReason = Literal["drift", "final", "periodic"]


@dataclass(frozen=True)
class LoopLimits:
    """When a loop stops by itself (None: never). Tests and demos bound it; a service does not."""

    max_events: int | None = None  # stop once this many events have been applied in total
    idle_exit_s: float | None = None  # stop after this long with nothing new to read
    max_runtime_s: float | None = None


@dataclass(frozen=True)
class RankStatus:
    """What one rank tells the others once per poll; every decision is taken from all of them."""

    pending: int  # examples waiting in its micro-batch
    ready: bool  # its micro-batch is full or has waited max_wait_s
    events: int  # events it has applied so far
    idle_s: float  # seconds since it last read anything
    clock_s: float  # seconds since the loop started (rank 0's paces the timed snapshots)


@dataclass(frozen=True)
class PollDecision:
    """What the ranks do at the end of a poll, after their steps."""

    snapshot: SnapshotReason | None  # take a snapshot, for this reason (None: not now)
    stopping: bool  # a limit is reached: publish what is left, then stop


class LoopSchedule:
    """The step, snapshot and stop rules of one learner rank (see the module docstring).

    Args:
        batch_size: Examples that make a micro-batch ready.
        max_wait_s: How long a partial micro-batch waits before it is ready anyway.
        max_batch_size: The most examples one step takes; a backlog is learned in several.
        snapshot_every_events: Learned, unpublished examples that make a snapshot due.
        snapshot_every_s: Seconds after the last snapshot that make one due.
        limits: When to stop.
        start: The loop's clock when it starts.
        retry_max_s: Longest wait between tries of a snapshot the registry refused.

    Example (one rank; times are seconds on the loop's clock):
        >>> s = LoopSchedule(batch_size=4, max_wait_s=0.5, max_batch_size=8, snapshot_every_events=10,
        ...                  snapshot_every_s=2.0, limits=LoopLimits(idle_exit_s=5.0), start=0.0)
        >>> ranks = [s.status(pending=3, events=0, now=0.1, read=True)]  # 3 of 4: not ready yet
        >>> ranks[0].ready, s.steps(ranks)
        (False, 0)
        >>> ranks = [s.status(pending=3, events=0, now=0.7, read=False)]  # waited 0.6 s > max_wait_s
        >>> ranks[0].ready, s.steps(ranks)
        (True, 1)
        >>> s.decide(ranks, events_applied=3, drift=False)  # 3 of 10 events, the timer not started
        PollDecision(snapshot=None, stopping=False)
        >>> s.decide(ranks, events_applied=3, drift=True)  # drift snapshots at once
        PollDecision(snapshot='drift', stopping=False)
        >>> s.snapshot_published(clock=0.7)  # no failed tries before it
        0
        >>> ranks = [s.status(pending=0, events=3, now=6.0, read=False)]  # nothing read for 5.9 s
        >>> decision = s.decide(ranks, events_applied=3, drift=False)  # stop; nothing left to publish
        >>> decision, s.can_exit(decision)
        (PollDecision(snapshot=None, stopping=True), True)
    """

    def __init__(
        self,
        *,
        batch_size: int,
        max_wait_s: float,
        max_batch_size: int,
        snapshot_every_events: int,
        snapshot_every_s: float,
        limits: LoopLimits = LoopLimits(),
        start: float,
        retry_max_s: float = 30.0,
    ) -> None:
        if batch_size < 1 or max_batch_size < batch_size:
            raise ValueError(
                f"batch_size={batch_size}, max_batch_size={max_batch_size}: "
                "batch_size must be >= 1 and max_batch_size >= batch_size"
            )
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self.max_batch_size = max_batch_size
        self.snapshot_every_events = snapshot_every_events
        self.snapshot_every_s = snapshot_every_s
        self.limits = limits
        self.retry_max_s = retry_max_s
        self._start = start
        self._last_read = start
        self._batch_since: float | None = None  # when this rank's micro-batch got its first example
        self._last_snapshot: float | None = None  # the clock of the last snapshot; None before the first
        self._retry_at = 0.0  # a snapshot the registry refused is not tried again before this
        self.failures = 0  # snapshot tries that failed in a row
        self.unpublished = 0  # examples learned (by all ranks) since the last snapshot

    @classmethod
    def from_config(
        cls, learner: LearnerConfig, limits: LoopLimits, *, start: float, retry_max_s: float = 30.0
    ) -> LoopSchedule:
        """The schedule a ``[learner]`` section asks for, within ``limits``."""
        return cls(
            batch_size=learner.batch_size,
            max_wait_s=learner.max_wait_s,
            max_batch_size=learner.max_batch_size,
            snapshot_every_events=learner.snapshot_every_events,
            snapshot_every_s=learner.snapshot_every_s,
            limits=limits,
            start=start,
            retry_max_s=retry_max_s,
        )

    # -- this rank --------------------------------------------------------------------------

    def status(self, *, pending: int, events: int, now: float, read: bool) -> RankStatus:
        """This rank's status for this poll, to send to every rank.

        Args:
            pending: Examples in its micro-batch.
            events: Events it has applied so far.
            now: The loop's clock.
            read: Whether this poll read anything.
        """
        if read:
            self._last_read = now
        if pending and self._batch_since is None:
            self._batch_since = now
        waited = now - self._batch_since if self._batch_since is not None else 0.0
        ready = bool(pending) and (pending >= self.batch_size or waited >= self.max_wait_s)
        return RankStatus(pending, ready, events, now - self._last_read, now - self._start)

    # -- every rank alike, from every rank's status ------------------------------------------

    def steps(self, ranks: Sequence[RankStatus]) -> int:
        """How many micro-batch steps every rank takes now (0: none is ready); the ranks' batches
        then count as learned, and each rank starts a new micro-batch."""
        if not any(r.ready for r in ranks):
            return 0
        self._batch_since = None
        self.unpublished += sum(r.pending for r in ranks)
        return max(-(-r.pending // self.max_batch_size) for r in ranks)

    def decide(self, ranks: Sequence[RankStatus], *, events_applied: int, drift: bool) -> PollDecision:
        """Whether to snapshot and whether a limit is reached, after this poll's steps.

        Args:
            ranks: Every rank's status of this poll (the list :meth:`steps` saw).
            events_applied: Events applied by all ranks, counting this poll's steps.
            drift: Whether this poll's steps detected drift.
        """
        waiting = any(r.pending for r in ranks) and not any(r.ready for r in ranks)
        clock = ranks[0].clock_s
        limits = self.limits
        done = limits.max_events is not None and events_applied >= limits.max_events
        idle = limits.idle_exit_s is not None and min(r.idle_s for r in ranks) >= limits.idle_exit_s
        overtime = limits.max_runtime_s is not None and clock >= limits.max_runtime_s
        stopping = (done or idle or overtime) and not waiting
        timed = self._last_snapshot is not None and clock - self._last_snapshot >= self.snapshot_every_s
        due = self.unpublished >= self.snapshot_every_events or (self.unpublished > 0 and timed)
        snapshot: SnapshotReason | None = None
        if (due or drift or (stopping and self.unpublished)) and not waiting and clock >= self._retry_at:
            snapshot = "drift" if drift else "final" if stopping else "periodic"
        return PollDecision(snapshot, stopping)

    def snapshot_published(self, clock: float) -> int:
        """A snapshot was registered at ``clock``: everything learned is published, the timer
        restarts. Returns how many tries had failed before it."""
        failed = self.failures
        self.unpublished, self._last_snapshot, self._retry_at, self.failures = 0, clock, 0.0, 0
        return failed

    def snapshot_failed(self, clock: float) -> float:
        """The registry refused a snapshot at ``clock``; returns the seconds until the next try
        (1, 2, 4, ... up to ``retry_max_s``). Learning goes on meanwhile."""
        self.failures += 1
        delay = min(self.retry_max_s, 2.0 ** (self.failures - 1))
        self._retry_at = clock + delay
        return delay

    def can_exit(self, decision: PollDecision) -> bool:
        """Whether the loop may stop now: a limit is reached and nothing learned is unpublished
        (with unpublished examples, it keeps trying to publish them)."""
        return decision.stopping and not self.unpublished
