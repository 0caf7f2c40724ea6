"""Continual-learning scores of an accuracy matrix (Lopez-Paz & Ranzato, 2017; Chaudhry et al., 2018).

``R[i, j]`` is the test accuracy on task ``j`` after training through task ``i`` (``T`` tasks,
so ``R`` is ``(T, T)``). Entries above the diagonal (tasks not yet seen) may be filled in but
no score here reads them.

Example:
    >>> R = [[0.9, 0.1], [0.6, 0.8]]
    >>> s = scores(R)
    >>> round(s.average_accuracy, 2), round(s.backward_transfer, 2), round(s.forgetting, 2)
    (0.7, -0.3, 0.3)
    >>> round(s.average_incremental_accuracy, 3)
    0.8
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "CLScores",
    "average_accuracy",
    "average_incremental_accuracy",
    "backward_transfer",
    "forgetting",
    "scores",
]


def _matrix(R: object) -> np.ndarray:
    """``R`` as a float ``(T, T)`` array; raise naming the problem otherwise."""
    m = np.asarray(R, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise ValueError(
            f"an accuracy matrix must be square (T, T) with T >= 1, got shape {m.shape}; "
            "row i holds the accuracy on every task after training through task i"
        )
    lower = m[np.tril_indices(m.shape[0])]
    if not np.all(np.isfinite(lower)):
        raise ValueError(
            "the accuracy matrix has NaN or infinity on or below the diagonal; fill in every R[i][j], j <= i"
        )
    return m


def average_accuracy(R: object) -> float:
    """Mean accuracy over all tasks after the last one: ``mean_j R[T-1, j]``."""
    m = _matrix(R)
    return float(m[-1].mean())


def backward_transfer(R: object) -> float:
    """BWT: ``mean_{j<T-1} (R[T-1, j] - R[j, j])``; negative means forgetting. 0.0 when ``T == 1``."""
    m = _matrix(R)
    T = m.shape[0]
    if T == 1:
        return 0.0
    return float(np.mean([m[-1, j] - m[j, j] for j in range(T - 1)]))


def forgetting(R: object) -> float:
    """Average forgetting: ``mean_{j<T-1} (max_{i<T-1} R[i, j] - R[T-1, j])``. 0.0 when ``T == 1``.

    The maximum runs over rows ``i < T-1`` including those before task ``j`` was trained
    (as the definition has it); with ``R[i, j]`` of unseen tasks near chance this changes
    nothing in practice.
    """
    m = _matrix(R)
    T = m.shape[0]
    if T == 1:
        return 0.0
    return float(np.mean([m[: T - 1, j].max() - m[-1, j] for j in range(T - 1)]))


def average_incremental_accuracy(R: object) -> float:
    """Mean over steps ``i`` of the average accuracy on the tasks seen so far: ``mean_i mean_{j<=i} R[i, j]``."""
    m = _matrix(R)
    return float(np.mean([m[i, : i + 1].mean() for i in range(m.shape[0])]))


@dataclass(frozen=True)
class CLScores:
    """All scores of one accuracy matrix."""

    average_accuracy: float
    backward_transfer: float
    forgetting: float
    average_incremental_accuracy: float


def scores(R: object) -> CLScores:
    """Every score of :mod:`cl.evaluation.cl_metrics` for accuracy matrix ``R`` ``(T, T)``.

    Raises:
        ValueError: ``R`` is not square or has non-finite entries on or below the diagonal.
    """
    return CLScores(
        average_accuracy=average_accuracy(R),
        backward_transfer=backward_transfer(R),
        forgetting=forgetting(R),
        average_incremental_accuracy=average_incremental_accuracy(R),
    )
