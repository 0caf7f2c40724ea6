"""Which protocols ``cl eval`` runs, and running them into a report folder.

Protocols are imported only when run, so ``cl eval --only digits`` does not load River.
"""

from __future__ import annotations

import importlib
import inspect
import time
from collections.abc import Callable
from pathlib import Path

from cl.config import Config
from cl.evaluation._stream_features import FeedFactory
from cl.evaluation.report import write_index, write_report
from cl.evaluation.result import ProtocolResult

__all__ = ["PROTOCOLS", "run_protocol", "run_suite"]

PROTOCOLS: dict[str, str] = {
    "digits": "cl.evaluation.digits",  # split and permuted digits: accuracy matrix, BWT, forgetting
    "drifting_streams": "cl.evaluation.drifting_streams",  # River's SEA, Agrawal, Hyperplane through Kafka vs ARF, HAT
    "detector_calibration": "cl.evaluation.detector_calibration",  # delay, misses, false alarms vs River's detectors
    "language_feedback": "cl.evaluation.language_feedback",  # tiny LM, rule-based judge: SFT vs RWL vs KTO (+ replay)
}


def check_names(names: list[str]) -> list[str]:
    """The names, each checked against :data:`PROTOCOLS`.

    >>> check_names(["digits"])
    ['digits']
    >>> check_names(["digit"])
    Traceback (most recent call last):
    ...
    ValueError: unknown protocol 'digit'; choose from digits, drifting_streams, detector_calibration, language_feedback
    """
    for name in names:
        if name not in PROTOCOLS:
            raise ValueError(f"unknown protocol {name!r}; choose from {', '.join(PROTOCOLS)}")
    return names


def run_protocol(
    name: str, *, quick: bool, config: Config | None, say: Callable[[str], None], feeds: FeedFactory | None = None
) -> ProtocolResult:
    """Run one protocol; those that go through Kafka also take the config and the feed factory."""
    run = importlib.import_module(PROTOCOLS[check_names([name])[0]]).run
    kwargs: dict = {"quick": quick, "say": say}
    if "feeds" in inspect.signature(run).parameters:
        if feeds is None or config is None:
            raise ValueError(f"protocol {name!r} goes through Kafka: pass config= and feeds= (cl eval does)")
        kwargs.update(config=config, feeds=feeds)
    return run(**kwargs)


def run_suite(
    names: list[str],
    *,
    quick: bool,
    out: Path,
    config: Config | None = None,
    say: Callable[[str], None] = print,
    feeds: FeedFactory | None = None,
) -> list[ProtocolResult]:
    """Run each protocol, write its report into ``out`` as soon as it is done, then the index."""
    results = []
    for name in check_names(names):
        started = time.monotonic()
        say(f"eval: {name} ({'quick' if quick else 'full'}) ...")
        result = run_protocol(
            name, quick=quick, config=config, feeds=feeds, say=lambda line, n=name: say(f"  {n}: {line}")
        )
        path = write_report(result, out)
        goals = "; ".join(f"{g.name} {g.value:.3f} ({'met' if g.met else 'not met'})" for g in result.goals)
        say(f"eval: {name} done in {time.monotonic() - started:.0f} s -> {path}" + (f"; {goals}" if goals else ""))
        results.append(result)
    write_index(out)
    return results
