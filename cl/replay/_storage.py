"""Slot storage shared by the replay buffers (internal).

Entries live in fixed slots ``0 .. len-1``: parallel lists of keys, examples and
labels plus a float array of losses (``NaN`` = unknown). Buffers decide *which*
slot to fill or overwrite; this class does the bookkeeping, uniform sampling,
loss updates and the state round trip.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from typing import Any

import numpy as np

STATE_FORMAT = 1


def check_capacity(capacity: Any) -> int:
    """Return ``capacity`` if it is a positive int, else raise naming the value."""
    if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) or capacity < 1:
        raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
    return int(capacity)


def check_seed(seed: Any) -> None:
    """Raise unless ``seed`` is ``None`` or a non-negative int."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")


def check_loss(loss: Any) -> float:
    """Return ``loss`` as a float; raise if it is negative or not finite."""
    try:
        value = float(loss)
    except (TypeError, ValueError):
        raise ValueError(f"loss must be a finite number >= 0, got {loss!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"loss must be a finite number >= 0, got {loss!r}")
    return value


def check_rng(rng: Any) -> np.random.Generator:
    """Return ``rng`` if it is a numpy Generator, else raise with the fix."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator, got {type(rng).__name__}; pass numpy.random.default_rng(seed)"
        )
    return rng


class SlotStore:
    """Base class holding the entries and the buffer's own random generator.

    Subclasses set ``kind``, implement ``add`` with ``_append``/``_overwrite``,
    and may override ``_draw_slots``, ``_config`` and the ``_extra_state`` hooks.
    """

    kind: str = ""

    def __init__(self, capacity: int, seed: int | None) -> None:
        self._capacity = check_capacity(capacity)
        check_seed(seed)
        self._rng = np.random.default_rng(seed)
        self._seen = 0
        self._keys: list[int] = []
        self._examples: list[Any] = []
        self._labels: list[Hashable | None] = []
        self._losses = np.full(self._capacity, np.nan)  # (capacity,)
        self._slot_of: dict[int, int] = {}

    # ---- public, shared -------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """The most examples the buffer holds at once."""
        return self._capacity

    @property
    def seen(self) -> int:
        """How many examples were ever offered to ``add``."""
        return self._seen

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        config = self._config()
        config = {"capacity": config.pop("capacity"), "seed": self.seed, **config}  # type: ignore[attr-defined]
        args = ", ".join(f"{k}={v!r}" for k, v in config.items())
        return f"{type(self).__name__}({args}) <{len(self)} stored, {self._seen} seen>"

    def sample(
        self, n: int, rng: np.random.Generator, *, return_keys: bool = False
    ) -> list[Any] | list[tuple[int, Any]]:
        """Draw ``min(n, len(self))`` distinct stored examples with ``rng``.

        Args:
            n: How many examples are wanted, ``>= 0``.
            rng: The generator to draw with; the buffer's own state is untouched.
            return_keys: Return ``(key, example)`` pairs instead of bare examples.

        Returns:
            The drawn examples (or ``(key, example)`` pairs), in random order.

        Raises:
            ValueError: If ``n`` is negative.
            TypeError: If ``rng`` is not a ``numpy.random.Generator``.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        check_rng(rng)
        k = min(int(n), len(self))
        if k == 0:
            return []
        slots = self._draw_slots(k, rng)
        if return_keys:
            return [(self._keys[s], self._examples[s]) for s in slots]
        return [self._examples[s] for s in slots]

    def update_losses(self, keys: Iterable[int], losses: Iterable[float]) -> None:
        """Record fresh losses for stored examples; unknown or evicted keys are ignored.

        Args:
            keys: Keys as returned by ``sample(..., return_keys=True)``.
            losses: One finite, non-negative loss per key.

        Raises:
            ValueError: If the lengths differ or a loss is negative or not finite.
        """
        keys = list(keys)
        values = [check_loss(v) for v in losses]
        if len(keys) != len(values):
            raise ValueError(f"got {len(keys)} keys but {len(values)} losses; pass one loss per key")
        for key, value in zip(keys, values):
            slot = self._slot_of.get(int(key))
            if slot is not None:
                self._losses[slot] = value

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this buffer is.

        Returns:
            Plain Python containers; JSON-serialisable when examples and labels are.
        """
        n = len(self)
        state = {
            "kind": self.kind,
            "format": STATE_FORMAT,
            "config": self._config(),
            "seen": self._seen,
            "keys": list(self._keys),
            "examples": list(self._examples),
            "labels": list(self._labels),
            "losses": [None if math.isnan(v) else float(v) for v in self._losses[:n].tolist()],
            "rng": self._rng.bit_generator.state,
        }
        state.update(self._extra_state())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict`` taken from a buffer with the same configuration.

        The random generator's state comes from the snapshot, so the ``seed`` this
        buffer was built with does not matter (and is not part of the state).

        Raises:
            ValueError: If the state is for another kind or configuration, or is
                inconsistent.
        """
        if state.get("kind") != self.kind:
            raise ValueError(f"state is for a {state.get('kind')!r} buffer, not {self.kind!r}")
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"unsupported state format {state.get('format')!r}; expected {STATE_FORMAT}")
        mine, theirs = self._config(), dict(state.get("config", {}))
        if mine != theirs:
            diff = ", ".join(
                f"{k}: state has {theirs.get(k)!r}, buffer has {mine.get(k)!r}"
                for k in sorted(set(mine) | set(theirs))
                if mine.get(k) != theirs.get(k)
            )
            raise ValueError(f"state was taken from a differently configured buffer ({diff})")
        keys, examples = list(state["keys"]), list(state["examples"])
        labels, losses = list(state["labels"]), list(state["losses"])
        n = len(keys)
        if not (n == len(examples) == len(labels) == len(losses)) or n > self._capacity:
            raise ValueError(
                f"inconsistent state: {n} keys, {len(examples)} examples, {len(labels)} labels, "
                f"{len(losses)} losses for capacity {self._capacity}"
            )
        self._seen = int(state["seen"])
        self._keys = [int(k) for k in keys]
        self._examples = examples
        self._labels = labels
        self._losses = np.full(self._capacity, np.nan)
        self._losses[:n] = [np.nan if v is None else float(v) for v in losses]
        self._slot_of = {k: s for s, k in enumerate(self._keys)}
        self._rng.bit_generator.state = state["rng"]
        self._load_extra_state(state)

    # ---- hooks and helpers for subclasses ---------------------------------------------

    def _config(self) -> dict[str, Any]:
        """The arguments that shape behaviour (not the seed: the snapshot carries the generator)."""
        return {"capacity": self._capacity}

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def _draw_slots(self, k: int, rng: np.random.Generator) -> list[int]:
        return rng.choice(len(self), size=k, replace=False).tolist()

    def _next_key(self) -> int:
        key = self._seen
        self._seen += 1
        return key

    def _append(self, key: int, example: Any, label: Hashable | None, loss: float | None) -> int:
        slot = len(self._keys)
        assert slot < self._capacity, "append past capacity"
        self._keys.append(key)
        self._examples.append(example)
        self._labels.append(label)
        self._losses[slot] = np.nan if loss is None else loss
        self._slot_of[key] = slot
        return slot

    def _overwrite(self, slot: int, key: int, example: Any, label: Hashable | None, loss: float | None) -> None:
        del self._slot_of[self._keys[slot]]
        self._keys[slot] = key
        self._examples[slot] = example
        self._labels[slot] = label
        self._losses[slot] = np.nan if loss is None else loss
        self._slot_of[key] = slot
