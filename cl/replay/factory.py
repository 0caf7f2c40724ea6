"""Build a replay buffer from its configured name."""

from __future__ import annotations

import inspect
from typing import Any

from cl.replay.base import ReplayBuffer
from cl.replay.class_balanced import ClassBalancedBuffer
from cl.replay.loss_prioritised import LossPrioritisedBuffer
from cl.replay.reservoir import ReservoirBuffer

REPLAY_BUFFERS: dict[str, type] = {
    "reservoir": ReservoirBuffer,
    "class_balanced": ClassBalancedBuffer,
    "loss_prioritised": LossPrioritisedBuffer,
}


def make_replay_buffer(kind: str, capacity: int, seed: int | None = None, **kwargs: Any) -> ReplayBuffer:
    """Build the replay buffer called ``kind``.

    Args:
        kind: One of ``"reservoir"`` (the default elsewhere), ``"class_balanced"``,
            ``"loss_prioritised"``; case and ``-``/``_`` do not matter.
        capacity: The most examples held at once.
        seed: Seed of the buffer's own generator.
        **kwargs: Further constructor arguments, e.g. ``alpha`` for
            ``"loss_prioritised"``.

    Returns:
        A fresh, empty buffer.

    Raises:
        ValueError: If ``kind`` is unknown or takes none of ``kwargs``; the message
            lists what is valid.

    Example:
        >>> from cl.replay import make_replay_buffer
        >>> make_replay_buffer("loss-prioritised", 100, seed=1, alpha=1.0)
        LossPrioritisedBuffer(capacity=100, seed=1, alpha=1.0, evict='lowest_loss', epsilon=1e-06) <0 stored, 0 seen>
        >>> make_replay_buffer("fifo", 100)
        Traceback (most recent call last):
        ...
        ValueError: unknown replay buffer kind 'fifo'; valid kinds: 'reservoir', 'class_balanced', 'loss_prioritised'
    """
    key = str(kind).strip().lower().replace("-", "_")
    cls = REPLAY_BUFFERS.get(key)
    if cls is None:
        valid = ", ".join(map(repr, REPLAY_BUFFERS))
        raise ValueError(f"unknown replay buffer kind {kind!r}; valid kinds: {valid}")
    accepted = [p for p in inspect.signature(cls).parameters if p not in ("capacity", "seed")]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"replay buffer {key!r} does not take {', '.join(map(repr, unknown))}; "
            f"it accepts: {', '.join(map(repr, accepted)) or 'no further arguments'}"
        )
    return cls(capacity, seed, **kwargs)
