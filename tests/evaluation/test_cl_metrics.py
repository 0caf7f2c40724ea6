"""Continual-learning scores on hand-made accuracy matrices, checked against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from cl.evaluation.cl_metrics import (
    average_accuracy,
    average_incremental_accuracy,
    backward_transfer,
    forgetting,
    scores,
)

# Three tasks. Row i: accuracy on tasks 0, 1, 2 after training through task i. The entries
# above the diagonal (0.15, 0.05, 0.2) are tasks not yet seen: no score may read them, except
# forgetting's max over rows i < T-1, which here never picks them.
R3 = [
    [0.90, 0.15, 0.05],
    [0.70, 0.95, 0.20],
    [0.60, 0.80, 0.85],
]


def test_average_accuracy_is_mean_of_last_row():
    assert average_accuracy(R3) == pytest.approx((0.60 + 0.80 + 0.85) / 3)  # 0.75


def test_backward_transfer_by_hand():
    # (R[2][0] - R[0][0] + R[2][1] - R[1][1]) / 2 = (-0.30 - 0.15) / 2
    assert backward_transfer(R3) == pytest.approx(-0.225)


def test_forgetting_by_hand():
    # task 0: max(0.90, 0.70) - 0.60 = 0.30; task 1: max(0.15, 0.95) - 0.80 = 0.15
    assert forgetting(R3) == pytest.approx(0.225)


def test_average_incremental_accuracy_by_hand():
    # steps: 0.90, (0.70 + 0.95) / 2 = 0.825, 0.75
    assert average_incremental_accuracy(R3) == pytest.approx((0.90 + 0.825 + 0.75) / 3)


def test_forgetting_and_bwt_differ_when_a_task_peaks_later():
    # Task 0 improves after task 1 (positive transfer) and then drops: BWT compares with the
    # accuracy just after task 0 (0.5), forgetting with the best one before the end (0.9).
    R = [[0.5, 0.0, 0.0], [0.9, 0.8, 0.0], [0.7, 0.8, 0.9]]
    assert backward_transfer(R) == pytest.approx(((0.7 - 0.5) + (0.8 - 0.8)) / 2)  # +0.1
    assert forgetting(R) == pytest.approx(((0.9 - 0.7) + (0.8 - 0.8)) / 2)  # 0.1


def test_no_forgetting_when_nothing_is_lost():
    R = np.triu(np.ones((4, 4))).T  # 1.0 on and below the diagonal, 0.0 above
    s = scores(R)
    assert (s.average_accuracy, s.backward_transfer, s.forgetting) == (1.0, 0.0, 0.0)
    assert s.average_incremental_accuracy == 1.0


def test_unseen_tasks_below_the_best_seen_score_change_nothing():
    filled = np.array(R3)
    other = filled.copy()
    other[np.triu_indices(3, k=1)] = 0.0
    assert scores(filled) == scores(other)


def test_single_task():
    s = scores([[0.8]])
    assert (s.average_accuracy, s.backward_transfer, s.forgetting) == (0.8, 0.0, 0.0)


@pytest.mark.parametrize("bad", [[[0.5, 0.5]], [0.5, 0.5], [], [[float("nan"), 0.1], [0.2, 0.3]]])
def test_bad_matrices_are_refused(bad):
    with pytest.raises(ValueError, match="accuracy matrix"):
        scores(bad)
