"""Mix replayed examples into a batch of new ones."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from cl.replay.base import ReplayBuffer


def mix_batch(new_examples: Sequence[Any], buffer: ReplayBuffer, ratio: float, rng: np.random.Generator) -> list[Any]:
    """Return the new examples followed by ``round(ratio * len(new_examples))`` replayed ones.

    ``ratio`` is replayed examples per new example: ``1.0`` makes half the batch
    replay. Rounding is half-up (``2.5 -> 3``), not Python's banker's rounding.
    When the buffer holds fewer examples than wanted, all of them are returned
    once (sampling never repeats an example). Nothing is added to the buffer:
    call ``buffer.add`` for the new examples *after* mixing, so a new example is
    never replayed in its own batch. The result is not shuffled.

    Args:
        new_examples: This micro-batch's fresh examples; left unchanged.
        buffer: Where replayed examples come from.
        ratio: Replayed examples per new example, finite and ``>= 0``.
        rng: Generator used to draw from the buffer.

    Returns:
        A new list: ``list(new_examples) + replayed``.

    Raises:
        ValueError: If ``ratio`` is negative or not finite.

    Example:
        >>> import numpy as np
        >>> from cl.replay import ReservoirBuffer, mix_batch
        >>> buf = ReservoirBuffer(capacity=10, seed=0)
        >>> for i in range(10):
        ...     buf.add(f"old{i}")
        >>> batch = mix_batch(["new0", "new1", "new2", "new3"], buf, 0.5, np.random.default_rng(0))
        >>> len(batch), batch[:4]
        (6, ['new0', 'new1', 'new2', 'new3'])
    """
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or ratio < 0:
        raise ValueError(f"ratio must be a finite number >= 0 (replayed per new example), got {ratio!r}")
    n_replay = math.floor(ratio * len(new_examples) + 0.5)
    return list(new_examples) + list(buffer.sample(n_replay, rng))
