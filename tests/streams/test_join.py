"""FeedbackJoiner: feedback meets its request in a bounded window, once per event id, and survives a restart.

Pure logic, real events from ``cl.events``, no Kafka. The generic joiner contract (restart,
determinism, inputs untouched) runs in ``tests/testing/test_checks.py``; these are the
joiner's own promises, one at a time.
"""

from __future__ import annotations

import json

from cl.events import FeedbackEvent, RequestEvent
from streams.join import FeedbackJoiner, JoinResult


def request(request_id: str, ts: float = 0.0) -> RequestEvent:
    return RequestEvent(
        request_id=request_id,
        kind="predict",
        input={"features": [1.0, 2.0]},
        output={"label": 0},
        model_version="base",
        arm="champion",
        ts=ts,
        event_id=f"req-{request_id}",
    )


def feedback(request_id: str, event_id: str | None = None, *, label: int = 1, ts: float = 0.0) -> FeedbackEvent:
    return FeedbackEvent(request_id=request_id, label=label, ts=ts, event_id=event_id or f"fb-{request_id}")


def pairs(result: JoinResult) -> list[tuple[str, str]]:
    return [(r.request_id, f.event_id) for r, f in result.joined]


def ids(events: list[FeedbackEvent]) -> list[str]:
    return [f.event_id for f in events]


# ---- joining ---------------------------------------------------------------------------------


def test_feedback_after_its_request_joins_at_once():
    j = FeedbackJoiner(max_requests=10, max_age_s=60)
    req, fb = request("r1"), feedback("r1")
    assert pairs(j.add_request(req, now=0.0)) == []
    result = j.add_feedback(fb, now=1.0)
    assert result.joined == [(req, fb)]  # the very objects that were passed in
    assert result.duplicates == [] and result.unjoined == []
    assert j.n_pending == 0 and j.n_requests == 1  # the request stays: more feedback may come


def test_feedback_before_its_request_waits_and_joins_when_it_comes():
    j = FeedbackJoiner(max_requests=10, max_age_s=60)
    assert pairs(j.add_feedback(feedback("r1"), now=0.0)) == []
    assert j.n_pending == 1
    assert pairs(j.add_request(request("r2"), now=1.0)) == []  # another request releases nothing
    assert pairs(j.add_request(request("r1"), now=2.0)) == [("r1", "fb-r1")]
    assert j.n_pending == 0


def test_every_waiting_feedback_joins_in_arrival_order():
    j = FeedbackJoiner(max_requests=10, max_age_s=60)
    j.add_feedback(feedback("r1", "b", label=2), now=0.0)
    j.add_feedback(feedback("r1", "a", label=3), now=1.0)
    assert pairs(j.add_request(request("r1"), now=2.0)) == [("r1", "b"), ("r1", "a")]
    assert pairs(j.add_feedback(feedback("r1", "c"), now=3.0)) == [("r1", "c")]  # a third rating, later


# ---- the bounded window ------------------------------------------------------------------------


def test_the_window_holds_at_most_max_requests_evicting_the_oldest():
    j = FeedbackJoiner(max_requests=3, max_age_s=600)
    for i in range(5):
        j.add_request(request(f"r{i}"), now=float(i))
    assert j.n_requests == 3
    assert pairs(j.add_feedback(feedback("r1"), now=5.0)) == []  # evicted: it waits, as for a late request
    assert j.n_pending == 1
    assert pairs(j.add_feedback(feedback("r2"), now=5.0)) == [("r2", "fb-r2")]


def test_a_request_is_kept_for_max_age_s_and_no_longer():
    j = FeedbackJoiner(max_requests=100, max_age_s=10)
    j.add_request(request("r1"), now=0.0)
    j.add_request(request("r2"), now=0.0)
    assert pairs(j.add_feedback(feedback("r1"), now=10.0)) == [("r1", "fb-r1")]  # exactly max_age_s old
    j.expire(10.5)  # as the learner's poll loop does
    assert pairs(j.add_feedback(feedback("r2"), now=10.5)) == []  # past it: the feedback waits
    assert j.n_requests == 0 and j.n_pending == 1


