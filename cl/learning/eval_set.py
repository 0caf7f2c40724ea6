"""The frozen evaluation set behind the forgetting guard.

A fixed share of labelled feedback is *held out*: chosen by a hash of its ``event_id``, so the
learner (which never trains on it) and the rollout controller (which collects it) agree
without talking. Before a challenger is promoted, the champion and the challenger are both
scored on the held-out examples gathered so far; a challenger that has forgotten what the
champion knew scores lower.

Example:
    >>> is_held_out("event-1", 0.0), is_held_out("event-1", 1.0)
    (False, True)
    >>> evals = EvalSet(capacity=2)
    >>> for i in range(3):
    ...     _ = evals.add(Example(f"e{i}", f"r{i}", "predict", "label", features=(0.0,), served_label=0, target=i))
    >>> [ex.target for ex in evals.examples]
    [1, 2]
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import deque
from collections.abc import Sequence
from typing import Any

import torch

from cl.learning.example import Example
from cl.serving.inference import PredictItem, predict_batch
from cl.serving.placement import training_autocast

__all__ = ["EvalSet", "is_held_out", "score_adapter"]


def is_held_out(event_id: str, fraction: float) -> bool:
    """Whether feedback ``event_id`` belongs to the evaluation set (``fraction`` of all ids)."""
    if fraction <= 0:
        return False
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


class EvalSet:
    """The newest ``capacity`` held-out examples with a known right answer (a label target).

    Args:
        capacity: How many examples to keep; older ones drop out.
    """

    def __init__(self, capacity: int = 500) -> None:
        if capacity < 1:
            raise ValueError(f"capacity={capacity} keeps nothing; use 1 or more")
        self.capacity = capacity
        self._examples: deque[Example] = deque(maxlen=capacity)

    def add(self, example: Example) -> bool:
        """Keep ``example`` if it can be scored (a predict with a label target); returns whether kept."""
        if example.kind != "predict" or example.target is None:
            return False
        self._examples.append(example)
        return True

    @property
    def examples(self) -> list[Example]:
        return list(self._examples)

    def __len__(self) -> int:
        return len(self._examples)

    def state_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "examples": [ex.to_dict() for ex in self._examples]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._examples = deque((Example.from_dict(d) for d in state["examples"]), maxlen=self.capacity)


def score_adapter(model: torch.nn.Module, slot: int, examples: Sequence[Example], batch_size: int = 256) -> float:
    """Accuracy of adapter ``slot`` (``-1``: the base) on ``examples`` (NaN if there are none).

    Args:
        model: A serving model whose ``slot`` holds the adapter to score.
        slot: The adapter slot.
        examples: Predict examples with a ``target``.
    """
    if not examples:
        return float("nan")
    correct = 0
    # A learner's model on CUDA has a bfloat16 base and float32 adapters: it runs under autocast.
    mixed = training_autocast(model.device) if model.dtype != torch.float32 else contextlib.nullcontext()
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        items = [PredictItem(text=ex.text, features=ex.features, slot=slot) for ex in chunk]
        with mixed:
            predictions = predict_batch(model, items)
        correct += sum(int(p.label == ex.target) for p, ex in zip(predictions, chunk))
    return correct / len(examples)
