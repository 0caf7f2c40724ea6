"""Fixtures for the serving tests: a tiny base model and random adapters that change outputs."""

from __future__ import annotations

import pytest
import torch

from cl.config import ModelSection


@pytest.fixture(scope="session")
def section() -> ModelSection:
    return ModelSection(preset="tiny", seed=0, n_features=6, n_labels=3, lora_rank=4)


def random_adapter(template: dict[str, torch.Tensor], seed: int, scale: float = 0.5) -> dict[str, torch.Tensor]:
    """An adapter state shaped like ``template`` with random, non-zero A and B."""
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g, dtype=v.dtype) * scale for k, v in template.items()}
