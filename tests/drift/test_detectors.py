"""Behaviour specific to ADWIN and Page-Hinkley, and the factory.

The detection tests run each detector over 20 seeded Bernoulli error streams whose error
rate moves from 0.2 to 0.5 at step 1000, and over 20 stable streams; run with ``-s`` to
see the measured delays and false-alarm counts.
"""

from __future__ import annotations

import numpy as np
import pytest

from cl.drift import ADWIN, DRIFT_DETECTORS, PageHinkley, make_drift_detector

CHANGE_AT = 1000
N_SEEDS = 20


def bernoulli(rates: list[tuple[float, int]], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.random(n) < p for p, n in rates]).astype(float)


def detections(det, xs) -> list[int]:
    found = []
    for t, x in enumerate(xs):
        det.update(float(x))
        if det.drift_detected:
            found.append(t)
    return found


def delays(make, before=0.2, after=0.5, n_after=1000) -> tuple[list[float], int]:
    """Delay of the first detection after the change per seed (inf if none), and alarms before it."""
    out, early = [], 0
    for seed in range(N_SEEDS):
        found = detections(make(), bernoulli([(before, CHANGE_AT), (after, n_after)], seed))
        early += sum(t < CHANGE_AT for t in found)
        late = [t - CHANGE_AT for t in found if t >= CHANGE_AT]
        out.append(float(late[0]) if late else float("inf"))
    return out, early


DETECTION_BOUNDS = {  # median delay bound, in steps after the change
    "adwin": (ADWIN, 200),
    "page_hinkley": (PageHinkley, 350),
}


@pytest.mark.parametrize("name", list(DETECTION_BOUNDS))
def test_detects_an_abrupt_rise_in_the_error_rate(name):
    cls, bound = DETECTION_BOUNDS[name]
    found, early = delays(cls)
    median = float(np.median(found))
    print(
        f"\n{name}: 0.2 -> 0.5 at step {CHANGE_AT}, {N_SEEDS} seeds: median delay {median:.0f}, "
        f"delays {sorted(found)}, alarms before the change: {early}"
    )
    assert median < bound, found
    assert sum(np.isfinite(found)) >= N_SEEDS - 1, f"missed the change: {found}"
    assert early <= 3, f"{early} alarms before the change"


@pytest.mark.parametrize("name", list(DETECTION_BOUNDS))
def test_false_alarms_on_a_stable_stream_are_rare(name):
    cls, _ = DETECTION_BOUNDS[name]
    per_seed = [len(detections(cls(), bernoulli([(0.2, 5000)], 1000 + seed))) for seed in range(N_SEEDS)]
    print(f"\n{name}: stable p=0.2, {N_SEEDS} x 5000 steps: {sum(per_seed)} false alarms {per_seed}")
    assert sum(per_seed) <= 4, per_seed


def test_more_confidence_means_later_detection():
    eager = float(np.median(delays(lambda: ADWIN(delta=0.1))[0]))
    strict = float(np.median(delays(lambda: ADWIN(delta=1e-5))[0]))
    assert eager < strict, (eager, strict)


def test_no_detection_on_a_constant_stream():
    for det in (ADWIN(clock=1), PageHinkley(mode="both", min_instances=1, threshold=1.0)):
        assert detections(det, np.full(3000, 0.3)) == []


# ---- ADWIN ----------------------------------------------------------------------------


def test_adwin_detects_a_fall_too():
    found = detections(ADWIN(), bernoulli([(0.6, CHANGE_AT), (0.2, 1000)], 0))
    assert found and CHANGE_AT <= found[0] < CHANGE_AT + 200, found


def test_adwin_window_statistics_match_the_last_width_values():
    xs = np.concatenate([np.random.default_rng(0).normal(0, 1, 1500), np.random.default_rng(1).normal(3, 2, 700)])
    adwin = ADWIN()
    for x in xs:
        adwin.update(float(x))
    assert adwin.n_detections >= 1 and adwin.width < xs.size
    window = xs[-adwin.width :]
    assert adwin.estimation == pytest.approx(window.mean(), rel=1e-9, abs=1e-9)
    assert adwin.variance == pytest.approx(window.var(), rel=1e-6)


