"""LoopSchedule: each step, snapshot and stop rule of the learner loop, with time moved by hand."""

from __future__ import annotations

import pytest

from cl.config import LearnerConfig
from cl.learning.schedule import LoopLimits, LoopSchedule, PollDecision, RankStatus


def schedule(limits: LoopLimits = LoopLimits(), **rules) -> LoopSchedule:
    values = dict(
        batch_size=4, max_wait_s=0.5, max_batch_size=8, snapshot_every_events=10, snapshot_every_s=2.0, start=100.0
    )
    return LoopSchedule(limits=limits, **{**values, **rules})


def poll(s: LoopSchedule, pending: int, now: float, *, read: bool = True, events: int = 0, drift: bool = False):
    """One rank's poll: (steps taken, decision)."""
    ranks = [s.status(pending=pending, events=events, now=now, read=read)]
    steps = s.steps(ranks)
    return steps, s.decide(ranks, events_applied=events, drift=drift)


def status(pending=0, ready=False, events=0, idle_s=0.0, clock_s=0.0) -> RankStatus:
    return RankStatus(pending, ready, events, idle_s, clock_s)


# -- steps -------------------------------------------------------------------------------------


def test_a_full_micro_batch_is_ready_at_once():
    s = schedule()
    assert s.status(pending=4, events=0, now=100.0, read=True).ready


def test_a_partial_micro_batch_waits_max_wait_s_from_its_first_example():
    s = schedule()
    assert not s.status(pending=1, events=0, now=100.1, read=True).ready
    assert not s.status(pending=2, events=0, now=100.5, read=True).ready  # 0.4 s since the first
    assert s.status(pending=2, events=0, now=100.6, read=False).ready


def test_an_empty_batch_is_never_ready():
    s = schedule(max_wait_s=0.0)
    assert not s.status(pending=0, events=0, now=500.0, read=False).ready


def test_after_a_step_the_wait_starts_again_with_the_next_example():
    s = schedule()
    assert poll(s, 2, 100.0)[0] == 0
    assert poll(s, 2, 100.6)[0] == 1  # stepped: the batch is gone
    assert not s.status(pending=1, events=0, now=101.0, read=True).ready  # new batch, first example now
    assert s.status(pending=1, events=0, now=101.5, read=False).ready


def test_every_rank_steps_as_often_as_the_busiest_needs():
    s = schedule()
    ranks = [status(pending=20, ready=True), status(pending=1), status(pending=0)]
    assert s.steps(ranks) == 3  # 20 examples in micro-batches of at most 8
    assert s.unpublished == 21
    assert s.steps([status(pending=3), status(pending=2)]) == 0  # nobody ready: nobody steps
    assert s.unpublished == 21


def test_the_status_tells_idle_time_and_the_loop_clock():
    s = schedule()
    s.status(pending=0, events=5, now=103.0, read=True)
    st = s.status(pending=0, events=5, now=104.5, read=False)
    assert (st.events, st.idle_s, st.clock_s) == (5, 1.5, 4.5)


# -- snapshots ---------------------------------------------------------------------------------


def test_a_snapshot_is_due_after_snapshot_every_events():
    s = schedule()
    assert poll(s, 8, 100.0)[1].snapshot is None  # 8 of 10
    assert poll(s, 4, 100.1)[1].snapshot == "periodic"  # 12 of 10


def test_the_timer_starts_at_the_first_snapshot():
    s = schedule()
    assert poll(s, 4, 100.0)[1].snapshot is None
    assert poll(s, 0, 150.0, read=False)[1].snapshot is None  # 50 s, 4 events: no timed snapshot yet
    s.snapshot_published(clock=50.0)
    assert poll(s, 4, 151.0)[1].snapshot is None  # 1 s after it
    assert poll(s, 0, 152.0, read=False)[1].snapshot == "periodic"  # 2 s after it


def test_a_snapshot_due_on_time_with_no_new_events_is_not_taken():
    s = schedule()
    s.snapshot_published(clock=0.0)
    assert poll(s, 0, 110.0, read=False)[1] == PollDecision(snapshot=None, stopping=False)


def test_drift_forces_a_snapshot_whatever_the_counts():
    s = schedule(snapshot_every_events=1000, snapshot_every_s=3600.0)
    assert poll(s, 4, 100.0, drift=True)[1].snapshot == "drift"


