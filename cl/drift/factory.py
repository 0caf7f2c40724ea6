"""Build a drift detector from its configured name."""

from __future__ import annotations

import inspect
from typing import Any

from cl.drift.adwin import ADWIN
from cl.drift.base import DriftDetector
from cl.drift.page_hinkley import PageHinkley

DRIFT_DETECTORS: dict[str, type] = {
    "adwin": ADWIN,
    "page_hinkley": PageHinkley,
}


def make_drift_detector(kind: str, **kwargs: Any) -> DriftDetector:
    """Build the drift detector called ``kind``.

    Args:
        kind: ``"adwin"`` or ``"page_hinkley"``; case and ``-``/``_`` do not matter.
        **kwargs: Constructor arguments of that detector.

    Returns:
        A fresh detector.

    Raises:
        ValueError: If ``kind`` is unknown or does not take one of ``kwargs``; the
            message lists what is valid.

    Example:
        >>> from cl.drift import make_drift_detector
        >>> make_drift_detector("Page-Hinkley", threshold=25.0)
        PageHinkley(min_instances=30, delta=0.005, threshold=25.0, alpha=0.9999, mode='up')
        >>> make_drift_detector("adwin", clok=16)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: drift detector 'adwin' does not take 'clok'; it accepts: 'delta', 'clock', ...
    """
    key = str(kind).strip().lower().replace("-", "_")
    cls = DRIFT_DETECTORS.get(key)
    if cls is None:
        valid = ", ".join(map(repr, DRIFT_DETECTORS))
        raise ValueError(f"unknown drift detector kind {kind!r}; valid kinds: {valid}")
    accepted = list(inspect.signature(cls).parameters)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"drift detector {key!r} does not take {', '.join(map(repr, unknown))}; "
            f"it accepts: {', '.join(map(repr, accepted))}"
        )
    return cls(**kwargs)
