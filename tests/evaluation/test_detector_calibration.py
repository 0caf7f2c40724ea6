"""Drift-detector calibration: the scoring on hand-made detections, then the quick protocol end to end."""

from __future__ import annotations

import numpy as np
import pytest

from cl.evaluation import detector_calibration as dc
from cl.evaluation.result import ProtocolResult


class FiresAt:
    """A fake detector that reports a drift after the updates at ``times`` (0-based)."""

    def __init__(self, times):
        self.times, self.t, self.drift_detected = set(times), -1, False

    def update(self, x):
        self.t += 1
        self.drift_detected = self.t in self.times


SHIFT = dc.StreamSpec("test_shift", "test shift", "bernoulli", 0.2, 0.4)
CALM = dc.StreamSpec("test_calm", "test calm", "gaussian", 0.0)


def test_delay_false_alarms_and_misses_by_hand():
    # Change at index 100, window 50: a detection at 120 is a delay of 20; the one at 10 is a
    # false alarm (1 per 100 watched events = 100 per 10k); 130 is a second, later detection.
    s = dc.score_stream(lambda: FiresAt([10, 120, 130]), SHIFT, seed=0, repetitions=2, pre=100, post=50)
    assert s.delays.tolist() == [20, 20]
    assert (s.median_delay, s.missed_fraction, s.false_alarms_per_10k) == (20.0, 0.0, 100.0)
    # The first detection after the change comes only 60 events after it: missed.
    s = dc.score_stream(lambda: FiresAt([160]), SHIFT, seed=0, repetitions=2, pre=100, post=50)
    assert s.delays.tolist() == [-1, -1] and s.missed_fraction == 1.0 and np.isnan(s.median_delay)
    # Detecting on the very first changed value is a delay of 0.
    assert dc.score_stream(lambda: FiresAt([100]), SHIFT, 0, 1, 100, 50).delays.tolist() == [0]


def test_stable_streams_count_every_detection_as_a_false_alarm():
    s = dc.score_stream(lambda: FiresAt([5, 60, 149]), CALM, seed=0, repetitions=4, pre=100, post=50)
    assert s.delays.size == 0 and s.watched == 150
    assert s.false_alarms_per_10k == pytest.approx(3 / 150 * 10_000)


def test_streams_change_where_they_say_and_are_seeded():
    rng = lambda: np.random.default_rng(7)  # noqa: E731
    x = SHIFT.sample(rng(), 20_000, 20_000)
    assert abs(x[:20_000].mean() - 0.2) < 0.02 and abs(x[20_000:].mean() - 0.4) < 0.02
    assert np.array_equal(x, SHIFT.sample(rng(), 20_000, 20_000))
    g = dc.STREAMS[1].sample(rng(), 20_000, 20_000)  # N(0,1) -> N(1,1)
    assert abs(g[:20_000].mean()) < 0.05 and abs(g[20_000:].mean() - 1.0) < 0.05


@pytest.fixture(scope="module")
def quick() -> ProtocolResult:
    return dc.run(quick=True, say=lambda line: None)


def _rows(table):
    return {(row[0], row[1]): dict(zip(table.columns, row)) for row in table.rows}


def test_quick_run_has_its_tables_and_figures(quick):
    assert (quick.name, quick.title, quick.quick) == ("detector_calibration", "Drift-detector calibration", True)
    assert quick.goals == []  # the issue names no numeric goal for this protocol
    shifting, stable = quick.tables
    names = list(dc.detectors())
    assert len(shifting.rows) == 3 * len(names) and len(stable.rows) == 2 * len(names)
    assert [f.stem for f in quick.figures] == ["tradeoff", "delays"]
    assert all(f.figure.axes for f in quick.figures)
    assert quick.settings["repetitions"] == dc.SIZES[True]["repetitions"] and quick.summary


def test_always_fire_has_no_delay_and_the_most_false_alarms(quick):
    shifting, stable = (_rows(t) for t in quick.tables)
    for spec in dc.STREAMS:
        if spec.shifting:
            table, column = shifting, "false alarms / 10k (before change)"
        else:
            table, column = stable, "false alarms / 10k"
        always = table[spec.label, "always fire"]
        assert always[column] == 10_000.0
        others = [
            row[column] for (stream, name), row in table.items() if stream == spec.label and name != "always fire"
        ]
        assert max(others) < always[column]
        if spec.shifting:
            assert always["median delay"] == 0.0 and always["missed fraction"] == 0.0


def test_adwin_and_page_hinkley_catch_the_error_rate_rise(quick):
    shifting = _rows(quick.tables[0])
    for name in ("ADWIN (ours)", "Page-Hinkley (ours)", "ADWIN (River)", "Page-Hinkley (River)"):
        row = shifting["Bernoulli p 0.2→0.4", name]
        assert row["missed fraction"] < 0.5, name  # detected in most repetitions
        assert 0 < row["median delay"] < dc.SIZES[True]["post"], name


def test_the_bigger_mean_shift_is_caught_sooner(quick):
    shifting = _rows(quick.tables[0])
    for name in ("ADWIN (ours)", "Page-Hinkley (ours)"):
        big, small = shifting["Gaussian μ 0→1", name], shifting["Gaussian μ 0→0.5", name]
        assert big["median delay"] < small["median delay"]


def test_the_service_adwin_rarely_alarms_on_a_stable_error_stream(quick):
    stable = _rows(quick.tables[1])
    assert stable["Bernoulli p 0.2 (stable)", "ADWIN (ours)"]["false alarms / 10k"] < 5.0


def test_quick_result_writes_a_report(quick, tmp_path):
    from cl.evaluation.report import write_report

    text = write_report(quick, tmp_path).read_text()
    assert "## Goals" not in text and "## Stable streams: false alarms" in text
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "detector_calibration-delays.png",
        "detector_calibration-tradeoff.png",
    ]
