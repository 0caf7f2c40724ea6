"""The checks every feedback joiner passes: it pairs feedback with the request it rates.

The service's joiner is ``streams.join.FeedbackJoiner``; ``cl`` may not import ``streams``, so
the checks hold a joiner only to the :class:`Joiner` protocol below and take a factory.

A joiner is restarted without storing its request window: ``state_dict()`` keeps pending
feedback and recent event ids, and ``request_resume_offsets()`` says where to re-read requests
from to rebuild the window. The restart check does exactly that, re-reading the requests in
their original order at their original times, and expects the joiner to go on as if it had
never stopped, and the re-read to release nothing a second time.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol, runtime_checkable

import numpy as np

from cl.events import FeedbackEvent, RequestEvent
from cl.testing.checks._common import (
    Check,
    Subject,
    as_subject,
    assert_same,
    json_round_trip,
    missing_members,
    pickle_round_trip,
    run_checks,
    scribble,
    wall_clock_elsewhere,
)

__all__ = [
    "JOINER_CHECKS",
    "Arrival",
    "JoinOutcome",
    "Joiner",
    "check_joiner",
    "drive_joiner",
    "make_join_stream",
    "reader_positions",
]


class JoinOutcome(Protocol):
    """What one call of a joiner produced."""

    joined: list[tuple[RequestEvent, FeedbackEvent]]
    duplicates: list[FeedbackEvent]
    unjoined: list[FeedbackEvent]


@runtime_checkable
class Joiner(Protocol):
    """A bounded window of requests that feedback is joined to, exactly once per feedback ``event_id``.

    Time is the caller's (``now``); requests come with the partition and offset they were read
    at, so that ``request_resume_offsets`` can say where to re-read them after a restart.
    """

    @property
    def n_requests(self) -> int: ...

    @property
    def n_pending(self) -> int: ...

    def add_request(self, request: RequestEvent, *, now: float, partition: int = 0, offset: int = -1) -> JoinOutcome:
        """Hold ``request``; join the feedback that waited for it."""
        ...

    def add_feedback(self, feedback: FeedbackEvent, *, now: float) -> JoinOutcome:
        """Join ``feedback``, hold it until its request comes, or drop it as a duplicate."""
        ...

    def expire(self, now: float) -> list[FeedbackEvent]:
        """Drop requests past the window; return the feedback that waited too long."""
        ...

    def request_resume_offsets(self, positions: dict[int, int]) -> dict[int, int]:
        """Per partition, where to re-read requests from to rebuild the window."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


# ---- the check stream ------------------------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    """One event as a reader hands it over: when, and (for requests) from where."""

    now: float
    event: RequestEvent | FeedbackEvent
    partition: int = 0
    offset: int = -1

    @property
    def is_request(self) -> bool:
        return isinstance(self.event, RequestEvent)


