"""Split and permuted digits: the task construction, then the quick protocol end to end."""

from __future__ import annotations

import numpy as np
import pytest

from cl.evaluation import digits
from cl.evaluation.result import ProtocolResult


@pytest.fixture(scope="module")
def data() -> digits.DigitsData:
    return digits.load_digits_data(seed=0)


def test_split_is_stratified_and_standardised_on_train_only(data):
    assert len(data.y_train) + len(data.y_test) == 1797
    assert np.bincount(data.y_test).min() >= 50  # every class in the test set, ~30% of each
    assert np.allclose(data.x_train.mean(0), 0.0, atol=1e-5)
    assert not np.allclose(data.x_test.mean(0), 0.0, atol=1e-3)  # test statistics were not used
    small = digits.load_digits_data(seed=0, train_per_class=5, test_per_class=3)
    assert np.bincount(small.y_train).tolist() == [5] * 10 and np.bincount(small.y_test).tolist() == [3] * 10


def test_split_tasks_are_disjoint_class_pairs(data):
    tasks = digits.split_tasks(data)
    assert [sorted(set(t.y_train)) for t in tasks] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert [sorted(set(t.y_test)) for t in tasks] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert sum(len(t.y_train) for t in tasks) == len(data.y_train)


def test_permuted_tasks_permute_pixels_and_keep_everything_else(data):
    tasks = digits.permuted_tasks(data, seed=0)
    assert len(tasks) == 5
    assert np.array_equal(tasks[0].x_train, data.x_train)  # task 0 is the identity
    for t in tasks[1:]:
        assert np.array_equal(t.y_train, data.y_train) and np.array_equal(t.y_test, data.y_test)
        assert not np.array_equal(t.x_train, data.x_train)
        # the same pixels per image, reordered by one permutation shared by train and test
        assert np.array_equal(np.sort(t.x_train, axis=1), np.sort(data.x_train, axis=1))
        perm = [int(np.flatnonzero((data.x_train.T == col).all(1))[0]) for col in t.x_train.T[:3]]
        assert np.array_equal(t.x_test[:, :3], data.x_test[:, perm])
    assert np.array_equal(tasks[2].x_train, digits.permuted_tasks(data, seed=0)[2].x_train)  # seeded


@pytest.fixture(scope="module")
def quick() -> ProtocolResult:
    return digits.run(quick=True, say=lambda line: None)


def _table(result, title):
    table = next(t for t in result.tables if t.title == title)
    return {row[0]: dict(zip(table.columns, row)) for row in table.rows}


def test_quick_run_has_its_goals_tables_and_figures(quick):
    assert (quick.name, quick.title, quick.quick) == ("digits", "Split and permuted digits", True)
    assert [(g.target, g.higher_is_better) for g in quick.goals] == [(0.92, True), (0.90, True)]
    assert all(0.0 <= g.value <= 1.0 for g in quick.goals)
    assert [t.title for t in quick.tables[:2]] == list(digits.SCENARIOS.values())
    for title in digits.SCENARIOS.values():
        assert set(_table(quick, title)) == {"naive fine-tuning", "joint (upper bound)", "reservoir replay (ours)"}
    assert [f.stem for f in quick.figures] == ["split_matrices", "permuted_matrices", "accuracy"]
    assert all(f.figure.axes for f in quick.figures)
    assert quick.summary and quick.settings["seed"] == 0


def test_goal_is_reservoir_replays_average_accuracy(quick):
    for goal, title in zip(quick.goals, digits.SCENARIOS.values()):
        assert goal.value == pytest.approx(_table(quick, title)["reservoir replay (ours)"]["ACC"])


def test_class_incremental_ordering(quick):
    split = _table(quick, digits.SCENARIOS["split"])
    naive, joint, replay = split["naive fine-tuning"], split["joint (upper bound)"], split["reservoir replay (ours)"]
    assert joint["ACC"] > naive["ACC"]
    assert naive["forgetting"] > replay["forgetting"]
    assert naive["BWT"] < replay["BWT"]


def test_replay_adds_replay_ratio_rows_per_new_one(quick):
    ratio = digits.LEARNER["replay_ratio"]
    for title in digits.SCENARIOS.values():
        table = _table(quick, title)
        naive, replay = table["naive fine-tuning"], table["reservoir replay (ours)"]
        full = (1 + ratio) * naive["rows trained"]
        # Only the first few micro-batches find the buffer holding fewer than ratio x batch examples.
        short = digits.LEARNER["batch_size"] * ratio * (ratio + 1) / 2
        assert full - short <= replay["rows trained"] <= full


def test_quick_result_writes_a_report(quick, tmp_path):
    from cl.evaluation.report import write_report

    text = write_report(quick, tmp_path).read_text()
    assert "## Goals" in text and "## Split digits (class-incremental)" in text
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "digits-accuracy.png",
        "digits-permuted_matrices.png",
        "digits-split_matrices.png",
    ]