def test_no_snapshot_while_a_rank_holds_examples_it_has_not_learned():
    s = schedule()
    s.unpublished = 50  # well past due
    ranks = [status(pending=0, clock_s=1.0), status(pending=2, clock_s=1.0)]
    assert s.steps(ranks) == 0
    assert s.decide(ranks, events_applied=50, drift=True) == PollDecision(snapshot=None, stopping=False)


def test_a_refused_snapshot_is_retried_with_doubling_backoff_and_learning_goes_on():
    s = schedule(retry_max_s=5.0)
    assert poll(s, 12, 100.0)[1].snapshot == "periodic"
    assert [s.snapshot_failed(clock=t) for t in (0.0, 1.0, 3.0, 7.0, 12.0)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert s.failures == 5
    assert poll(s, 4, 116.9)[1].snapshot is None  # retry at 17.0 on the loop clock
    assert s.unpublished == 16  # still learning, still counting
    assert poll(s, 0, 117.0, read=False)[1].snapshot == "periodic"
    assert s.snapshot_published(clock=17.0) == 5
    assert (s.failures, s.unpublished) == (0, 0)


# -- stopping ----------------------------------------------------------------------------------


def test_max_events_stops_with_a_final_snapshot_of_what_is_left():
    s = schedule(LoopLimits(max_events=4))
    steps, decision = poll(s, 4, 100.0, events=4)
    assert steps == 1 and decision == PollDecision(snapshot="final", stopping=True)
    assert not s.can_exit(decision)  # not before it is published
    s.snapshot_published(clock=0.0)
    assert s.can_exit(decision)


def test_idle_exit_after_idle_exit_s_without_reading():
    s = schedule(LoopLimits(idle_exit_s=3.0))
    poll(s, 0, 100.0)
    assert not poll(s, 0, 102.9, read=False)[1].stopping
    decision = poll(s, 0, 103.0, read=False)[1]
    assert decision == PollDecision(snapshot=None, stopping=True) and s.can_exit(decision)


def test_idle_exit_waits_for_a_partial_batch_to_be_learned_and_published():
    s = schedule(LoopLimits(idle_exit_s=0.2), max_wait_s=0.5)
    poll(s, 1, 100.0)
    assert not poll(s, 1, 100.3, read=False)[1].stopping  # idle, but one example waits
    steps, decision = poll(s, 1, 100.5, read=False)
    assert steps == 1 and decision == PollDecision(snapshot="final", stopping=True)


def test_max_runtime_stops_on_the_loop_clock():
    s = schedule(LoopLimits(max_runtime_s=60.0))
    assert not poll(s, 0, 159.0)[1].stopping
    assert poll(s, 0, 160.0)[1].stopping


def test_a_limit_with_unpublished_events_keeps_trying_to_publish():
    s = schedule(LoopLimits(max_events=4))
    decision = poll(s, 4, 100.0, events=4)[1]
    s.snapshot_failed(clock=0.0)
    assert not s.can_exit(decision)
    assert poll(s, 0, 100.5, events=4, read=False)[1] == PollDecision(snapshot=None, stopping=True)  # backing off
    assert poll(s, 0, 101.0, events=4, read=False)[1] == PollDecision(snapshot="final", stopping=True)


def test_ranks_decide_alike_from_the_same_statuses():
    a, b = schedule(LoopLimits(idle_exit_s=1.0)), schedule(LoopLimits(idle_exit_s=1.0))
    ranks = [status(pending=4, ready=True, idle_s=2.0, clock_s=3.0), status(pending=0, idle_s=0.5, clock_s=2.9)]
    assert a.steps(ranks) == b.steps(ranks) == 1
    # idle only when every rank is idle; the clock is rank 0's
    assert a.decide(ranks, events_applied=4, drift=False) == b.decide(ranks, events_applied=4, drift=False)
    assert not a.decide(ranks, events_applied=4, drift=False).stopping


def test_built_from_the_learner_config():
    lc = LearnerConfig()
    s = LoopSchedule.from_config(lc, LoopLimits(max_events=9), start=0.0)
    assert (s.batch_size, s.max_batch_size, s.snapshot_every_events, s.snapshot_every_s) == (
        lc.batch_size,
        lc.max_batch_size,
        lc.snapshot_every_events,
        lc.snapshot_every_s,
    )
    assert s.limits.max_events == 9


def test_inconsistent_batch_sizes_are_refused():
    with pytest.raises(ValueError, match="max_batch_size"):
        schedule(batch_size=16, max_batch_size=8)
