"""The running service's own learning curve, from its ``cl.events`` history (``cl report``).

Every ``version_published`` carries the learner's metrics at that moment, so the curve needs
nothing but the event log: the served accuracy over the last 200 rated events and the
prequential accuracy, over time, with markers where drift was detected and where versions
were published, promoted or rolled back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from cl.evaluation.result import Figure, ProtocolResult, Table
from cl.events import EventError, LifecycleEvent
from cl.lifecycle import DecisionRecord, DriftDetected, VersionPublished, read_message

__all__ = ["ServiceHistory", "service_report"]

ROLLOUT_MARKERS = {"promoted": ("promoted", "tab:green"), "rolled_back": ("rolled back", "tab:orange")}


@dataclass
class ServiceHistory:
    """What the event log says, as ``(ts, ...)`` rows ordered by time."""

    published: list[tuple[float, str, dict[str, float]]]  # (ts, version, learner metrics)
    drifts: list[tuple[float, int]]  # (ts, events seen)
    rollout: list[tuple[float, str, str, str]]  # (ts, type, version, reason)

    @classmethod
    def from_events(cls, events: Iterable[LifecycleEvent], model_name: str) -> ServiceHistory:
        """Keep the events of ``model_name`` (drift events name no model: all are kept); skip
        announcements that do not read as their type.

        >>> e = [LifecycleEvent(type="version_published", ts=1.0, payload={"version": "1", "model_name": "m",
        ...        "metrics": {"served_error_rate": 0.25}}),
        ...      LifecycleEvent(type="version_published", ts=2.0, payload={"version": "9", "model_name": "other"}),
        ...      LifecycleEvent(type="drift_detected", ts=3.0, payload={"events_seen": 50}),
        ...      LifecycleEvent(type="rolled_back", ts=4.0, payload={"version": "1", "model_name": "m", "reason": "worse"})]
        >>> h = ServiceHistory.from_events(e, "m")
        >>> [v for _, v, _ in h.published], h.drifts, [r[1:] for r in h.rollout]
        (['1'], [(3.0, 50)], [('rolled_back', '1', 'worse')])
        """
        published, drifts, rollout = [], [], []
        for e in events:
            if e.type not in ("version_published", "drift_detected", *ROLLOUT_MARKERS):
                continue
            try:
                m = read_message(e)
            except EventError:
                continue
            if m is None or not m.is_for(model_name):
                continue
            if isinstance(m, VersionPublished):
                metrics = {k: math.nan if v is None else v for k, v in (m.metrics or {}).items()}
                published.append((e.ts, m.version, metrics))
            elif isinstance(m, DriftDetected):
                drifts.append((e.ts, m.events_seen))
            elif isinstance(m, DecisionRecord):
                rollout.append((e.ts, e.type, m.version, m.reason or ""))
        return cls(sorted(published, key=lambda r: r[0]), sorted(drifts), sorted(rollout))


def service_report(history: ServiceHistory, model_name: str) -> ProtocolResult:
    """The curve, its markers and a table of rollout decisions, as a report."""
    from matplotlib.figure import Figure as MplFigure

    result = ProtocolResult("service", f"The running service ({model_name})", quick=False)
    if not history.published:
        result.summary = "No version has been published yet: start the learner (`cl learn`) and send feedback."
        return result
    t0 = history.published[0][0]
    times = [(ts - t0) for ts, _, _ in history.published]
    served = [1.0 - m.get("served_error_rate", math.nan) for _, _, m in history.published]
    prequential = [m.get("prequential_accuracy", math.nan) for _, _, m in history.published]
    fig = MplFigure(figsize=(9, 4))
    ax = fig.add_subplot()
    ax.plot(times, served, label="served accuracy, last 200 rated events", color="tab:blue")
    ax.plot(times, prequential, label="prequential accuracy (cumulative)", color="tab:gray", linestyle="--")
    ax.plot(times, [0.02] * len(times), "|", color="tab:blue", markersize=8, label="version published")
    for i, (ts, _) in enumerate(history.drifts):
        ax.axvline(ts - t0, color="tab:red", linestyle=":", label="drift detected" if i == 0 else None)
    seen = set()
    for ts, kind, _, _ in history.rollout:
        label, color = ROLLOUT_MARKERS[kind]
        ax.axvline(ts - t0, color=color, linewidth=2, label=None if kind in seen else label)
        seen.add(kind)
    ax.set(xlabel="seconds since the first published version", ylabel="accuracy", ylim=(0, 1.02))
    ax.legend(loc="lower right", fontsize=8)
    result.figures.append(
        Figure(
            "curve",
            "Served and prequential accuracy of the learner's versions over time, "
            "with drift detections and rollout decisions.",
            fig,
        )
    )
    last = history.published[-1][2]
    result.tables.append(
        Table(
            "Now",
            [
                "versions published",
                "drift detections",
                "promotions",
                "rollbacks",
                "events learned",
                "served accuracy (last 200)",
            ],
            [
                [
                    len(history.published),
                    len(history.drifts),
                    sum(k == "promoted" for _, k, _, _ in history.rollout),
                    sum(k == "rolled_back" for _, k, _, _ in history.rollout),
                    int(last.get("events_seen", 0)),
                    served[-1],
                ]
            ],
        )
    )
    if history.rollout:
        result.tables.append(
            Table(
                "Rollout decisions",
                ["seconds", "decision", "version", "reason"],
                [[ts - t0, kind, v, reason] for ts, kind, v, reason in history.rollout],
            )
        )
    result.summary = (
        f"From the `{model_name}` events on cl.events: {len(history.published)} versions, "
        f"{len(history.drifts)} drift detections, {len(history.rollout)} promotions or rollbacks."
    )
    return result
