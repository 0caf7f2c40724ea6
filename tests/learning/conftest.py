"""Fixtures for the learner-core tests: one thread, a seeded tiny base, a synthetic stream.

The stream is tabular: 8 standard-normal features, 4 labels given by a fixed random
linear teacher (``argmax(x @ W)``), optionally with shifted inputs or permuted classes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest
import torch

from cl.config import LearnerConfig, ModelSection
from cl.learning.example import Example
from cl.learning.online_learner import OnlineLearner
from cl.model.base_model import build_base_model

N_FEATURES, N_LABELS = 8, 4
LR = 5e-3  # the config default; on this stream 1e-2 is slower and 2e-2 unstable


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny matmuls run fastest on one thread, and the CPU is shared with other jobs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Synth:
    """A fixed random linear teacher and helpers that turn its data into examples.

    Args:
        seed: Seeds the teacher's weights and the input generator.
    """

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.W = self.rng.normal(size=(N_FEATURES, N_LABELS))  # (F, C)
        self.count = 0

    def sample(
        self,
        n: int,
        *,
        mean: float | np.ndarray = 0.0,
        perm: Sequence[int] | None = None,
        W: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``n`` inputs ``(n, F)`` around ``mean`` and their labels ``(n,)`` (classes permuted by ``perm``)."""
        X = self.rng.normal(size=(n, N_FEATURES)) + mean
        y = (X @ (self.W if W is None else W)).argmax(1)
        if perm is not None:
            y = np.asarray(perm)[y]
        return X, y

    def _ids(self) -> tuple[str, str]:
        self.count += 1
        return f"fb-{self.count}", f"req-{self.count}"

    def labels(self, X: np.ndarray, y: np.ndarray, served: Sequence[int] | None = None) -> list[Example]:
        """Label feedback; ``served`` defaults to always 0."""
        served = [0] * len(X) if served is None else served
        out = []
        for x, t, s in zip(X, y, served):
            eid, rid = self._ids()
            out.append(
                Example(
                    eid,
                    rid,
                    "predict",
                    "label",
                    features=tuple(map(float, x)),
                    served_label=int(s),
                    target=int(t),
                    user_id="u",
                    model_version="1",
                )
            )
        return out

    def thumbs(self, X: np.ndarray, served: Sequence[int], desirable: Sequence[bool | None]) -> list[Example]:
        """Thumbs (or, where ``desirable`` is None, a 3-star rating) on served labels."""
        out = []
        for x, s, d in zip(X, served, desirable):
            eid, rid = self._ids()
            signal = "rating" if d is None else "thumbs"
            out.append(
                Example(
                    eid,
                    rid,
                    "predict",
                    signal,
                    features=tuple(map(float, x)),
                    served_label=int(s),
                    desirable=d,
                    user_id="u",
                    model_version="1",
                )
            )
        return out


@pytest.fixture
def synth() -> Synth:
    return Synth(seed=0)


def learner_config(**overrides) -> LearnerConfig:
    """The tests' learner settings: the default config at the stream's learning rate, nothing held out."""
    return LearnerConfig(**{"lr": LR, "batch_size": 16, "holdout_fraction": 0.0, **overrides})


@pytest.fixture
def make_learner() -> Callable[..., OnlineLearner]:
    """``make_learner(seed=0, slots=1, branch_source=None, **config)``: a learner on a fresh tiny base."""

    def make(seed: int = 0, slots: int = 1, branch_source=None, **overrides) -> OnlineLearner:
        model = build_base_model(ModelSection(), n_adapter_slots=slots)
        return OnlineLearner(model, learner_config(**overrides), seed=seed, branch_source=branch_source)

    return make


@torch.no_grad()
def predict(learner: OnlineLearner, X: np.ndarray) -> np.ndarray:
    """What a replica serving the learner's adapter would answer: ``(n,)`` labels."""
    probs = predict_proba(learner, X)
    return probs.argmax(1)


@torch.no_grad()
def predict_proba(learner: OnlineLearner, X: np.ndarray) -> np.ndarray:
    """``(n, C)`` class probabilities of the learner's adapter, in eval mode."""
    model = learner.model
    model.eval()
    ids = torch.full((len(X),), learner.slot, dtype=torch.long)
    logits = model(features=torch.as_tensor(X, dtype=torch.float32), adapter_ids=ids)
    return logits.softmax(-1).numpy()


def feed(learner: OnlineLearner, examples: list[Example], batch: int = 16) -> list:
    """Learn ``examples`` in micro-batches of ``batch``; returns the step reports."""
    return [learner.learn(examples[i : i + batch]) for i in range(0, len(examples), batch)]


@pytest.fixture
def helpers():
    """``predict``, ``predict_proba`` and ``feed`` as attributes (importlib mode cannot import conftest)."""

    class H:
        pass

    H.predict, H.predict_proba, H.feed, H.config = (
        staticmethod(predict),
        staticmethod(predict_proba),
        staticmethod(feed),
        staticmethod(learner_config),
    )
    return H
