"""Reading the Ray metrics agent's Prometheus text in tests: poll until the series you expect appear."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

Sample = tuple[str, dict[str, str], float]  # (name, labels, value)


def scrape(url: str, prefix: str = "ray_cl_") -> list[Sample]:
    """Every sample whose name starts with ``prefix``."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith(prefix)
    ]


def total(samples: list[Sample], name: str, **labels: str) -> float:
    """Sum of ``name``'s samples whose labels include ``labels``."""
    return sum(v for n, got, v in samples if n == name and all(got.get(k) == want for k, want in labels.items()))


def wait_for(url: str, ready: Callable[[list[Sample]], bool], timeout_s: float = 90.0) -> list[Sample]:
    """Scrape every second until ``ready(samples)``; Ray exports every few seconds."""
    deadline = time.monotonic() + timeout_s
    samples: list[Sample] = []
    while time.monotonic() < deadline:
        try:
            samples = scrape(url)
        except OSError:
            samples = []
        if ready(samples):
            return samples
        time.sleep(1.0)
    names = sorted({n for n, _, _ in samples})  # ours only: ray_cl_*
    raise AssertionError(
        f"the metrics at {url} did not show what was expected in {timeout_s:g} s; ray_cl_ series: {names}"
    )
