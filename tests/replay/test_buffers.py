"""Behaviour specific to each replay buffer, the factory and ``mix_batch``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cl.replay import (
    REPLAY_BUFFERS,
    ClassBalancedBuffer,
    LossPrioritisedBuffer,
    ReservoirBuffer,
    make_replay_buffer,
    mix_batch,
)

# ---- reservoir ------------------------------------------------------------------------


class KeepLatest:
    """A deliberately wrong "reservoir" (a FIFO window) to show the uniformity test has teeth."""

    def __init__(self, capacity: int, seed: int) -> None:
        self.capacity, self.items = capacity, []

    def add(self, example, *, label=None, loss=None):
        self.items = (self.items + [example])[-self.capacity :]

    def stored(self):
        return self.items


class ConstantRate(ReservoirBuffer):
    """A common mistake: replace with a fixed probability instead of ``capacity / seen``."""

    def add(self, example, *, label=None, loss=None):
        key = self._next_key()
        if len(self) < self._capacity:
            self._append(key, example, label, loss)
        elif self._rng.random() < 0.2:
            self._overwrite(int(self._rng.integers(self._capacity)), key, example, label, loss)


def inclusion_chi2(factory, runs=300, stream=400, capacity=40, bins=10) -> tuple[float, np.ndarray]:
    """Chi-square statistic of how often each tenth of the stream ends up in the buffer."""
    counts = np.zeros(bins)
    for seed in range(runs):
        buf = factory(capacity, seed)
        for i in range(stream):
            buf.add(i)
        stored = buf.stored() if hasattr(buf, "stored") else buf.sample(capacity, np.random.default_rng(0))
        for i in stored:
            counts[i * bins // stream] += 1
    expected = runs * capacity / bins
    return float(((counts - expected) ** 2 / expected).sum()), counts


# Chi-square with 9 degrees of freedom: P(X > 27.9) = 0.001. Within a run the counts are
# negatively correlated (they sum to `capacity`), which only makes a correct buffer safer.
CHI2_LIMIT = 27.9


def test_reservoir_keeps_every_part_of_the_stream_equally_often():
    chi2, counts = inclusion_chi2(ReservoirBuffer)
    print(f"reservoir inclusion per tenth of the stream: {counts.astype(int).tolist()}, chi2={chi2:.1f}")
    assert chi2 < CHI2_LIMIT, counts
    assert counts.min() > 0.85 * counts.mean() and counts.max() < 1.15 * counts.mean(), counts


@pytest.mark.parametrize("wrong", [KeepLatest, ConstantRate], ids=["fifo", "constant_rate"])
def test_uniformity_check_rejects_biased_buffers(wrong):
    chi2, counts = inclusion_chi2(wrong)
    assert chi2 > CHI2_LIMIT, counts


def test_reservoir_inclusion_probability_is_capacity_over_seen():
    # The very first and the very last example: each kept with probability 10/100 = 0.1.
    first = last = 0
    for seed in range(1000):
        buf = ReservoirBuffer(10, seed)
        for i in range(100):
            buf.add(i)
        kept = buf.sample(10, np.random.default_rng(0))
        first += 0 in kept
        last += 99 in kept
    for count in (first, last):
        assert 0.07 < count / 1000 < 0.13, (first, last)  # sd is 0.0095: a 3-sd band


# ---- class balanced -------------------------------------------------------------------


def test_class_balanced_keeps_classes_within_one():
    rng = np.random.default_rng(0)
    labels = rng.choice(["a", "b", "c"], size=3000, p=[0.7, 0.2, 0.1])
    buf = ClassBalancedBuffer(61, seed=0)
    seen = {"a": 0, "b": 0, "c": 0}
    checked = 0
    for i, label in enumerate(labels):
        buf.add({"i": i}, label=str(label))
        seen[label] += 1
        counts = buf.class_counts()
        assert sum(counts.values()) == len(buf) == min(i + 1, 61)
        if min(seen.values()) >= 61 // 3 + 1:  # every class could fill its share
            assert max(counts.values()) - min(counts.values()) <= 1, (i, counts)
            checked += 1
    assert checked > 2000


def test_class_balanced_rare_class_keeps_all_its_examples():
    buf = ClassBalancedBuffer(30, seed=1)
    for i in range(3000):
        buf.add(i, label="rare" if i % 500 == 0 else ("x" if i % 2 else "y"))
    counts = buf.class_counts()
    assert counts["rare"] == 6  # all six rare examples survive
    assert abs(counts["x"] - counts["y"]) <= 1 and counts["x"] + counts["y"] == 24


def test_class_balanced_is_uniform_within_a_class():
    # 2 classes, 300 examples each, 10 slots each: early and late halves of a class equally kept.
    early = late = 0
    for seed in range(100):
        buf = ClassBalancedBuffer(20, seed)
        for i in range(600):
            buf.add(i, label=i % 2)
        for i in buf.sample(20, np.random.default_rng(0)):
            early += i < 300
            late += i >= 300
    assert abs(early - late) < 0.1 * (early + late), (early, late)


def test_class_balanced_state_keeps_tuple_and_none_labels_through_json():
    buf = ClassBalancedBuffer(8, seed=2)
    for i in range(40):
        buf.add(i, label=(i % 3, "t") if i % 4 else None)
    restored = ClassBalancedBuffer(8, seed=2)
    restored.load_state_dict(json.loads(json.dumps(buf.state_dict())))
    assert restored.class_counts() == buf.class_counts()
    for i in range(40, 80):
        buf.add(i, label=(i % 3, "t"))
        restored.add(i, label=(i % 3, "t"))
    assert restored.state_dict() == buf.state_dict()


def test_class_balanced_rejects_unhashable_labels():
    with pytest.raises(TypeError):
        ClassBalancedBuffer(4, 0).add({"i": 0}, label=["a"])


# ---- loss prioritised -----------------------------------------------------------------


def fill_two_levels(buf, low=0.1, high=1.0):
    for i in range(20):
        buf.add({"i": i, "hard": i % 2 == 1}, loss=high if i % 2 else low)


@pytest.mark.parametrize(("alpha", "expected"), [(1.0, 10 / 11), (0.5, 1 / (1 + 0.1**0.5)), (0.0, 0.5)])
def test_prioritised_samples_high_loss_more_often(alpha, expected):
    buf = LossPrioritisedBuffer(20, seed=0, alpha=alpha)
    fill_two_levels(buf)
    rng = np.random.default_rng(3)
    hard = sum(buf.sample(1, rng)[0]["hard"] for _ in range(2500)) / 2500
    # Binomial sd <= 0.01 at n=2500: a 4-sd band.
    assert abs(hard - expected) < 0.04, (alpha, hard, expected)
    np.testing.assert_allclose(buf.priorities().sum(), 1.0)


def test_prioritised_update_losses_moves_the_priority():
    buf = LossPrioritisedBuffer(20, seed=0, alpha=1.0)
    fill_two_levels(buf)
    pairs = buf.sample(20, np.random.default_rng(0), return_keys=True)
    buf.update_losses([k for k, ex in pairs if ex["hard"]], [0.0] * 10)  # the hard ones got learned
    rng = np.random.default_rng(4)
    hard = sum(buf.sample(1, rng)[0]["hard"] for _ in range(1000)) / 1000
    assert hard < 0.01, hard


def test_prioritised_unscored_example_gets_the_highest_loss():
    buf = LossPrioritisedBuffer(5, seed=0)
    buf.add("first")  # empty buffer: 1.0
    buf.add("b", loss=2.5)
    buf.add("c")
    assert buf.state_dict()["losses"] == [1.0, 2.5, 2.5]


def test_prioritised_lowest_loss_eviction_keeps_the_hardest():
    buf = LossPrioritisedBuffer(10, seed=0, evict="lowest_loss")
    losses = np.random.default_rng(5).random(100)
    for i, loss in enumerate(losses):
        buf.add(i, loss=float(loss))
    kept = sorted(buf.sample(10, np.random.default_rng(0)))
    assert kept == sorted(np.argsort(losses)[-10:].tolist())
    buf.add("too easy", loss=0.0)  # below everything stored: not kept
    assert "too easy" not in buf.sample(10, np.random.default_rng(0)) and buf.seen == 101


def test_prioritised_lowest_loss_ties_evict_the_oldest():
    buf = LossPrioritisedBuffer(3, seed=0)
    for name in ["a", "b", "c", "d"]:
        buf.add(name, loss=1.0)
    assert sorted(buf.sample(3, np.random.default_rng(0))) == ["b", "c", "d"]


def test_prioritised_oldest_eviction_is_a_window():
    buf = LossPrioritisedBuffer(10, seed=0, evict="oldest")
    for i in range(95):
        buf.add(i, loss=float(i % 7))
    assert sorted(buf.sample(10, np.random.default_rng(0))) == list(range(85, 95))


def test_prioritised_huge_alpha_still_samples_without_duplicates():
    buf = LossPrioritisedBuffer(50, seed=0, alpha=500.0)
    for i in range(50):
        buf.add(i, loss=float(i) / 10)
    drawn = buf.sample(50, np.random.default_rng(0))
    assert sorted(drawn) == list(range(50))
    assert buf.sample(1, np.random.default_rng(1)) == [49]


def test_prioritised_argument_errors_are_reported_together():
    with pytest.raises(ValueError) as info:
        LossPrioritisedBuffer(10, 0, alpha=-1.0, evict="newest", epsilon=0.0)
    message = str(info.value)
    assert "alpha" in message and "'newest'" in message and "'oldest'" in message and "epsilon" in message


# ---- factory ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(REPLAY_BUFFERS) + ["Reservoir", "class-balanced", " LOSS_PRIORITISED "])
def test_factory_builds_every_kind(kind):
    buf = make_replay_buffer(kind, 12, seed=3)
    key = kind.strip().lower().replace("-", "_")
    assert type(buf) is REPLAY_BUFFERS[key]
    assert buf.capacity == 12 and buf.seed == 3 and len(buf) == 0


def test_factory_errors_name_the_valid_choices():
    with pytest.raises(ValueError, match="valid kinds: 'reservoir', 'class_balanced', 'loss_prioritised'"):
        make_replay_buffer("ring", 10, 0)
    with pytest.raises(ValueError, match="does not take 'alpha'.*no further arguments"):
        make_replay_buffer("reservoir", 10, 0, alpha=1.0)
    with pytest.raises(ValueError, match="does not take 'alhpa'.*'alpha'"):
        make_replay_buffer("loss_prioritised", 10, 0, alhpa=1.0)
    assert make_replay_buffer("loss_prioritised", 10, 0, alpha=0.3, evict="oldest").evict == "oldest"


# ---- mix_batch ------------------------------------------------------------------------


def filled(n: int) -> ReservoirBuffer:
    buf = ReservoirBuffer(100, seed=0)
    for i in range(n):
        buf.add(f"old{i}")
    return buf


@pytest.mark.parametrize(
    ("n_new", "ratio", "n_replayed"),
    [
        (8, 1.0, 8),
        (8, 0.5, 4),
        (5, 0.5, 3),
        (3, 0.5, 2),
        (1, 0.5, 1),
        (10, 0.25, 3),
        (4, 0.0, 0),
        (0, 2.0, 0),
        (6, 3.0, 18),
    ],
)
def test_mix_batch_counts_round_half_up(n_new, ratio, n_replayed):
    new = [f"new{i}" for i in range(n_new)]
    batch = mix_batch(new, filled(50), ratio, np.random.default_rng(0))
    assert batch[:n_new] == new
    assert len(batch) == n_new + n_replayed
    assert all(x.startswith("old") for x in batch[n_new:])
    assert len(set(batch)) == len(batch)


def test_mix_batch_with_a_small_buffer_replays_what_there_is():
    batch = mix_batch(["n0", "n1", "n2", "n3"], filled(3), 2.0, np.random.default_rng(0))
    assert sorted(batch[4:]) == ["old0", "old1", "old2"]
    assert mix_batch(["n0"], ReservoirBuffer(5, 0), 1.0, np.random.default_rng(0)) == ["n0"]


def test_mix_batch_does_not_touch_the_buffer():
    buf = filled(50)
    before = buf.state_dict()
    mix_batch(("a", "b"), buf, 1.0, np.random.default_rng(0))
    assert buf.state_dict() == before


@pytest.mark.parametrize("ratio", [-0.5, float("nan"), float("inf"), "1"])
def test_mix_batch_rejects_bad_ratios(ratio):
    with pytest.raises(ValueError, match="ratio"):
        mix_batch(["a"], filled(5), ratio, np.random.default_rng(0))
