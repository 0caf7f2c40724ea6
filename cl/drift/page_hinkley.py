"""Page-Hinkley test: a cumulative-sum alarm for a shift in the mean."""

from __future__ import annotations

from typing import Any

from cl.drift._checks import STATE_FORMAT, check_state_header, check_value, is_int, is_number

MODES = ("up", "down", "both")


class PageHinkley:
    """Page-Hinkley test for a change in the mean of a stream (Page, 1954).

    It accumulates each value's deviation from the running mean, less a tolerance
    ``delta``, in a sum that fades by ``alpha`` per step:

    ``S_t = alpha * S_{t-1} + (x_t - mean_t - delta)``

    and alarms when ``S_t`` has climbed more than ``threshold`` above its lowest
    point so far (mode ``"up"``: the mean rose). Mode ``"down"`` mirrors this with
    ``+ delta`` and a fall below the highest point; ``"both"`` watches both ways.
    No alarm is raised before ``min_instances`` values. After an alarm the
    statistics restart from scratch, so the next update begins a fresh test.

    The default mode is ``"up"`` because this service feeds it an *error* stream,
    where only a rise means the model got worse; :class:`~cl.drift.ADWIN` flags both.

    Args:
        min_instances: Values needed before an alarm can be raised.
        delta: Tolerated drift of the mean per step; larger is less sensitive.
        threshold: How far the sum must climb to raise an alarm (``lambda``).
        alpha: Fading factor in ``(0, 1]``; ``1`` means no fading.
        mode: ``"up"``, ``"down"`` or ``"both"``.

    Example:
        An error stream whose error rate jumps from 0.2 to 0.6 at step 1000
        (a lower ``threshold``, e.g. 25, alarms sooner, here at step 1066):

        >>> import numpy as np
        >>> from cl.drift import PageHinkley
        >>> rng = np.random.default_rng(42)
        >>> errors = np.concatenate([rng.random(1000) < 0.2, rng.random(1000) < 0.6])
        >>> ph = PageHinkley()
        >>> for t, err in enumerate(errors):
        ...     ph.update(float(err))
        ...     if ph.drift_detected:
        ...         print(f"drift at step {t}")
        drift at step 1155
    """

    kind = "page_hinkley"

    def __init__(
        self,
        min_instances: int = 30,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 1 - 0.0001,
        mode: str = "up",
    ) -> None:
        problems = []
        if not is_int(min_instances) or min_instances < 1:
            problems.append(f"min_instances must be an integer >= 1, got {min_instances!r}")
        if not is_number(delta) or delta < 0:
            problems.append(f"delta must be a finite number >= 0, got {delta!r}")
        if not is_number(threshold) or threshold <= 0:
            problems.append(f"threshold must be a finite number > 0, got {threshold!r}")
        if not is_number(alpha) or not 0 < alpha <= 1:
            problems.append(f"alpha must be in (0, 1], got {alpha!r}")
        if mode not in MODES:
            problems.append(f"mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
        if problems:
            raise ValueError("; ".join(problems))
        self.min_instances = min_instances
        self.delta = delta
        self.threshold = threshold
        self.alpha = alpha
        self.mode = mode
        self._n_detections = 0
        self.reset()

    @property
    def drift_detected(self) -> bool:
        """Whether the latest ``update`` raised an alarm."""
        return self._drift_detected

    @property
    def n_detections(self) -> int:
        """How many drifts were detected since construction."""
        return self._n_detections

    def update(self, x: float) -> None:
        """Feed one value; raise an alarm if the sum climbed past ``threshold``.

        Raises:
            ValueError: If ``x`` is not a finite number.
        """
        x = check_value(x)
        self._drift_detected = False
        self._n += 1
        self._mean += (x - self._mean) / self._n
        deviation = x - self._mean
        self._sum_up = self.alpha * self._sum_up + deviation - self.delta
        self._min_up = min(self._min_up, self._sum_up)
        self._sum_down = self.alpha * self._sum_down + deviation + self.delta
        self._max_down = max(self._max_down, self._sum_down)
        if self._n < self.min_instances:
            return
        rose = self.mode != "down" and self._sum_up - self._min_up > self.threshold
        fell = self.mode != "up" and self._max_down - self._sum_down > self.threshold
        if rose or fell:
            self.reset()
            self._drift_detected = True
            self._n_detections += 1

    def reset(self) -> None:
        """Restart the test; ``n_detections`` is kept."""
        self._n = 0
        self._mean = 0.0
        self._sum_up = 0.0
        self._min_up = 0.0
        self._sum_down = 0.0
        self._max_down = 0.0
        self._drift_detected = False

    def state_dict(self) -> dict[str, Any]:
        """The running sums and counters as plain, JSON-serialisable values."""
        return {
            "kind": self.kind,
            "format": STATE_FORMAT,
            "config": self._config(),
            "n": self._n,
            "mean": self._mean,
            "sum_up": self._sum_up,
            "min_up": self._min_up,
            "sum_down": self._sum_down,
            "max_down": self._max_down,
            "drift_detected": self._drift_detected,
            "n_detections": self._n_detections,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict`` taken from a ``PageHinkley`` with the same arguments.

        Raises:
            ValueError: If the state comes from another detector or configuration.
        """
        check_state_header(state, self.kind, self._config())
        self._n = int(state["n"])
        self._mean = float(state["mean"])
        self._sum_up = float(state["sum_up"])
        self._min_up = float(state["min_up"])
        self._sum_down = float(state["sum_down"])
        self._max_down = float(state["max_down"])
        self._drift_detected = bool(state["drift_detected"])
        self._n_detections = int(state["n_detections"])

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"PageHinkley({args})"

    def _config(self) -> dict[str, Any]:
        return {
            "min_instances": self.min_instances,
            "delta": self.delta,
            "threshold": self.threshold,
            "alpha": self.alpha,
            "mode": self.mode,
        }
