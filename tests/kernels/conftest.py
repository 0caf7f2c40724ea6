"""Fixtures for the kernel tests: devices, the Triton interpreter, fresh random inputs.

The Triton launchers run on the CPU through the interpreter: the ``device``
fixture sets ``TRITON_INTERPRET=1`` for the "cpu" case only (``kernels`` applies
``triton.jit`` at launch time, so the order in which torch, triton and kernels
were imported by the rest of the suite does not matter) and adds a "cuda" case,
compiled for real, when a GPU is present. Scratch buffers of the launchers are
NaN-poisoned (``CL_KERNELS_POISON=1``) so an element a kernel forgets to write
fails the comparison.

Inputs are random and fresh on every run; the seed is printed with the failure
(``KERNELS_TEST_SEED=<seed>`` replays it).
"""

from __future__ import annotations

import os
import secrets

import pytest
import torch


@pytest.fixture(autouse=True)
def _kernel_env(monkeypatch):
    monkeypatch.setenv("CL_KERNELS_POISON", "1")
    monkeypatch.delenv("CL_KERNELS", raising=False)


@pytest.fixture
def seed(request) -> int:
    value = int(os.environ.get("KERNELS_TEST_SEED", secrets.randbelow(2**31)))
    torch.manual_seed(value)
    request.node.user_properties.append(("seed", value))
    print(f"KERNELS_TEST_SEED={value}")  # shown by pytest for failing tests
    return value


_DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=_DEVICES)
def launch_device(request, monkeypatch, seed) -> torch.device:
    """Where the Triton launchers run: the CPU interpreter, or the GPU if present."""
    import triton  # noqa: F401  (a required dependency: fail loudly if missing)

    if request.param == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    else:
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    return torch.device(request.param)


@pytest.fixture
def rnd(seed):
    """Random-input helpers (seeded by the ``seed`` fixture): ``rnd.randn``, ``rnd.ids``, ``rnd.int8``."""

    class _Rnd:
        randn = staticmethod(nonzero_randn)
        ids = staticmethod(ids_covering)
        int8 = staticmethod(nonzero_int8)

    return _Rnd


def nonzero_randn(*shape, dtype=torch.float32, scale=1.0) -> torch.Tensor:
    """Standard normal, kept away from zero so no test passes on a zero input."""
    x = torch.randn(*shape, dtype=torch.float64)
    x = torch.where(x.abs() < 0.05, torch.copysign(torch.full_like(x, 0.05), x), x)
    return (x * scale).to(dtype)


def ids_covering(n: int, low: int, high: int) -> torch.Tensor:
    """(n,) int64 ids in [low, high), every value present at least once (n >= high - low)."""
    ids = torch.randint(low, high, (n,))
    ids[: high - low] = torch.arange(low, high)
    return ids[torch.randperm(n)]


def nonzero_int8(*shape) -> torch.Tensor:
    """int8 in [-127, 127] without zeros."""
    q = torch.randint(1, 128, shape, dtype=torch.int16)
    return (q * (torch.randint(0, 2, shape, dtype=torch.int16) * 2 - 1)).to(torch.int8)
