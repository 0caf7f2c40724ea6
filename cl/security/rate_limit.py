"""Per-key token buckets: a sustained rate with a burst on top, for ``429 Too Many Requests``.

Example:
    >>> limiter = RateLimiter(rate_per_s=1.0, burst=2)
    >>> [limiter.take("k", now=0.0) for _ in range(3)]
    [0.0, 0.0, 1.0]
    >>> limiter.take("k", now=1.0)
    0.0
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["RateLimiter"]


class RateLimiter:
    """``take(key)`` spends one token of ``key``'s bucket, refilled at ``rate_per_s`` up to ``burst``.

    Args:
        rate_per_s: Tokens added per second (the sustained rate allowed).
        burst: Bucket size (how many may come at once).
        max_keys: Buckets kept (least recently used dropped first: a dropped key starts full).
    """

    def __init__(self, rate_per_s: float, burst: int, max_keys: int = 100_000) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError(f"rate_per_s must be > 0 and burst >= 1; got {rate_per_s} and {burst}")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def take(self, key: str, now: float) -> float:
        """0.0 if ``key`` may go now (a token is spent), else the seconds until it may."""
        tokens, at = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate_per_s)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate_per_s
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait
