"""Protocol 3: how fast the drift detectors notice a change, and how often they cry wolf.

Seeded synthetic streams, repeated many times, go one value at a time to each detector:

* **shifting**: a Bernoulli error stream whose rate rises from 0.2 to 0.4, and Gaussian
  streams whose mean moves from 0 to 1 and from 0 to 0.5 (unit variance), each changing
  after ``PRE`` events and running ``POST`` events past the change;
* **stable**: Bernoulli(0.2) and N(0, 1) with no change, ``PRE + POST`` events long.

Detectors: the service's ADWIN and Page-Hinkley exactly as ``make_drift_detector(kind)``
builds them (the learner's defaults), River's ``ADWIN`` and ``PageHinkley`` with River's
defaults, and an always-fire baseline. Every repetition feeds the same values to every
detector, and no detector is reset by the harness (the service's Page-Hinkley and River's
restart themselves after an alarm; ADWIN drops the stale part of its window).

Scores per detector and stream: the **delay** (events from the first post-change event to
the first detection at or after it; 0 means the first changed value raised it), the
**missed** fraction (no detection within ``POST`` events of the change) and **false alarms
per 10,000 events** (on stable streams all detections, on shifting ones those before the
change). The issue names no numeric goal for this protocol, so the result has none.

Entry point: :func:`run`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cl.drift import make_drift_detector
from cl.evaluation.result import Figure, ProtocolResult, Table

__all__ = ["AlwaysFire", "StreamSpec", "STREAMS", "detectors", "run", "score_stream"]

NAME = "detector_calibration"
TITLE = "Drift-detector calibration"
SIZES = {False: {"repetitions": 100, "pre": 5000, "post": 2000}, True: {"repetitions": 20, "pre": 2000, "post": 2000}}
PER = 10_000  # false alarms are counted per this many events


@dataclass(frozen=True)
class StreamSpec:
    """One synthetic stream: ``before`` until the change, ``after`` from it on.

    Attributes:
        name: Short, file-safe name.
        label: How tables and plots name it.
        kind: ``"bernoulli"`` (values 0/1 with rate ``before``/``after``) or ``"gaussian"``
            (unit variance, mean ``before``/``after``).
        before: Rate or mean before the change.
        after: Rate or mean after it; ``None`` for a stable stream.
    """

    name: str
    label: str
    kind: str
    before: float
    after: float | None = None

    @property
    def shifting(self) -> bool:
        return self.after is not None

    def sample(self, rng: np.random.Generator, pre: int, post: int) -> np.ndarray:
        """``(pre + post,)`` values; a shifting stream changes at index ``pre``."""
        n = pre + post
        level = np.full(n, self.before)
        if self.after is not None:
            level[pre:] = self.after
        if self.kind == "bernoulli":
            return (rng.random(n) < level).astype(float)
        return rng.normal(level, 1.0)


STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec("bernoulli_up", "Bernoulli p 0.2→0.4", "bernoulli", 0.2, 0.4),
    StreamSpec("gauss_up1", "Gaussian μ 0→1", "gaussian", 0.0, 1.0),
    StreamSpec("gauss_up05", "Gaussian μ 0→0.5", "gaussian", 0.0, 0.5),
    StreamSpec("bernoulli_stable", "Bernoulli p 0.2 (stable)", "bernoulli", 0.2),
    StreamSpec("gauss_stable", "Gaussian N(0,1) (stable)", "gaussian", 0.0),
)


class AlwaysFire:
    """The trivial baseline: reports a drift after every update (delay 0, every event an alarm).

    Example:
        >>> d = AlwaysFire()
        >>> d.update(0.0); d.drift_detected
        True
    """

    drift_detected = True

    def update(self, x: float) -> None:
        """Ignore ``x``."""


def detectors() -> dict[str, Callable[[], Any]]:
    """Display name -> factory of a fresh detector, in report order."""
    from river import drift as river_drift

    return {
        "ADWIN (ours)": lambda: make_drift_detector("adwin"),
        "Page-Hinkley (ours)": lambda: make_drift_detector("page_hinkley"),
        "ADWIN (River)": river_drift.ADWIN,
        "Page-Hinkley (River)": river_drift.PageHinkley,
        "always fire": AlwaysFire,
    }


def detections(detector: Any, values: np.ndarray) -> np.ndarray:
    """Indices of the values after whose ``update`` the detector reported a drift."""
    hits = []
    update = detector.update
    for t, x in enumerate(values.tolist()):
        update(x)
        if detector.drift_detected:
            hits.append(t)
    return np.asarray(hits, dtype=int)


@dataclass
class StreamScore:
    """One detector on one stream, over all repetitions.

    Attributes:
        delays: Per repetition, events from the change to the first detection at or after
            it, or -1 if none came within the window (shifting streams only).
        false_alarms: Per repetition, detections before the change (shifting) or in the
            whole stream (stable).
        watched: Events over which ``false_alarms`` were counted, per repetition.
    """

    delays: np.ndarray
    false_alarms: np.ndarray
    watched: int

    @property
    def detected(self) -> np.ndarray:
        return self.delays[self.delays >= 0]

    @property
    def missed_fraction(self) -> float:
        return float(np.mean(self.delays < 0)) if len(self.delays) else float("nan")

    @property
    def median_delay(self) -> float:
        return float(np.median(self.detected)) if len(self.detected) else float("nan")

    @property
    def false_alarms_per_10k(self) -> float:
        return float(self.false_alarms.sum()) / (self.watched * len(self.false_alarms)) * PER


def score_stream(
    factory: Callable[[], Any],
    spec: StreamSpec,
    seed: int,
    repetitions: int,
    pre: int,
    post: int,
) -> StreamScore:
    """Run a fresh detector from ``factory`` over ``repetitions`` seeded draws of ``spec``.

    Draw ``r`` of a stream is the same for every detector (it is seeded by ``seed``, the
    stream's place in :data:`STREAMS` and ``r``), so detectors are compared on equal data.

    Example:
        >>> s = score_stream(AlwaysFire, STREAMS[0], seed=0, repetitions=3, pre=100, post=50)
        >>> s.median_delay, s.missed_fraction, s.false_alarms_per_10k
        (0.0, 0.0, 10000.0)
    """
    index = STREAMS.index(spec) if spec in STREAMS else len(STREAMS)
    delays, false_alarms = [], []
    for r in range(repetitions):
        values = spec.sample(np.random.default_rng([seed, index, r]), pre, post)
        hits = detections(factory(), values)
        if spec.shifting:
            after = hits[hits >= pre] - pre
            delays.append(int(after[0]) if len(after) and after[0] < post else -1)
            false_alarms.append(int(np.sum(hits < pre)))
        else:
            false_alarms.append(len(hits))
    return StreamScore(np.asarray(delays, dtype=int), np.asarray(false_alarms), pre if spec.shifting else pre + post)


# ---- report --------------------------------------------------------------------------


def _tables(scores: dict[tuple[str, str], StreamScore], names: list[str], post: int) -> list[Table]:
    shifting = [s for s in STREAMS if s.shifting]
    stable = [s for s in STREAMS if not s.shifting]
    rows = []
    for spec in shifting:
        for name in names:
            s = scores[name, spec.name]
            q1, q3 = np.percentile(s.detected, [25, 75]) if len(s.detected) else (float("nan"),) * 2
            rows.append(
                [spec.label, name, s.median_delay, f"{q1:.0f}–{q3:.0f}", s.missed_fraction, s.false_alarms_per_10k]
            )
    detect = Table(
        f"Shifting streams: delay, misses (no detection within {post:,} events) and false alarms before the change",
        ["stream", "detector", "median delay", "delay IQR", "missed fraction", "false alarms / 10k (before change)"],
        rows,
    )
    stable_rows = [
        [
            spec.label,
            name,
            scores[name, spec.name].false_alarms_per_10k,
            float(np.mean(scores[name, spec.name].false_alarms > 0)),
        ]
        for spec in stable
        for name in names
    ]
    calm = Table(
        "Stable streams: false alarms",
        ["stream", "detector", "false alarms / 10k", "repetitions with any alarm"],
        stable_rows,
    )
    return [detect, calm]


def _tradeoff_figure(scores: dict[tuple[str, str], StreamScore], names: list[str]) -> Figure:
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(7.5, 4.2))
    ax = fig.add_subplot()
    markers = {s.name: m for s, m in zip([s for s in STREAMS if s.shifting], "os^")}
    colors = {name: f"C{i}" for i, name in enumerate(names)}
    stable = [s for s in STREAMS if not s.shifting]
    for spec in (s for s in STREAMS if s.shifting):
        for name in names:
            s = scores[name, spec.name]
            # False alarms on the stable stream of the same kind: the detector's calm-data rate.
            calm = next(c for c in stable if c.kind == spec.kind)
            ax.scatter(
                scores[name, calm.name].false_alarms_per_10k,
                s.median_delay,
                marker=markers[spec.name],
                **_style(name, colors[name]),
            )
    for name in names:
        ax.scatter([], [], marker="o", label=name, **_style(name, colors[name]))
    for spec in (s for s in STREAMS if s.shifting):
        ax.scatter([], [], marker=markers[spec.name], color="grey", label=spec.label)
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("false alarms per 10,000 events on the stable stream of the same kind")
    ax.set_ylabel("median detection delay (events)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return Figure(
        "tradeoff",
        "Median detection delay against false alarms on stable data, "
        "per detector (colour) and shift (marker); lower left is better. River's detectors are the "
        "hollow markers: where one rings a filled marker, River and ours gave the same numbers.",
        fig,
    )


def _style(name: str, color: str) -> dict[str, Any]:
    """Filled markers for ours and the baseline, larger hollow ones for River (so overlaps stay visible)."""
    if "River" in name:
        return {"facecolors": "none", "edgecolors": color, "s": 130, "linewidths": 1.5}
    return {"color": color, "s": 45}


def _delay_figure(scores: dict[tuple[str, str], StreamScore], names: list[str]) -> Figure:
    from matplotlib.figure import Figure as MplFigure

    shifting = [s for s in STREAMS if s.shifting]
    fig = MplFigure(figsize=(4.0 * len(shifting), 4.0))
    axes = fig.subplots(1, len(shifting), sharey=False)
    for ax, spec in zip(np.atleast_1d(axes), shifting):
        data = [scores[name, spec.name].detected for name in names]
        ax.boxplot([d if len(d) else [np.nan] for d in data], showfliers=True)
        ax.set_xticks(range(1, len(names) + 1), [n.replace(" (", "\n(") for n in names], fontsize=7)
        ax.set_title(spec.label, fontsize=9)
        ax.set_ylabel("delay (events)")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    caption = "Detection delays over the repetitions (detected ones only), per shifting stream."
    return Figure("delays", caption, fig)


def run(quick: bool = False, seed: int = 0, say: Callable[[str], None] = print) -> ProtocolResult:
    """Score every detector on every stream over seeded repetitions.

    Args:
        quick: The test-suite size (fewer repetitions, shorter streams) instead of the report's.
        seed: Seeds every stream draw.
        say: Where progress lines go (one per stream).

    Returns:
        The ``detector_calibration`` result: two tables, two figures, no goals.
    """
    size = SIZES[quick]
    reps, pre, post = size["repetitions"], size["pre"], size["post"]
    factories = detectors()
    names = list(factories)
    scores: dict[tuple[str, str], StreamScore] = {}
    start = time.monotonic()
    for spec in STREAMS:
        for name, factory in factories.items():
            scores[name, spec.name] = score_stream(factory, spec, seed, reps, pre, post)
        say(
            f"[{NAME}] {spec.label}: "
            + ", ".join(
                f"{n} "
                + (
                    f"delay {scores[n, spec.name].median_delay:.0f}"
                    if spec.shifting
                    else f"{scores[n, spec.name].false_alarms_per_10k:.1f} FA/10k"
                )
                for n in names
            )
            + f" ({time.monotonic() - start:.0f} s)"
        )
    result = ProtocolResult(NAME, TITLE, quick=quick)
    result.tables += _tables(scores, names, post)
    result.figures += [_tradeoff_figure(scores, names), _delay_figure(scores, names)]
    result.settings = {
        "seed": seed,
        "repetitions": reps,
        "events before the change": pre,
        "events from the change on (also the missed-detection window)": post,
        "stable stream length": pre + post,
        "streams": "; ".join(f"{s.label}" for s in STREAMS),
        "detectors": "; ".join(f"{n}: {_describe(f())}" for n, f in factories.items()),
        "stream seeding": "numpy default_rng([seed, stream index, repetition]); every detector gets the same draws",
    }
    result.summary = _summary(scores, reps, pre, post)
    return result


def _describe(detector: Any) -> str:
    if isinstance(detector, AlwaysFire):
        return "reports a drift after every value"
    return " ".join(repr(detector).split())  # River's repr spans lines


def _summary(scores: dict[tuple[str, str], StreamScore], reps: int, pre: int, post: int) -> str:
    def delay(name: str, stream: str) -> str:
        s = scores[name, stream]
        return f"{s.median_delay:.0f} (missed {s.missed_fraction:.0%})"

    def calm(name: str, stream: str) -> str:
        return f"{scores[name, stream].false_alarms_per_10k:.1f}"

    return (
        f"{reps} seeded repetitions per stream; shifting streams change after {pre:,} events and are "
        f"watched for {post:,} more. On the Bernoulli error-rate rise 0.2→0.4 the service's ADWIN "
        f"detects after a median of {delay('ADWIN (ours)', 'bernoulli_up')} events and its Page-Hinkley "
        f"after {delay('Page-Hinkley (ours)', 'bernoulli_up')}; River's ADWIN after "
        f"{delay('ADWIN (River)', 'bernoulli_up')} and River's Page-Hinkley after "
        f"{delay('Page-Hinkley (River)', 'bernoulli_up')}. False alarms per 10,000 events on the stable "
        f"Bernoulli(0.2) stream: ours ADWIN {calm('ADWIN (ours)', 'bernoulli_stable')}, Page-Hinkley "
        f"{calm('Page-Hinkley (ours)', 'bernoulli_stable')}; River ADWIN {calm('ADWIN (River)', 'bernoulli_stable')}, "
        f"Page-Hinkley {calm('Page-Hinkley (River)', 'bernoulli_stable')}; on stable N(0,1): ours ADWIN "
        f"{calm('ADWIN (ours)', 'gauss_stable')}, Page-Hinkley {calm('Page-Hinkley (ours)', 'gauss_stable')}; "
        f"River ADWIN {calm('ADWIN (River)', 'gauss_stable')}, "
        f"Page-Hinkley {calm('Page-Hinkley (River)', 'gauss_stable')}. "
        "The detectors run with their defaults and are never reset by the harness (the learner itself resets "
        "its detector after acting on a drift, with the default drift_actions). The service's Page-Hinkley "
        "watches rises only (mode 'up', since it reads an error stream) while River's watches both ways; "
        "ADWIN flags rises and falls alike. Always-fire marks the floor for delay and the ceiling for false alarms. "
        + _agreement(scores, "ADWIN")
        + " "
        + _agreement(scores, "Page-Hinkley")
    )


def _agreement(scores: dict[tuple[str, str], StreamScore], family: str) -> str:
    """Whether the service's and River's detector of ``family`` gave the same delays, repetition by repetition."""
    shifting = [s.name for s in STREAMS if s.shifting]
    ours, river = f"{family} (ours)", f"{family} (River)"
    same = sum(int(np.sum(scores[ours, s].delays == scores[river, s].delays)) for s in shifting)
    total = sum(len(scores[ours, s].delays) for s in shifting)
    return f"The service's {family} and River's gave the same delay in {same} of {total} shifting-stream repetitions."
