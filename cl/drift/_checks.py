"""Argument and state checks shared by the detectors (internal)."""

from __future__ import annotations

import math
from typing import Any

STATE_FORMAT = 1


def check_value(x: Any) -> float:
    """Return ``x`` as a float; raise naming the value unless it is a finite number."""
    try:
        value = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"drift detectors take finite numbers, got {x!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"drift detectors take finite numbers, got {x!r}; drop or clip it before update()")
    return value


def is_number(x: Any) -> bool:
    """Whether ``x`` is a real int or float (bools excluded)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def is_int(x: Any) -> bool:
    """Whether ``x`` is an int (bools excluded)."""
    return isinstance(x, int) and not isinstance(x, bool)


def check_state_header(state: dict[str, Any], kind: str, config: dict[str, Any]) -> None:
    """Raise unless ``state`` was taken from a ``kind`` detector with ``config``."""
    if state.get("kind") != kind:
        raise ValueError(f"state is for a {state.get('kind')!r} detector, not {kind!r}")
    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"unsupported state format {state.get('format')!r}; expected {STATE_FORMAT}")
    theirs = state.get("config", {})
    diff = [
        f"{k}: state has {theirs.get(k)!r}, detector has {config.get(k)!r}"
        for k in sorted(set(config) | set(theirs))
        if theirs.get(k) != config.get(k)
    ]
    if diff:
        raise ValueError(f"state was taken from a differently configured detector ({', '.join(diff)})")
