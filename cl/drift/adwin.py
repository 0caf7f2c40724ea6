"""ADWIN: an adaptive sliding window that drops its stale part on a change."""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from cl.drift._checks import STATE_FORMAT, check_state_header, check_value, is_int, is_number

Bucket = tuple[float, float]  # (sum of the values, sum of squared deviations from their mean)


class ADWIN:
    """ADaptive WINdowing drift detector (Bifet & Gavaldà, 2007).

    ADWIN keeps a window of the most recent values and shrinks it whenever two
    sub-windows, an older ``W0`` and a newer ``W1``, have means that differ by
    more than chance allows. The window is stored as an exponential histogram:
    row ``i`` holds up to ``max_buckets`` buckets of ``2**i`` values each (their
    sum and variance), so memory and the cost of a check grow with ``log(width)``.
    Every ``clock`` updates, once the window is longer than ``grace_period``,
    every bucket boundary is tried as the split; a split is a cut when

    ``|mean(W0) - mean(W1)| > sqrt(2 / m * var * ln(2 / d)) + 2 / (3 m) * ln(2 / d)``

    with ``var`` the window's variance, ``d = delta / ln(width)`` and
    ``1/m = 1/(n0 - L + 1) + 1/(n1 - L + 1)`` for sub-window lengths ``n0, n1``
    (both at least ``L = min_window_length``): the Bernstein-type bound of the
    paper's practical version. On a cut the oldest bucket is dropped and the check
    repeats until no split is a cut. It detects increases and decreases alike.

    Args:
        delta: Confidence; smaller means fewer false alarms and later detections.
        clock: Check for a cut every ``clock`` updates.
        max_buckets: Buckets kept per row before the two oldest are merged.
        min_window_length: Shortest sub-window a cut may leave on either side.
        grace_period: No checks until the window is longer than this.

    Example:
        An error stream whose error rate jumps from 0.2 to 0.6 at step 1000. The
        first cut comes 87 steps after the change; while the window sheds the
        old concept a bucket at a time, later checks cut again, so a learner
        that wants one alarm per change should ``reset()`` after acting on one.

        >>> import numpy as np
        >>> from cl.drift import ADWIN
        >>> rng = np.random.default_rng(42)
        >>> errors = np.concatenate([rng.random(1000) < 0.2, rng.random(1000) < 0.6])
        >>> adwin = ADWIN()
        >>> detections = []
        >>> for t, err in enumerate(errors):
        ...     adwin.update(float(err))
        ...     if adwin.drift_detected:
        ...         detections.append(t)
        >>> detections
        [1087, 1119, 1183, 1343]
        >>> adwin.width, round(adwin.estimation, 2)
        (1008, 0.59)
    """

    kind = "adwin"

    def __init__(
        self,
        delta: float = 0.002,
        clock: int = 32,
        max_buckets: int = 5,
        min_window_length: int = 5,
        grace_period: int = 10,
    ) -> None:
        problems = []
        if not is_number(delta) or not 0 < delta < 1:
            problems.append(f"delta must be in (0, 1), got {delta!r}")
        for name, value, low in [
            ("clock", clock, 1),
            ("max_buckets", max_buckets, 1),
            ("min_window_length", min_window_length, 1),
            ("grace_period", grace_period, 0),
        ]:
            if not is_int(value) or value < low:
                problems.append(f"{name} must be an integer >= {low}, got {value!r}")
        if problems:
            raise ValueError("; ".join(problems))
        self.delta = delta
        self.clock = clock
        self.max_buckets = max_buckets
        self.min_window_length = min_window_length
        self.grace_period = grace_period
        self._n_detections = 0
        self.reset()

    # ---- the public face ------------------------------------------------------------

    @property
    def drift_detected(self) -> bool:
        """Whether the latest ``update`` cut the window."""
        return self._drift_detected

    @property
    def n_detections(self) -> int:
        """How many drifts were detected since construction."""
        return self._n_detections

    @property
    def width(self) -> int:
        """How many values the window holds."""
        return self._width

    @property
    def estimation(self) -> float:
        """Mean of the values in the window (0.0 when empty)."""
        return self._total / self._width if self._width else 0.0

    @property
    def variance(self) -> float:
        """Variance of the values in the window (0.0 when empty)."""
        return self._variance / self._width if self._width else 0.0

    def update(self, x: float) -> None:
        """Add ``x`` to the window and, every ``clock`` updates, look for a cut.

        Raises:
            ValueError: If ``x`` is not a finite number.
        """
        x = check_value(x)
        self._drift_detected = False
        self._insert(x)
        self._tick += 1
        if self._tick % self.clock == 0 and self._width > self.grace_period:
            cut = False
            while self._find_cut():
                self._drop_oldest_bucket()
                cut = True
            if cut:
                self._drift_detected = True
                self._n_detections += 1

    def reset(self) -> None:
        """Empty the window; ``n_detections`` is kept."""
        self._rows: list[deque[Bucket]] = [deque()]  # row i: buckets of 2**i values, oldest first
        self._width = 0
        self._total = 0.0
        self._variance = 0.0  # sum of squared deviations from the window mean
        self._tick = 0
        self._drift_detected = False

    def state_dict(self) -> dict[str, Any]:
        """The window and counters as plain, JSON-serialisable values."""
        return {
            "kind": self.kind,
            "format": STATE_FORMAT,
            "config": self._config(),
            "rows": [[[t, v] for t, v in row] for row in self._rows],
            "width": self._width,
            "total": self._total,
            "variance": self._variance,
            "tick": self._tick,
            "drift_detected": self._drift_detected,
            "n_detections": self._n_detections,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict`` taken from an ``ADWIN`` with the same arguments.

        Raises:
            ValueError: If the state comes from another detector or configuration.
        """
        check_state_header(state, self.kind, self._config())
        rows = [deque((float(t), float(v)) for t, v in row) for row in state["rows"]] or [deque()]
        width = int(state["width"])
        if sum(len(row) << i for i, row in enumerate(rows)) != width:
            raise ValueError(f"inconsistent state: buckets do not add up to width {width}")
        self._rows = rows
        self._width = width
        self._total = float(state["total"])
        self._variance = float(state["variance"])
        self._tick = int(state["tick"])
        self._drift_detected = bool(state["drift_detected"])
        self._n_detections = int(state["n_detections"])

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"ADWIN({args})"

    # ---- internals ------------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        return {
            "delta": self.delta,
            "clock": self.clock,
            "max_buckets": self.max_buckets,
            "min_window_length": self.min_window_length,
            "grace_period": self.grace_period,
        }

    def _insert(self, x: float) -> None:
        self._width += 1
        if self._width > 1:  # Welford: grow the squared deviations by the new value's share
            previous_mean = self._total / (self._width - 1)
            self._variance += (self._width - 1) * (x - previous_mean) ** 2 / self._width
        self._total += x
        self._rows[0].append((x, 0.0))
        i = 0
        while i < len(self._rows) and len(self._rows[i]) > self.max_buckets:
            (t1, v1), (t2, v2) = self._rows[i].popleft(), self._rows[i].popleft()
            size = 1 << i  # both buckets hold 2**i values
            merged = (t1 + t2, v1 + v2 + (t1 - t2) ** 2 / (2 * size))
            if i + 1 == len(self._rows):
                self._rows.append(deque())
            self._rows[i + 1].append(merged)
            i += 1

    def _find_cut(self) -> bool:
        """Whether some split of the window into older W0 and newer W1 is a cut."""
        n = self._width
        low = self.min_window_length
        if n < 2 * low:
            return False
        var = self._variance / n
        log_term = math.log(2.0 * math.log(n) / self.delta)  # ln(2 / d), d = delta / ln(n)
        n0, s0 = 0, 0.0
        for i in range(len(self._rows) - 1, -1, -1):  # oldest rows first
            size = 1 << i
            for total, _ in self._rows[i]:  # oldest bucket of the row first
                n0 += size
                s0 += total
                n1 = n - n0
                if n1 < low:
                    return False  # later splits only make W1 shorter
                if n0 < low:
                    continue
                m_inv = 1.0 / (n0 - low + 1) + 1.0 / (n1 - low + 1)
                epsilon = math.sqrt(2.0 * m_inv * var * log_term) + 2.0 / 3.0 * m_inv * log_term
                if abs(s0 / n0 - (self._total - s0) / n1) > epsilon:
                    return True
        return False

    def _drop_oldest_bucket(self) -> None:
        i = len(self._rows) - 1
        total, var = self._rows[i].popleft()
        size = 1 << i
        rest = self._width - size
        if rest > 0:  # remove the bucket's share of the squared deviations
            gap = total / size - (self._total - total) / rest
            self._variance = max(self._variance - var - size * rest * gap**2 / (size + rest), 0.0)
            self._total -= total
        else:
            self._variance, self._total = 0.0, 0.0
        self._width = rest
        while len(self._rows) > 1 and not self._rows[-1]:
            self._rows.pop()