def test_adwin_keeps_logarithmically_many_buckets():
    adwin = ADWIN(max_buckets=5)
    xs = np.random.default_rng(0).random(20_000) < 0.3
    for x in xs:
        adwin.update(float(x))
    state = adwin.state_dict()
    rows = state["rows"]
    assert all(len(row) <= 5 for row in rows)
    assert sum(len(row) << i for i, row in enumerate(rows)) == adwin.width
    assert sum(len(row) for row in rows) <= 5 * (np.log2(adwin.width) + 1)
    assert adwin.width > 10_000  # stable stream: the window keeps growing


def test_adwin_drops_the_stale_part_of_the_window():
    adwin = ADWIN()
    xs = bernoulli([(0.1, 2000), (0.9, 2000)], 3)
    found = detections(adwin, xs)
    assert found and found[0] < 2100, found
    # The 2000 old values are gone, but for the remains of a bucket that straddles the change.
    assert 2000 <= adwin.width < 2100
    assert adwin.estimation == pytest.approx(0.9, abs=0.03)


def test_adwin_checks_only_every_clock_steps_after_the_grace_period():
    adwin = ADWIN(clock=50, grace_period=10)
    found = detections(adwin, np.concatenate([np.zeros(500), np.ones(500)]))
    assert found and all((t + 1) % 50 == 0 for t in found), found


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"delta": 0.0}, "delta"),
        ({"delta": 1.5}, "delta"),
        ({"clock": 0}, "clock"),
        ({"max_buckets": 0}, "max_buckets"),
        ({"min_window_length": 2.5}, "min_window_length"),
        ({"grace_period": -1}, "grace_period"),
    ],
)
def test_adwin_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ADWIN(**kwargs)


# ---- Page-Hinkley -----------------------------------------------------------------------


def test_page_hinkley_modes_watch_the_right_direction():
    rise = bernoulli([(0.2, CHANGE_AT), (0.6, 1000)], 0)
    fall = bernoulli([(0.6, CHANGE_AT), (0.2, 1000)], 0)
    assert detections(PageHinkley(mode="up"), fall) == []
    assert detections(PageHinkley(mode="down"), rise) == []
    for mode, xs in [("up", rise), ("down", fall), ("both", rise), ("both", fall)]:
        found = detections(PageHinkley(mode=mode), xs)
        assert found and CHANGE_AT <= found[0] < CHANGE_AT + 300, (mode, found)


def test_page_hinkley_waits_for_min_instances_and_restarts_after_an_alarm():
    xs = np.concatenate([np.zeros(10), np.ones(200)])
    ph = PageHinkley(min_instances=50, threshold=5.0)
    found = detections(ph, xs)
    assert found[0] >= 49
    assert all(b - a >= 50 for a, b in zip(found, found[1:])), found  # restarted: min_instances again
    assert ph.n_detections == len(found)


def test_page_hinkley_lower_threshold_alarms_sooner():
    low = float(np.median(delays(lambda: PageHinkley(threshold=20.0))[0]))
    high = float(np.median(delays(lambda: PageHinkley(threshold=80.0))[0]))
    assert low < high, (low, high)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_instances": 0}, "min_instances"),
        ({"delta": -0.1}, "delta"),
        ({"threshold": 0}, "threshold"),
        ({"alpha": 1.1}, "alpha"),
        ({"mode": "sideways"}, "'up', 'down', 'both'"),
    ],
)
def test_page_hinkley_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PageHinkley(**kwargs)


def test_page_hinkley_reports_all_argument_problems_at_once():
    with pytest.raises(ValueError) as info:
        PageHinkley(min_instances=0, threshold=-1.0, mode="x")
    assert all(word in str(info.value) for word in ("min_instances", "threshold", "mode"))


# ---- factory ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(DRIFT_DETECTORS) + ["ADWIN", "Page-Hinkley"])
def test_factory_builds_every_kind(kind):
    det = make_drift_detector(kind)
    assert type(det) is DRIFT_DETECTORS[kind.lower().replace("-", "_")]


def test_factory_passes_arguments_and_names_valid_choices():
    assert make_drift_detector("adwin", delta=0.01).delta == 0.01
    assert make_drift_detector("page_hinkley", mode="both").mode == "both"
    with pytest.raises(ValueError, match="valid kinds: 'adwin', 'page_hinkley'"):
        make_drift_detector("ddm")
    with pytest.raises(ValueError, match="does not take 'treshold'.*'threshold'"):
        make_drift_detector("page_hinkley", treshold=10)
