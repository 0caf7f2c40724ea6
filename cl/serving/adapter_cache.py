"""Which adapter version sits in which slot of a model's adapter bank: an LRU map.

A serving replica holds one frozen base and ``K`` adapter slots. Requests name model
versions; :class:`AdapterCache` maps each version to a slot, loading it into the least
recently used slot on a miss. The version ``"base"`` needs no slot: it maps to ``-1``, the
adapter id the model reads as "base only".

The cache holds no tensors itself: on a miss it calls ``load(version)`` for the adapter
state and hands it to ``install(slot, state)`` (typically ``model.load_adapter_state``).

Example:
    >>> installed = {}
    >>> cache = AdapterCache(2, install=lambda slot, state: installed.update({slot: state}))
    >>> load = lambda version: {"w": version}
    >>> cache.slot_for("base", load)
    -1
    >>> cache.slot_for("7", load), cache.slot_for("8", load), cache.slot_for("7", load)
    (0, 1, 0)
    >>> cache.slot_for("9", load)  # evicts "8", the least recently used
    1
    >>> cache.versions(), cache.evictions, installed[1]
    (['7', '9'], 1, {'w': '9'})
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable
from typing import Any, NamedTuple

from cl.versions import BASE_VERSION

__all__ = ["BASE_VERSION", "AdapterCache", "Eviction"]


class Eviction(NamedTuple):
    """An adapter version that was dropped to make room, and the slot it held."""

    version: str
    slot: int


class AdapterCache:
    """LRU map from model version to adapter slot, with ``capacity`` slots ``0..capacity-1``.

    Not thread-safe: callers that share a cache between threads hold their own lock
    around each call (they also need it around the forward pass that reads the slots).

    Args:
        capacity: Number of adapter slots (``serve.adapter_cache_size``).
        install: ``install(slot, state)`` writes a loaded adapter state into a slot.
        on_evict: Called with ``(version, slot)`` each time a version is dropped.

    Raises:
        ValueError: ``capacity`` is not a positive int.
    """

    def __init__(
        self,
        capacity: int,
        install: Callable[[int, Any], None],
        on_evict: Callable[[str, int], None] | None = None,
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity={capacity!r} is not a slot count; use an int >= 1 (serve.adapter_cache_size)")
        self.capacity = capacity
        self.install = install
        self.on_evict = on_evict
        self.evictions = 0
        self.last_eviction: Eviction | None = None
        self._slots: OrderedDict[str, int] = OrderedDict()  # least recently used first

    def __contains__(self, version: object) -> bool:
        return version == BASE_VERSION or version in self._slots

    def __len__(self) -> int:
        return len(self._slots)

    def versions(self) -> list[str]:
        """Loaded versions, least recently used first (``"base"`` is never listed)."""
        return list(self._slots)

    def slots(self) -> dict[str, int]:
        """Loaded version -> slot, least recently used first."""
        return dict(self._slots)

    def peek(self, version: str) -> int | None:
        """The slot of ``version`` (``-1`` for base) without touching its recency; None if not loaded."""
        if version == BASE_VERSION:
            return -1
        return self._slots.get(version)

    def slot_for(
        self,
        version: str,
        load: Callable[[str], Any],
        *,
        protect: Collection[str] = (),
    ) -> int:
        """The slot holding ``version``, loading it first if needed; marks it most recently used.

        On a miss, ``load(version)`` is called first; only if it succeeds is a slot chosen
        (a free one, else the least recently used version's, which is evicted) and the
        state installed. A failing ``load`` or ``install`` leaves the cache consistent: the
        version is not cached and a slot whose install failed is freed.

        Args:
            version: Model version, or ``"base"``.
            load: ``load(version) -> state`` fetches the adapter state (e.g. from the registry).
            protect: Versions that must not be evicted by this call (others already in use
                by the same batch).

        Returns:
            The slot in ``[0, capacity)``, or ``-1`` for ``"base"``.

        Raises:
            ValueError: Every slot holds a protected version, so there is no room.
            Exception: Whatever ``load`` or ``install`` raised.
        """
        if version == BASE_VERSION:
            return -1
        if version in self._slots:
            self._slots.move_to_end(version)
            return self._slots[version]
        state = load(version)
        slot = self._free_slot(protect)
        self.install(slot, state)  # if this raises, the slot stays free (cached for nobody)
        self._slots[version] = slot
        return slot

    def assign(self, versions: Iterable[str], load: Callable[[str], Any]) -> dict[str, int]:
        """Slots for every version one batch needs, none evicting another of the batch.

        Args:
            versions: Versions (repeats allowed), ``"base"`` included or not.
            load: As for :meth:`slot_for`.

        Returns:
            Version -> slot for each distinct version.

        Raises:
            ValueError: More distinct non-base versions than slots; split the batch.
        """
        distinct = list(dict.fromkeys(versions))
        adapters = [v for v in distinct if v != BASE_VERSION]
        if len(adapters) > self.capacity:
            raise ValueError(
                f"a batch needs {len(adapters)} adapter versions but the cache has {self.capacity} "
                "slots; split the batch (or raise serve.adapter_cache_size)"
            )
        return {v: self.slot_for(v, load, protect=distinct) for v in distinct}

    def discard(self, version: str) -> int | None:
        """Forget ``version`` (e.g. after its slot was reset); returns the slot it held."""
        return self._slots.pop(version, None)

    def _free_slot(self, protect: Collection[str]) -> int:
        used = set(self._slots.values())
        free = next((s for s in range(self.capacity) if s not in used), None)
        if free is not None:
            return free
        victim = next((v for v in self._slots if v not in protect), None)
        if victim is None:
            raise ValueError(
                f"all {self.capacity} adapter slots hold versions this batch needs "
                f"({', '.join(self._slots)}); split the batch (or raise serve.adapter_cache_size)"
            )
        slot = self._slots.pop(victim)
        self.evictions += 1
        self.last_eviction = Eviction(victim, slot)
        if self.on_evict is not None:
            self.on_evict(victim, slot)
        return slot