def make_join_stream(n_requests: int = 300, seed: int = 7) -> list[Arrival]:
    """Requests on two partitions (a burst in the middle) and their feedback, in arrival order.

    Most feedback comes within 10 s of its request, some before it, some 25-70 s late; some is
    sent twice (the same ``event_id``), some requests are rated twice, and some feedback
    names a request that never comes. Suits a window of ~20 s and ~50 requests.
    """
    gen = np.random.default_rng(seed)
    timed: list[tuple[float, int, RequestEvent | FeedbackEvent]] = []
    t = 0.0
    for i in range(n_requests):
        t += float(gen.exponential(0.05 if n_requests // 3 <= i < n_requests // 2 else 1.0))
        rid = f"r{i}"
        request = RequestEvent(
            request_id=rid,
            kind="predict",
            input={"features": [float(i % 7), 1.0]},
            output={"label": i % 3},
            model_version="base",
            arm="champion",
            ts=t,
            event_id=f"req-{i}",
        )
        timed.append((t, len(timed), request))
        if gen.random() < 0.85:
            u = gen.random()
            delay = -gen.uniform(0, 8) if u < 0.15 else gen.uniform(0, 10) if u < 0.75 else gen.uniform(25, 70)
            at = max(0.0, t + float(delay))
            feedback = FeedbackEvent(request_id=rid, label=int(gen.integers(3)), ts=at, event_id=f"fb-{i}")
            timed.append((at, len(timed), feedback))
            if gen.random() < 0.15:  # sent again
                timed.append((at + float(gen.uniform(0, 30)), len(timed), feedback))
        if gen.random() < 0.1:  # rated twice
            at = t + float(gen.uniform(0, 5))
            timed.append((at, len(timed), FeedbackEvent(request_id=rid, thumbs="up", ts=at, event_id=f"fb2-{i}")))
        if i % 25 == 0:  # for a request that never comes
            timed.append((t, len(timed), FeedbackEvent(request_id=f"ghost-{i}", rating=4, ts=t, event_id=f"g-{i}")))
    timed.sort(key=lambda x: (x[0], x[1]))
    out, next_offset = [], {0: 0, 1: 0}
    for now, _, event in timed:
        if isinstance(event, RequestEvent):
            partition = int(event.request_id[1:]) % 2
            out.append(Arrival(now, event, partition, next_offset[partition]))
            next_offset[partition] += 1
        else:
            out.append(Arrival(now, event))
    return out


def reader_positions(arrivals: list[Arrival]) -> dict[int, int]:
    """The reader's next offset per requests partition after ``arrivals``."""
    positions = {0: 0, 1: 0}
    for a in arrivals:
        if a.is_request:
            positions[a.partition] = max(positions[a.partition], a.offset + 1)
    return positions


def _ids(events: list[FeedbackEvent]) -> list[str]:
    return [f.event_id for f in events]


def drive_joiner(joiner: Any, arrivals: list[Arrival]) -> list:
    """Feed ``arrivals``; the trace is, per call, what it joined, dropped and released, and the sizes."""
    trace: list = []
    for a in arrivals:
        if a.is_request:
            result = joiner.add_request(a.event, now=a.now, partition=a.partition, offset=a.offset)
        else:
            result = joiner.add_feedback(a.event, now=a.now)
        trace.append(
            (
                a.event.event_id,
                [(r.event_id, f.event_id) for r, f in result.joined],
                _ids(result.duplicates),
                _ids(result.unjoined),
                joiner.n_requests,
                joiner.n_pending,
            )
        )
    return trace


def _halves() -> tuple[list[Arrival], list[Arrival]]:
    stream = make_join_stream()
    return stream[: len(stream) // 2], stream[len(stream) // 2 :]


def _released(trace: list) -> tuple[int, int, int]:
    """How many (joined, duplicates, unjoined) a trace holds."""
    return tuple(sum(len(step[k]) for step in trace) for k in (1, 2, 3))  # type: ignore[return-value]


# ---- the checks ----------------------------------------------------------------------------


def implements_the_protocol(subject: Subject) -> None:
    joiner = subject.make(0)
    assert isinstance(joiner, Joiner), f"{type(joiner).__name__} lacks {missing_members(joiner, Joiner)}"


def drives_observable_behaviour(subject: Subject) -> None:
    """Guard for the other checks: the stream must join, drop and release, and a restart must re-read."""
    first, second = _halves()
    joiner = subject.make(0)
    joined, duplicates, unjoined = _released(drive_joiner(joiner, first))
    assert joiner.n_pending and joiner.n_requests, (
        f"at the snapshot point it holds {joiner.n_requests} requests and {joiner.n_pending} pending feedback; "
        "build it with a window of ~20 s and ~50 requests so the restart checks have something to restore"
    )
    positions = reader_positions(first)
    resume = joiner.request_resume_offsets(dict(positions))
    assert any(resume[p] < positions[p] for p in positions), "resuming would re-read no request"
    more = _released(drive_joiner(joiner, second) + [("end", [], [], joiner.expire(1e9), 0, 0)])
    joined, duplicates, unjoined = joined + more[0], duplicates + more[1], unjoined + more[2]
    assert joined and duplicates and unjoined, (
        f"the check stream gave {joined} joined, {duplicates} duplicates, {unjoined} unjoined; "
        "all three should happen (a window of ~20 s and ~50 requests suits it)"
    )


def restart_from_state_and_resume_offsets_continues_identically(subject: Subject) -> None:
    first, second = _halves()
    original = subject.make(0)
    drive_joiner(original, first)
    positions = reader_positions(first)
    resume = original.request_resume_offsets(dict(positions))
    state = json_round_trip(original.state_dict(), "state_dict()")
    restored = subject.make(0)
    restored.load_state_dict(state)
    reread = [a for a in first if a.is_request and a.offset >= resume.get(a.partition, positions[a.partition])]
    again = _released(drive_joiner(restored, reread))
    assert again == (0, 0, 0), (
        f"re-reading {len(reread)} requests from the resume offsets {resume} released feedback a second time "
        f"(joined, duplicates, unjoined = {again})"
    )
    sizes = (restored.n_requests, restored.n_pending)
    assert sizes == (original.n_requests, original.n_pending), (
        f"after the restart it holds (requests, pending) {sizes}, before it {(original.n_requests, original.n_pending)}"
    )
    assert_same(restored.state_dict(), original.state_dict(), "the restarted joiner's state_dict() differs")
    a, b = drive_joiner(original, second), drive_joiner(restored, second)
    assert_same(b, a, "after a restart (state through JSON, requests re-read) it joins differently")
    assert_same(restored.expire(1e9), original.expire(1e9), "at the end it releases different feedback")


def pickle_round_trip_continues_identically(subject: Subject) -> None:
    first, second = _halves()
    original = subject.make(0)
    drive_joiner(original, first)
    clone = pickle_round_trip(original)
    assert_same(clone.state_dict(), original.state_dict(), "the unpickled copy's state_dict() differs")
    assert_same(drive_joiner(clone, second), drive_joiner(original, second), "the unpickled copy joins differently")


def same_inputs_same_result(subject: Subject) -> None:
    stream = make_join_stream()
    a, b = drive_joiner(subject.make(0), stream), drive_joiner(subject.make(0), stream)
    assert_same(b, a, "two joiners fed the same events at the same times join differently")


def time_comes_only_from_now(subject: Subject) -> None:
    stream = make_join_stream()
    a = drive_joiner(subject.make(0), stream)
    with wall_clock_elsewhere():
        b = drive_joiner(subject.make(0), stream)
    assert_same(b, a, "with the wall clock elsewhere (same `now`s) it joins differently: it reads the wall clock")


def inputs_are_not_mutated(subject: Subject) -> None:
    stream = make_join_stream()
    before = [a.event.model_dump() for a in stream]
    joiner = subject.make(0)
    drive_joiner(joiner, stream[: len(stream) // 2])
    positions = reader_positions(stream)
    given = dict(positions)
    joiner.request_resume_offsets(given)
    assert given == positions, f"request_resume_offsets() changed the positions it was given: {given}"
    state = joiner.state_dict()
    kept = copy.deepcopy(state)
    other = subject.make(0)
    other.load_state_dict(state)
    drive_joiner(other, stream[len(stream) // 2 :])
    other.expire(1e9)
    assert_same(state, kept, "load_state_dict() kept the state it was given, and later calls changed it")
    drive_joiner(joiner, stream[len(stream) // 2 :])
    after = [a.event.model_dump() for a in stream]
    changed = [a.event.event_id for a, x, y in zip(stream, before, after) if x != y]
    assert not changed, f"joining changed the events it was given: {changed[:5]}"


def state_dict_does_not_alias_internal_state(subject: Subject) -> None:
    first, _ = _halves()
    joiner = subject.make(0)
    drive_joiner(joiner, first)
    reference = copy.deepcopy(joiner.state_dict())
    scribble(joiner.state_dict())
    assert_same(joiner.state_dict(), reference, "emptying the lists of state_dict() changed the joiner")


def every_feedback_is_accounted_for_once(subject: Subject) -> None:
    stream = make_join_stream()
    joiner = subject.make(0)
    trace = drive_joiner(joiner, stream)
    pending = joiner.n_pending
    trace.append(("end", [], [], _ids(joiner.expire(1e9)), joiner.n_requests, joiner.n_pending))
    fed = sum(not a.is_request for a in stream)
    joined, duplicates, unjoined = _released(trace)
    assert joined + duplicates + unjoined == fed, (
        f"{fed} feedback events went in; {joined} joined + {duplicates} duplicates + {unjoined} unjoined came out"
    )
    assert len(trace[-1][3]) == pending and joiner.n_pending == 0, (
        f"expire() far in the future released {len(trace[-1][3])} of {pending} pending feedback "
        f"and left {joiner.n_pending}"
    )
    twice = [i for i, n in Counter(f for step in trace for _, f in step[1]).items() if n > 1]
    assert not twice, f"feedback joined more than once: {twice[:5]}"
    requests = {a.event.event_id: a.event.request_id for a in stream if a.is_request}
    feedback = {a.event.event_id: a.event.request_id for a in stream if not a.is_request}
    wrong = [(r, f) for step in trace for r, f in step[1] if requests[r] != feedback[f]]
    assert not wrong, f"feedback joined to another request: {wrong[:5]}"


def expiring_early_changes_no_join(subject: Subject) -> None:
    """The window is a matter of the times alone, not of how often ``expire()`` happens to be called."""

    def run(early: bool) -> tuple[set, list[str]]:
        joiner, joined, unjoined = subject.make(0), set(), []
        for a in make_join_stream():
            if early:  # as a learner's poll loop does between records
                unjoined += _ids(joiner.expire(a.now))
            step = drive_joiner(joiner, [a])[0]
            joined |= set(step[1])
            unjoined += step[3]
        return joined, sorted(unjoined + _ids(joiner.expire(1e9)))

    (joined, unjoined), (joined_early, unjoined_early) = run(False), run(True)
    assert joined == joined_early and unjoined == unjoined_early, (
        "calling expire(now) before each add changes the outcome: joined only without it "
        f"{sorted(joined - joined_early)[:5]}, only with it {sorted(joined_early - joined)[:5]} "
        "(does an add join before it expires what is past the window?)"
    )


def resume_offsets_never_pass_the_reader(subject: Subject) -> None:
    positions = {0: 5, 1: 0, 7: 3}
    fresh = subject.make(0).request_resume_offsets(dict(positions))
    assert fresh == positions, f"an empty joiner moved the resume positions {positions} to {fresh}"
    joiner = subject.make(0)
    stream = make_join_stream()
    for k in range(0, len(stream), 50):
        drive_joiner(joiner, stream[k : k + 50])
        reached = {**reader_positions(stream[: k + 50]), 7: 3}
        resume = joiner.request_resume_offsets(dict(reached))
        assert set(resume) == set(reached), f"resume offsets {resume} are not for the partitions {sorted(reached)}"
        bad = {p: o for p, o in resume.items() if not 0 <= o <= reached[p]}
        assert not bad, f"resume offsets {bad} lie beyond what the reader reached ({reached})"
        assert resume[7] == 3, "a partition the joiner holds nothing from moved"


JOINER_CHECKS: dict[str, Check] = {
    check.__name__: check
    for check in (
        implements_the_protocol,
        drives_observable_behaviour,
        restart_from_state_and_resume_offsets_continues_identically,
        pickle_round_trip_continues_identically,
        same_inputs_same_result,
        time_comes_only_from_now,
        inputs_are_not_mutated,
        state_dict_does_not_alias_internal_state,
        every_feedback_is_accounted_for_once,
        expiring_early_changes_no_join,
        resume_offsets_never_pass_the_reader,
    )
}


def check_joiner(
    factory: Callable[[int], Joiner] | Subject, *, name: str | None = None, only: Iterable[str] | None = None
) -> None:
    """Run every joiner check on the joiners ``factory`` builds.

    Args:
        factory: ``factory(seed)`` returns a fresh joiner (the seed may be ignored) with a window
            of ~20 s and ~50 requests and a dedupe window of a few hundred ids or more, e.g.
            ``lambda seed: FeedbackJoiner(max_requests=50, max_age_s=20.0)``; or a :class:`Subject`.
        name: How failures name it (default: the class it builds). A :class:`Subject` brings
            its own name and ``uses_seed``.
        only: Run just these checks (names from :data:`JOINER_CHECKS`).

    Raises:
        AssertionError: Naming every check that failed, and why.
    """
    subject = as_subject(factory, name=name, uses_seed=False)
    run_checks("joiner", JOINER_CHECKS, subject, only)