# The window is judged before anything joins: the outcome depends on the times alone, not on
# whether an expire() happened to run in between (the check suite found the opposite order).
def test_a_request_past_max_age_s_joins_nothing_even_without_an_expire_call():
    j = FeedbackJoiner(max_requests=100, max_age_s=10)
    j.add_request(request("r1"), now=0.0)
    assert pairs(j.add_feedback(feedback("r1"), now=30.0)) == []  # r1 is 30 s old


def test_expire_drops_old_requests_without_a_feedback_or_request_to_trigger_it():
    j = FeedbackJoiner(max_requests=100, max_age_s=10)
    j.add_request(request("r1"), now=0.0)
    j.add_request(request("r2"), now=5.0)
    assert j.expire(12.0) == []
    assert j.n_requests == 1  # r1 went, r2 is 7 s old


# ---- unjoined feedback -------------------------------------------------------------------------


def test_feedback_waits_max_age_s_for_its_request_then_is_released_unjoined():
    j = FeedbackJoiner(max_requests=100, max_age_s=10)
    fb = feedback("never")
    j.add_feedback(fb, now=0.0)
    assert j.expire(10.0) == [] and j.n_pending == 1  # exactly max_age_s: still waiting
    assert j.expire(10.5) == [fb]
    assert j.n_pending == 0
    assert j.expire(20.0) == []  # released once


def test_unjoined_feedback_comes_back_from_whichever_call_expires_it():
    j = FeedbackJoiner(max_requests=100, max_age_s=10)
    j.add_feedback(feedback("a"), now=0.0)
    j.add_feedback(feedback("b"), now=4.0)
    result = j.add_request(request("c"), now=11.0)
    assert ids(result.unjoined) == ["fb-a"] and result.joined == []
    result = j.add_feedback(feedback("c"), now=15.0)
    assert pairs(result) == [("c", "fb-c")] and ids(result.unjoined) == ["fb-b"]


def test_a_request_arriving_too_late_finds_its_feedback_gone():
    j = FeedbackJoiner(max_requests=100, max_age_s=10)
    j.add_feedback(feedback("r1"), now=0.0)
    assert ids(j.expire(30.0)) == ["fb-r1"]
    assert j.add_request(request("r1"), now=30.0) == JoinResult([], [], [])


def test_feedback_past_max_age_s_does_not_join_a_late_request_even_without_an_expire_call():
    j = FeedbackJoiner(max_requests=100, max_age_s=10)
    j.add_feedback(feedback("r1"), now=0.0)
    result = j.add_request(request("r1"), now=30.0)  # the feedback waited 30 s
    assert result.joined == [] and ids(result.unjoined) == ["fb-r1"]


# ---- duplicates ----------------------------------------------------------------------------------


def test_the_same_event_id_is_joined_once():
    j = FeedbackJoiner(max_requests=10, max_age_s=60)
    j.add_request(request("r1"), now=0.0)
    fb = feedback("r1", "e1")
    assert pairs(j.add_feedback(fb, now=1.0)) == [("r1", "e1")]
    again = j.add_feedback(fb, now=2.0)
    assert again.joined == [] and again.duplicates == [fb] and again.unjoined == []
    redelivered = FeedbackEvent.model_validate_json(fb.model_dump_json())  # a copy, as Kafka redelivers it
    assert j.add_feedback(redelivered, now=3.0).duplicates == [redelivered]


def test_a_duplicate_of_waiting_feedback_is_dropped_and_one_joins():
    j = FeedbackJoiner(max_requests=10, max_age_s=60)
    j.add_feedback(feedback("r1", "e1"), now=0.0)
    assert ids(j.add_feedback(feedback("r1", "e1"), now=1.0).duplicates) == ["e1"]
    assert j.n_pending == 1
    assert pairs(j.add_request(request("r1"), now=2.0)) == [("r1", "e1")]


def test_only_the_most_recent_dedupe_window_ids_are_remembered():
    j = FeedbackJoiner(max_requests=10, max_age_s=60, dedupe_window=2)
    j.add_request(request("r1"), now=0.0)
    for e in ("e1", "e2", "e3"):
        j.add_feedback(feedback("r1", e), now=1.0)
    assert j.state_dict()["seen_ids"] == ["e2", "e3"]
    assert ids(j.add_feedback(feedback("r1", "e3"), now=2.0).duplicates) == ["e3"]
    assert pairs(j.add_feedback(feedback("r1", "e1"), now=2.0)) == [("r1", "e1")]  # forgotten


