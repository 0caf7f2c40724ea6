"""Fixtures for the model tests: tiny seeded models and random adapters."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from cl.model import ByteTokenizer, ModelConfig, MoETransformer
from cl.model.adapters import banked_tensors


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny matmuls run fastest on one thread, and the CPU is shared with other jobs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cfg() -> ModelConfig:
    """The tiny preset with 3 labels (so label logits are not symmetric by chance)."""
    return ModelConfig.preset("tiny", n_labels=3)


@pytest.fixture
def model(cfg: ModelConfig) -> MoETransformer:
    """A tiny model in eval mode, seeded."""
    torch.manual_seed(1234)
    return MoETransformer(cfg).eval()


@pytest.fixture
def tok() -> ByteTokenizer:
    return ByteTokenizer()


def _randomize(model: MoETransformer, slot: int, std: float = 0.2, seed: int = 0) -> None:
    """Give every adapter tensor of ``slot`` (B included) random non-zero values."""
    g = torch.Generator().manual_seed(seed + 1000 * slot)
    with torch.no_grad():
        for name, bank in banked_tensors(model).items():
            noise = torch.randn(bank[slot].shape, generator=g) * std
            bank[slot].copy_(noise)


@pytest.fixture
def randomize_adapter() -> Callable[..., None]:
    """``randomize_adapter(model, slot, std=0.2, seed=0)``: random A, B and balance bias."""
    return _randomize


def random_tokens(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """``(batch, length)`` random byte ids (never PAD or other specials)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, length), generator=g)


@pytest.fixture
def tokens() -> Callable[..., torch.Tensor]:
    """``tokens(batch, length, seed=0)`` -> random byte ids."""
    return random_tokens
