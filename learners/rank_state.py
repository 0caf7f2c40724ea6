"""One snapshot for many learner ranks: merge their parts, and hand each restarted rank its share.

A snapshot's learner state is ``{"base_version", "world_size", "ranks": [part, ...]}``,
one part per rank: ``{"learner": OnlineLearner.state_dict(), "joiner": ..., "positions": ..., "guard": ...}``
(``guard``, the rank's :class:`cl.learning.feedback_guard.FeedbackGuard` state, is missing from
snapshots written before the guard existed; those resume with a fresh guard).
The adapter, optimizer and detector are the same in every part (the ranks step together);
replay buffers, join state, counters and Kafka positions are each rank's own.

A restart may have another number of ranks than the snapshot. Then positions are merged (a
feedback partition's from the rank that read it, a request partition's the earliest any
rank still needed), rank 0 takes every rank's pending feedback and counters, and every rank
remembers every rank's seen event ids, so nothing is lost or applied twice. Every rank takes
the guards' merged knowledge of users (quarantines included); rank 0 their counters.

Example:
    >>> merge_positions([{"fb:0": 5, "req:0": 9}, {"fb:1": 7, "req:0": 4}])
    {'fb:0': 5, 'fb:1': 7, 'req:0': 4}
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from cl.learning.feedback_guard import FeedbackGuard

__all__ = ["COUNTERS", "merge_metrics", "merge_positions", "rank_parts", "share_for_rank"]

# Learner counters that belong to one rank's events and add up across ranks.
COUNTERS = (
    "events_seen",
    "events_rejected",
    "label_events",
    "label_correct",
    "preference_events",
    "preference_positive",
)


def merge_positions(parts: Sequence[Mapping[str, int]]) -> dict[str, int]:
    """Per ``"topic:partition"``, the smallest position any rank resumes from."""
    out: dict[str, int] = {}
    for positions in parts:
        for key, offset in positions.items():
            out[key] = min(offset, out.get(key, offset))
    return dict(sorted(out.items()))


def rank_parts(state: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The per-rank parts of a snapshot's learner state (one-rank snapshots of old had no list)."""
    if "ranks" in state:
        return list(state["ranks"])
    return [{name: state[name] for name in ("learner", "joiner", "positions", "guard") if name in state}]


def share_for_rank(parts: Sequence[Mapping[str, Any]], rank: int, world_size: int) -> dict[str, Any]:
    """What rank ``rank`` of ``world_size`` resumes from.

    Args:
        parts: The snapshot's parts (:func:`rank_parts`).
        rank, world_size: The restarted rank and how many there are now.

    Returns:
        ``{"learner", "joiner", "positions", "guard"}``: the rank's own part if the world size
        is unchanged; otherwise as the module docstring says. ``guard`` is missing (or None)
        for snapshots written before the guard.
    """
    if len(parts) == world_size:
        return copy.deepcopy(dict(parts[rank]))
    learner = copy.deepcopy(parts[rank % len(parts)]["learner"])
    stats = learner["stats"]
    for name in COUNTERS:
        stats[name] = sum(int(p["learner"]["stats"].get(name, 0)) for p in parts) if rank == 0 else 0
    seen = list(dict.fromkeys(i for p in parts for i in p["joiner"].get("seen_ids", [])))
    pending = [entry for p in parts for entry in p["joiner"].get("pending", [])] if rank == 0 else []
    guard = FeedbackGuard.merge_states([p.get("guard") for p in parts])
    if rank != 0:
        guard["counts"] = {}
    return {
        "learner": learner,
        "joiner": {"pending": pending, "seen_ids": seen},
        "positions": merge_positions([p["positions"] for p in parts]),
        "guard": guard,
    }


def merge_metrics(metrics: Sequence[Mapping[str, float]], stats: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """One set of metrics for all ranks: counts summed, ratios recomputed from the summed counts.

    Args:
        metrics: Each rank's ``OnlineLearner.metrics()``, rank 0 first.
        stats: Each rank's ``state_dict()["stats"]``, same order.
    """
    total = {name: sum(int(s.get(name, 0)) for s in stats) for name in COUNTERS}

    def ratio(num: str, den: str) -> float:
        return total[num] / total[den] if total[den] else float("nan")

    # Rates and the loss are rank 0's: the ranks share the error stream, lr and drift counts.
    return {
        **metrics[0],
        "events_seen": float(total["events_seen"]),
        "events_rejected": float(total["events_rejected"]),
        "prequential_accuracy": ratio("label_correct", "label_events"),
        "positive_rate": ratio("preference_positive", "preference_events"),
        "replay_size": float(sum(m.get("replay_size", 0.0) for m in metrics)),
    }
