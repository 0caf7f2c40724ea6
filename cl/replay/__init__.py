"""Replay buffers: bounded stores of past examples mixed into online batches.

Public API:

- :class:`ReplayBuffer`: the protocol every buffer implements.
- :class:`ReservoirBuffer` (default), :class:`ClassBalancedBuffer`,
  :class:`LossPrioritisedBuffer`: the implementations.
- :func:`make_replay_buffer`: build one by name; :data:`REPLAY_BUFFERS` maps names to classes.
- :func:`mix_batch`: new examples plus a ratio of replayed ones.
"""

from cl.replay.base import ReplayBuffer
from cl.replay.class_balanced import ClassBalancedBuffer
from cl.replay.factory import REPLAY_BUFFERS, make_replay_buffer
from cl.replay.loss_prioritised import LossPrioritisedBuffer
from cl.replay.mixing import mix_batch
from cl.replay.reservoir import ReservoirBuffer

__all__ = [
    "REPLAY_BUFFERS",
    "ClassBalancedBuffer",
    "LossPrioritisedBuffer",
    "ReplayBuffer",
    "ReservoirBuffer",
    "make_replay_buffer",
    "mix_batch",
]