# ---- resuming ------------------------------------------------------------------------------------


def test_resume_offsets_point_at_the_oldest_request_held_per_partition():
    j = FeedbackJoiner(max_requests=3, max_age_s=600)
    positions = {0: 20, 1: 9, 2: 4}
    assert j.request_resume_offsets(positions) == positions  # nothing held: resume where the reader is
    j.add_request(request("a"), now=0.0, partition=0, offset=11)
    j.add_request(request("b"), now=1.0, partition=1, offset=7)
    j.add_request(request("c"), now=2.0, partition=0, offset=12)
    j.add_request(request("x"), now=2.5, partition=5, offset=1)  # evicts "a"; partition 5 is not read
    assert j.request_resume_offsets(positions) == {0: 12, 1: 7, 2: 4}
    assert positions == {0: 20, 1: 9, 2: 4}


def test_requests_without_an_offset_do_not_move_the_resume_point():
    j = FeedbackJoiner(max_requests=10, max_age_s=600)
    j.add_request(request("a"), now=0.0)  # offset -1: not read from a partition
    assert j.request_resume_offsets({0: 5}) == {0: 5}


def test_state_holds_pending_feedback_and_recent_ids_not_the_window():
    j = FeedbackJoiner(max_requests=10, max_age_s=60)
    j.add_request(request("r1"), now=0.0)
    j.add_feedback(feedback("r1", "e1"), now=1.0)
    j.add_feedback(feedback("r2", "e2", label=4, ts=1.5), now=2.0)
    state = j.state_dict()
    assert state["seen_ids"] == ["e1"]
    assert [(FeedbackEvent.model_validate_json(raw).event_id, t) for raw, t in state["pending"]] == [("e2", 2.0)]
    assert json.loads(json.dumps(state)) == state
    assert "r1" not in json.dumps(state)  # the request window is re-read, not stored


def test_a_restart_rebuilds_the_window_from_the_resume_offsets_and_keeps_going():
    before = FeedbackJoiner(max_requests=10, max_age_s=60)
    log = [request(f"r{i}", ts=float(i)) for i in range(6)]  # partition 0, offsets 0..5
    for offset, req in enumerate(log):
        before.add_request(req, now=float(offset), partition=0, offset=offset)
    before.add_feedback(feedback("r5", "e5"), now=6.0)
    before.add_feedback(feedback("r9", "e9"), now=6.5)  # its request comes after the restart
    assert before.expire(63.5) == []  # r0..r3 leave the window by age; r4, r5 and the feedback stay
    resume = before.request_resume_offsets({0: 6})
    assert resume == {0: 4}

    after = FeedbackJoiner(max_requests=10, max_age_s=60)
    after.load_state_dict(json.loads(json.dumps(before.state_dict())))
    for offset in range(resume[0], 6):  # what a restarted reader re-reads
        assert after.add_request(log[offset], now=float(offset), partition=0, offset=offset) == JoinResult([], [], [])
    assert (after.n_requests, after.n_pending) == (before.n_requests, before.n_pending) == (2, 1)
    assert ids(after.add_feedback(feedback("r5", "e5"), now=64.0).duplicates) == ["e5"]  # still remembered
    assert pairs(after.add_feedback(feedback("r4", "e4"), now=64.0)) == [("r4", "e4")]  # window rebuilt
    assert pairs(after.add_request(request("r9"), now=65.0)) == [("r9", "e9")]  # pending feedback kept


def test_load_state_dict_replaces_what_was_pending():
    j = FeedbackJoiner(max_requests=10, max_age_s=60)
    j.add_feedback(feedback("old", "e-old"), now=0.0)
    other = FeedbackJoiner(max_requests=10, max_age_s=60)
    other.add_feedback(feedback("new", "e-new"), now=0.0)
    j.load_state_dict(other.state_dict())
    assert j.n_pending == 1
    assert pairs(j.add_request(request("old"), now=1.0)) == []
    assert pairs(j.add_request(request("new"), now=1.0)) == [("new", "e-new")]
