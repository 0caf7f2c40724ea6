"""Merging learner ranks' snapshot parts and splitting them again (pure logic)."""

from __future__ import annotations

import math

from learners.rank_state import merge_metrics, merge_positions, rank_parts, share_for_rank


def _part(rank: int, events: int, correct: int, positions: dict[str, int], pending: list, seen: list[str]) -> dict:
    stats = {
        "events_seen": events,
        "events_rejected": 0,
        "label_events": events,
        "label_correct": correct,
        "preference_events": 0,
        "preference_positive": 0,
        "lr": 0.01,
    }
    return {
        "learner": {"stats": stats, "adapter": {"w": rank}},
        "joiner": {"pending": pending, "seen_ids": seen},
        "positions": positions,
    }


PARTS = [
    _part(0, 10, 5, {"fb:0": 4, "req:0": 9, "req:1": 3}, [["a", 1.0]], ["e1", "e2"]),
    _part(1, 30, 27, {"fb:1": 8, "req:0": 6, "req:1": 5}, [["b", 2.0]], ["e2", "e3"]),
]


def test_positions_take_the_earliest_any_rank_needs():
    assert merge_positions([p["positions"] for p in PARTS]) == {"fb:0": 4, "fb:1": 8, "req:0": 6, "req:1": 3}


def test_same_world_size_gets_its_own_part():
    share = share_for_rank(PARTS, 1, 2)
    assert share == PARTS[1] and share is not PARTS[1]


def test_fewer_ranks_take_every_counter_pending_feedback_and_seen_id():
    share = share_for_rank(PARTS, 0, 1)
    assert share["learner"]["stats"]["events_seen"] == 40
    assert share["learner"]["stats"]["label_correct"] == 32
    assert share["joiner"]["pending"] == [["a", 1.0], ["b", 2.0]]
    assert share["joiner"]["seen_ids"] == ["e1", "e2", "e3"]
    assert share["positions"] == {"fb:0": 4, "fb:1": 8, "req:0": 6, "req:1": 3}
    assert PARTS[0]["learner"]["stats"]["events_seen"] == 10  # inputs untouched


def test_more_ranks_leave_counters_and_pending_to_rank_zero():
    shares = [share_for_rank(PARTS, r, 3) for r in range(3)]
    assert [s["learner"]["stats"]["events_seen"] for s in shares] == [40, 0, 0]
    assert [len(s["joiner"]["pending"]) for s in shares] == [2, 0, 0]
    assert all(s["joiner"]["seen_ids"] == ["e1", "e2", "e3"] for s in shares)


def test_a_one_rank_snapshot_of_the_old_format_is_one_part():
    old = {"base_version": "b", "learner": {"x": 1}, "joiner": {}, "positions": {"fb:0": 1}}
    assert rank_parts(old) == [{"learner": {"x": 1}, "joiner": {}, "positions": {"fb:0": 1}}]


def test_metrics_recompute_ratios_from_summed_counts():
    metrics = [
        {"events_seen": 10.0, "prequential_accuracy": 0.5, "replay_size": 10.0, "lr": 0.01},
        {"events_seen": 30.0, "prequential_accuracy": 0.9, "replay_size": 30.0, "lr": 0.01},
    ]
    merged = merge_metrics(metrics, [p["learner"]["stats"] for p in PARTS])
    assert merged["events_seen"] == 40.0 and merged["replay_size"] == 40.0
    assert merged["prequential_accuracy"] == 32 / 40 and math.isnan(merged["positive_rate"])
