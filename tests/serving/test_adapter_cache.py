"""AdapterCache: LRU order, evictions, base, failures, batches that need several versions."""

from __future__ import annotations

import pytest

from cl.serving.adapter_cache import AdapterCache, Eviction


class Bank:
    """Records installs; a stand-in for ``model.load_adapter_state``."""

    def __init__(self) -> None:
        self.slots: dict[int, str] = {}
        self.loads: list[str] = []
        self.evicted: list[tuple[str, int]] = []

    def load(self, version: str) -> str:
        self.loads.append(version)
        return f"state-{version}"

    def install(self, slot: int, state: str) -> None:
        self.slots[slot] = state


def make(capacity: int = 2) -> tuple[AdapterCache, Bank]:
    bank = Bank()
    cache = AdapterCache(capacity, install=bank.install, on_evict=lambda v, s: bank.evicted.append((v, s)))
    return cache, bank


def test_hits_do_not_reload_and_base_needs_no_slot():
    cache, bank = make()
    assert cache.slot_for("base", bank.load) == -1
    assert cache.slot_for("1", bank.load) == 0
    assert cache.slot_for("1", bank.load) == 0
    assert bank.loads == ["1"]
    assert "base" in cache and "1" in cache and "2" not in cache
    assert cache.versions() == ["1"] and len(cache) == 1


def test_miss_evicts_the_least_recently_used_and_reports_it():
    cache, bank = make(2)
    assert [cache.slot_for(v, bank.load) for v in ("1", "2")] == [0, 1]
    cache.slot_for("1", bank.load)  # "2" is now least recently used
    assert cache.slot_for("3", bank.load) == 1
    assert bank.evicted == [("2", 1)]
    assert cache.last_eviction == Eviction("2", 1) and cache.last_eviction.version == "2"
    assert cache.evictions == 1
    assert cache.versions() == ["1", "3"]
    assert bank.slots == {0: "state-1", 1: "state-3"}
    assert cache.slot_for("2", bank.load) == 0  # "1" was least recently used by then
    assert bank.evicted[-1] == ("1", 0) and bank.loads == ["1", "2", "3", "2"]


def test_peek_does_not_touch_recency():
    cache, bank = make(2)
    cache.slot_for("1", bank.load)
    cache.slot_for("2", bank.load)
    assert cache.peek("1") == 0 and cache.peek("base") == -1 and cache.peek("9") is None
    cache.slot_for("3", bank.load)
    assert "1" not in cache  # peek did not make "1" recent


def test_failing_load_or_install_leaves_the_cache_consistent():
    cache, bank = make(1)
    cache.slot_for("1", bank.load)

    def broken(version: str) -> str:
        raise KeyError(version)

    with pytest.raises(KeyError):
        cache.slot_for("2", broken)
    assert cache.versions() == ["1"] and cache.evictions == 0  # nothing evicted for a failed load

    def bad_install(slot: int, state: str) -> None:
        raise ValueError("shape mismatch")

    cache.install = bad_install
    with pytest.raises(ValueError, match="shape mismatch"):
        cache.slot_for("3", bank.load)
    assert cache.versions() == []  # "1" was evicted, "3" never made it
    cache.install = bank.install
    assert cache.slot_for("3", bank.load) == 0


def test_assign_keeps_every_version_of_a_batch():
    cache, bank = make(2)
    cache.slot_for("1", bank.load)
    cache.slot_for("2", bank.load)
    slots = cache.assign(["2", "base", "3", "2"], bank.load)
    assert slots == {"2": 1, "base": -1, "3": 0}  # "1" evicted, not "2"
    with pytest.raises(ValueError, match="split the batch"):
        cache.assign(["4", "5", "6"], bank.load)


def test_protect_refuses_to_evict_what_a_batch_needs():
    cache, bank = make(1)
    cache.slot_for("1", bank.load)
    with pytest.raises(ValueError, match="adapter_cache_size"):
        cache.slot_for("2", bank.load, protect={"1"})
    assert cache.versions() == ["1"]


@pytest.mark.parametrize("capacity", [0, -1, 1.5, True])
def test_capacity_must_be_a_positive_int(capacity):
    with pytest.raises(ValueError, match="adapter_cache_size"):
        AdapterCache(capacity, install=lambda s, x: None)
