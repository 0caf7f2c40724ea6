"""Protocol 2 (drifting River streams through Kafka): the feature encoder, the streams, and a
quick run through the real broker."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cl.evaluation._stream_features import OnlineFeatureEncoder, drifting_streams
from cl.evaluation.drifting_streams import sliding_accuracy

# ---- the encoder (pure) ---------------------------------------------------------------


def test_encoder_standardises_with_earlier_events_only():
    rng = np.random.default_rng(3)
    values = rng.normal(50.0, 7.0, size=60)
    enc = OnlineFeatureEncoder(["v"], clip=100.0)
    for k, v in enumerate(values):
        got = enc.transform_one({"v": v})[0]
        seen = values[:k]
        want = 0.0 if k < 2 else (v - seen.mean()) / seen.std(ddof=1)
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9), k
        enc.learn_one({"v": v})


def test_encoder_transform_does_not_learn():
    enc = OnlineFeatureEncoder(["a", "b"])
    for a, b in [(1.0, 10.0), (3.0, 30.0), (2.0, 5.0)]:
        enc.learn_one({"a": a, "b": b})
    first = enc.transform_one({"a": 100.0, "b": -4.0})
    assert enc.transform_one({"a": 100.0, "b": -4.0}) == first
    assert enc.transform_one({"a": 2.0, "b": 15.0}) == [0.0, 0.0]  # the means themselves


def test_encoder_one_hots_categories_in_field_order_and_clips():
    enc = OnlineFeatureEncoder(["x", "zip", "car"], categories={"zip": [0, 1, 2], "car": [1, 2]}, clip=2.0)
    assert enc.n_features == 6
    for x in (0.0, 1.0, 2.0):
        enc.learn_one({"x": x, "zip": 0, "car": 1})
    assert enc.transform_one({"x": 1000.0, "zip": 2, "car": 1}) == [2.0, 0.0, 0.0, 1.0, 1.0, 0.0]
    assert enc.transform_one({"x": -1000.0, "zip": 0, "car": 2}) == [-2.0, 1.0, 0.0, 0.0, 0.0, 1.0]


def test_encoder_errors_name_the_field():
    enc = OnlineFeatureEncoder(["zip"], categories={"zip": [0, 1]})
    with pytest.raises(ValueError, match="field 'zip': value 7"):
        enc.transform_one({"zip": 7})
    with pytest.raises(ValueError, match=r"\['car'\]"):
        OnlineFeatureEncoder(["zip"], categories={"car": [1]})


def test_constant_field_encodes_as_zero():
    enc = OnlineFeatureEncoder(["c"])
    for _ in range(5):
        enc.learn_one({"c": 4.0})
    assert enc.transform_one({"c": 9.0}) == [0.0]


# ---- the streams and the curve (pure) --------------------------------------------------


def test_streams_are_seeded_and_sea_threshold_moves_at_the_drift():
    a, b = drifting_streams(800, seed=5, agrawal_width=100), drifting_streams(800, seed=5, agrawal_width=100)
    drawn = [s.draw() for s in a]
    assert drawn == [s.draw() for s in b]
    assert [len(events) for events in drawn] == [800] * 3
    sea, events = a[0], drawn[0]
    (mid,) = sea.drift_points

    def agreement(threshold: float, part: list) -> float:
        return float(np.mean([(x[0] + x[1] > threshold) == bool(y) for x, y in part]))  # River: y = x0 + x1 > θ

    # 10% label noise: the right threshold explains ~90% of the labels, the other one fewer.
    assert agreement(8.0, events[:mid]) > agreement(7.0, events[:mid])
    assert agreement(7.0, events[mid:]) > agreement(8.0, events[mid:])
    assert agreement(8.0, events[:mid]) > 0.85


def test_agrawal_encodes_to_its_declared_width():
    agrawal = drifting_streams(50, seed=0, agrawal_width=10)[1]
    enc = agrawal.encoder()
    assert enc.n_features == 6 + 5 + 20 + 9
    for x, _ in agrawal.draw():
        row = enc.transform_one(x)
        enc.learn_one(x)
        # salary, commission, age | elevel (5) car (20) zipcode (9) | hvalue, hyears, loan
        assert len(row) == 40 and sorted(set(row[3:37])) == [0.0, 1.0] and sum(row[3:37]) == 3.0


def test_sliding_accuracy_matches_a_loop():
    rng = np.random.default_rng(0)
    correct = rng.random(97) < 0.7
    got = sliding_accuracy(correct, 10)
    want = [correct[max(0, i - 9) : i + 1].mean() for i in range(len(correct))]
    assert np.allclose(got, want)


# ---- a quick run through the real Kafka (integration) ----------------------------------


@pytest.fixture(scope="module")
def quick_result(stack):
    from cl.evaluation.drifting_streams import run
    from streams.eval_feed import EvalFeed

    lines: list[str] = []
    return run(lambda stream: EvalFeed(stack, stream), stack, quick=True, seed=0, say=lines.append), lines


def _table(result, title_start: str):
    table = next(t for t in result.tables if t.title.startswith(title_start))
    return [dict(zip(table.columns, row)) for row in table.rows]


@pytest.mark.integration
def test_every_event_went_through_kafka_and_was_scored_once(quick_result):
    result, _ = quick_result
    rows = _table(result, "Kafka accounting")
    assert [r["stream"] for r in rows] == ["SEA", "Agrawal", "Hyperplane"]
    for r in rows:
        n = r["events"]
        assert n == result.settings["streams"][r["stream"].lower()]["events"]
        for key in (
            "requests produced",
            "feedback produced",
            "requests consumed",
            "feedback consumed",
            "examples joined",
            "scored once",
        ):
            assert r[key] == n, (r["stream"], key, r[key])
        assert r["scored twice or more"] == r["duplicates"] == r["unjoined"] == 0
        # The served label and the learner's own pre-step prediction come from the same adapter state.
        assert r["served = learner prediction"] >= 0.99 * n


@pytest.mark.integration
def test_accuracies_are_rates_and_arf_beats_chance_on_sea(quick_result):
    result, _ = quick_result
    scores = _table(result, "Prequential accuracy")
    assert len(scores) == 12  # ours, ARF, HAT and the majority-class reference on 3 streams
    for r in scores:
        assert 0.0 <= r["prequential accuracy"] <= 1.0
        assert r["µs/event (model: predict + learn)"] > 0
    sea = drifting_streams(result.settings["streams"]["sea"]["events"], 0, 400)[0].draw()
    majority = max(np.mean([y for _, y in sea]), 1 - np.mean([y for _, y in sea]))
    arf_sea = next(r for r in scores if r["stream"] == "SEA" and r["method"].startswith("ARF"))
    assert arf_sea["prequential accuracy"] > majority
    ours = {r["stream"]: r["prequential accuracy"] for r in scores if r["method"].startswith("ours")}
    arf = {r["stream"]: r["prequential accuracy"] for r in scores if r["method"].startswith("ARF")}
    assert [g.name for g in result.goals] == [f"prequential accuracy vs ARF on {s}" for s in ours]
    for goal, stream in zip(result.goals, ours):
        assert math.isclose(goal.value, ours[stream] - arf[stream]) and goal.target == 0.0


@pytest.mark.integration
def test_figures_show_every_method_and_the_drift(quick_result):
    result, lines = quick_result
    assert result.name == "drifting_streams" and result.title == "Drifting streams (River) through Kafka"
    assert [f.stem for f in result.figures] == [s for s in ("sea", "agrawal", "hyperplane")]
    ax = result.figures[0].figure.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    for method in ("ours (OnlineLearner)", "ARF (River)", "HAT (River)", "majority class so far", "true drift"):
        assert method in labels
    drift = next(line for line in ax.get_lines() if line.get_label() == "true drift")
    assert list(drift.get_xdata()) == [result.settings["streams"]["sea"]["drift points (0-based event index)"][0]] * 2
    assert any(line.startswith("[drifting_streams]") for line in lines)
