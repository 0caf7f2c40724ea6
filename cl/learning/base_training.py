"""Train the base model itself (all of its weights, not an adapter) on labelled examples.

What ``learners.retrain --train-base`` does before it trains an adapter on top: a random
seeded base caps what a rank-4 adapter can reach, and a base trained on the service's own
data (or a dataset file) lifts it. The result is saved as safetensors; setting
``model.base_weights`` to it makes every learner and replica build that base.

Example:
    >>> from cl.config import ModelSection
    >>> from cl.model.base_model import build_base_model
    >>> model = build_base_model(ModelSection())
    >>> rows = [Example(f"e{i}", "r", "predict", "label", features=(float(i % 2),) * 8, served_label=0, target=i % 2)
    ...         for i in range(64)]
    >>> losses = train_base(model, rows, epochs=3, lr=1e-2, say=lambda line: None)
    >>> losses[-1] < losses[0], all(not p.requires_grad for p in base_parameters(model))
    (True, True)
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch

from cl.learning.example import Example, encode_examples

__all__ = ["base_parameters", "train_base"]


def base_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters that are not adapters (they have ``requires_grad=False`` in a served model)."""
    adapters = {id(p) for p in model.adapter_parameters()}
    return [p for p in model.parameters() if id(p) not in adapters]


def train_base(
    model: torch.nn.Module,
    examples: Sequence[Example],
    *,
    epochs: int = 3,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
    say: Callable[[str], None] = print,
) -> list[float]:
    """Cross-entropy on the classify head through the base alone (adapter id -1); returns the
    mean loss of each epoch. Only examples with a class ``target`` are used."""
    rows = [ex for ex in examples if ex.target is not None]
    if not rows:
        raise ValueError("no labelled examples to train the base on; give label feedback or a dataset with labels")
    params = base_parameters(model)
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    rng, losses = random.Random(seed), []
    try:
        for epoch in range(1, epochs + 1):
            order = list(rows)
            rng.shuffle(order)
            total, n = 0.0, 0
            model.train()
            for start in range(0, len(order), batch_size):
                for group in encode_examples(
                    order[start : start + batch_size], model.config.max_seq_len, model.tokenizer
                ):
                    inputs = {"tokens": group.tokens} if group.tokens is not None else {"features": group.features}
                    ids = torch.full((len(group.rows),), -1, dtype=torch.long)
                    logits = model(**inputs, adapter_ids=ids, head="classify")  # (B, C)
                    loss = torch.nn.functional.cross_entropy(logits, group.targets)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    total, n = total + loss.item() * len(group.rows), n + len(group.rows)
            losses.append(total / n)
            say(f"base: epoch {epoch}/{epochs}: loss {losses[-1]:.4f} over {n:,} labelled examples")
    finally:
        for p in params:
            p.requires_grad_(False)
            p.grad = None
        model.eval()
    return losses
