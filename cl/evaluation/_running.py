"""What every protocol's run loop shares: a throttled progress line and a torch thread count.

>>> lines = []
>>> p = Progress(lines.append, "demo", every_s=0.0)
>>> p.tick(lambda: "half way")
>>> lines
['[demo] half way']
>>> with torch_threads(1):
...     torch.get_num_threads()
1
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

__all__ = ["Progress", "TORCH_THREADS", "torch_threads"]

TORCH_THREADS = 1  # the tiny model's matmuls: a second thread only adds spin-waiting on 2 cores


class Progress:
    """Says ``[name] <line>`` through ``say`` at most every ``every_s`` seconds."""

    def __init__(self, say: Callable[[str], None], name: str, every_s: float = 5.0) -> None:
        self.say, self.name, self.every_s, self._last = say, name, every_s, time.monotonic()

    def tick(self, line: Callable[[], str]) -> None:
        """``line`` is only built when it will be said."""
        if time.monotonic() - self._last >= self.every_s:
            self._last = time.monotonic()
            self.say(f"[{self.name}] {line()}")


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads, then give the caller's count back."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
