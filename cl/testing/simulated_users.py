"""Simulated users for the demo and tests: a hidden labelling rule that can change its mind.

Pure numpy: each user query is a feature vector; the users' "true" label is the argmax of a
fixed random linear teacher, and after ``shift()`` the users permute what they call each
class (a concept drift). Feedback is a corrected label with probability ``label_rate``,
else thumbs up/down on what was served.

Example:
    >>> users = SimulatedUsers(n_features=8, n_labels=4, seed=0)
    >>> x = users.query()
    >>> len(x), users.truth(x) in range(4)
    (8, True)
    >>> before = users.truth(x); users.shift(); users.truth(x) != before
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["SimulatedUsers"]


class SimulatedUsers:
    """A population of users with one shared, switchable labelling rule.

    Args:
        n_features: length of each feature vector.
        n_labels: number of classes.
        seed: seeds the teacher and the queries.
        label_rate: probability that feedback is a corrected label rather than thumbs.
    """

    def __init__(self, n_features: int, n_labels: int, seed: int = 0, label_rate: float = 0.5):
        self.n_features = n_features
        self.n_labels = n_labels
        self.seed = seed
        self.label_rate = label_rate
        self._rng = np.random.default_rng(seed)
        self._teacher = self._rng.normal(size=(n_labels, n_features))
        self._perm = np.arange(n_labels)
        self.shifts = 0

    def query(self) -> list[float]:
        """A new feature vector, as a JSON-friendly list."""
        return [round(float(v), 4) for v in self._rng.normal(size=self.n_features)]

    def truth(self, features: list[float]) -> int:
        """The label the users currently want for ``features``."""
        return int(self._perm[int(np.argmax(self._teacher @ np.asarray(features)))])

    def shift(self) -> None:
        """The users change their minds: every class is renamed (a cyclic permutation)."""
        self._perm = np.roll(self._perm, 1)
        self.shifts += 1

    def feedback(self, features: list[float], served_label: int) -> dict[str, Any]:
        """The feedback body a user posts about ``served_label`` (without ``request_id``)."""
        truth = self.truth(features)
        if self._rng.random() < self.label_rate:
            return {"label": truth}
        return {"thumbs": "up" if served_label == truth else "down"}
