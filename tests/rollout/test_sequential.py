"""The mixture SPRT: always valid under continuous monitoring, and powerful against real gaps."""

import math
import random

import pytest

from cl.rollout import MixtureSPRT


def run(test: MixtureSPRT, rate_a: float, rate_b: float, events: int, seed: int, share_b: float = 0.5):
    """Yield (look, ...) after every event of one simulated A/B stream."""
    rng = random.Random(seed)
    ga = na = gb = nb = 0
    for _ in range(events):
        if rng.random() < share_b:
            nb += 1
            gb += rng.random() < rate_b
        else:
            na += 1
            ga += rng.random() < rate_a
        if na >= 20 and nb >= 20:
            yield test.bounds(ga, na, gb, nb), (ga, na, gb, nb)


def test_confidence_sequence_stays_valid_when_checked_after_every_event():
    """Under H0, checking after each of 600 events rejects no more often than alpha (+ tolerance);
    a plain z-test peeked at the same way rejects far more often: what the mSPRT fixes."""
    alpha, runs = 0.05, 200
    test = MixtureSPRT(alpha=alpha, mixing_sd=0.1)
    rejected = peeking_z = 0
    for seed in range(runs):
        ever = ever_z = False
        p_value = 1.0  # the always-valid p-value: running minimum of 1 / LR
        for (diff, radius, log_lr), (ga, na, gb, nb) in run(test, 0.6, 0.6, 600, seed):
            p_value = min(p_value, math.exp(-log_lr))
            ever |= abs(diff) > radius
            assert ever == (p_value <= alpha)  # the p-value and the interval agree at every look
            pa, pb = ga / na, gb / nb
            se = math.sqrt(pa * (1 - pa) / na + pb * (1 - pb) / nb) or 1.0
            ever_z |= abs(diff) / se > 1.96
        rejected += ever
        peeking_z += ever_z
    assert rejected / runs <= alpha + 0.02
    assert peeking_z / runs > 3 * alpha


def test_it_covers_a_true_nonzero_difference_too():
    test = MixtureSPRT(alpha=0.05, mixing_sd=0.1)
    missed = sum(
        any(not diff - radius <= -0.1 <= diff + radius for (diff, radius, _), _ in run(test, 0.6, 0.5, 600, seed))
        for seed in range(200)
    )
    assert missed / 200 <= 0.05 + 0.02


def test_a_clear_difference_is_rejected_quickly_and_the_p_value_agrees():
    test = MixtureSPRT(alpha=0.01, mixing_sd=0.1)
    for seed in range(20):
        for _, counts in run(test, 0.6, 0.4, 2000, seed):
            look = test.compare(*counts)
            if look.upper < 0:
                break
        assert look.upper < 0 and look.n_challenger < 500
        assert look.p_value <= 0.01 and look.log_lr >= math.log(100)
        assert look.lower < look.diff < look.upper
        assert look.rate_challenger < look.rate_champion


def test_compare_needs_data_and_checks_counts():
    test = MixtureSPRT()
    assert test.compare(0, 0, 3, 5) is None
    with pytest.raises(ValueError, match="challenger: counts good=6, n=5 are impossible"):
        test.compare(1, 2, 6, 5)
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\)"):
        MixtureSPRT(alpha=1.5)
    with pytest.raises(ValueError, match="mixing_sd must be positive"):
        MixtureSPRT(mixing_sd=0)


def test_all_good_or_all_bad_runs_do_not_divide_by_zero():
    look = MixtureSPRT().compare(40, 40, 0, 40)
    assert look.upper < 0 and look.diff == -1.0
    assert MixtureSPRT().compare(40, 40, 40, 40).p_value == 1.0
