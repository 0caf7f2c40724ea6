"""The dispatch rule, and ``kernels`` without Triton."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from kernels._private.dispatch import check_ids_enabled, triton_usable
from kernels._private.triton_compat import HAS_TRITON

ROOT = Path(__file__).resolve().parents[2]


def test_cpu_tensors_use_reference():
    assert not triton_usable(torch.ones(2), None, (torch.ones(1),))


def test_forced_torch_wins(monkeypatch):
    monkeypatch.setenv("CL_KERNELS", "torch")
    assert not triton_usable(torch.ones(2))


def test_forced_triton_still_respects_autograd(monkeypatch):
    monkeypatch.setenv("CL_KERNELS", "triton")
    w = torch.ones(2, requires_grad=True)
    assert not triton_usable(torch.ones(2), w)
    with torch.no_grad():
        assert triton_usable(torch.ones(2), w)
    assert triton_usable(torch.ones(2), w.detach())


def test_unknown_backend_is_an_error(monkeypatch):
    monkeypatch.setenv("CL_KERNELS", "cuda")
    with pytest.raises(ValueError, match="expected 'torch', 'triton' or 'auto'"):
        triton_usable(torch.ones(2))


@pytest.mark.skipif(not (torch.cuda.is_available() and HAS_TRITON), reason="needs a GPU and Triton")
def test_cuda_tensors_use_triton_unless_grad_needed():
    x = torch.ones(2, device="cuda")
    w = torch.ones(2, device="cuda", requires_grad=True)
    assert triton_usable(x)
    assert not triton_usable(x, w)
    assert not triton_usable(x, torch.ones(2))  # mixed devices: reference
    with torch.no_grad():
        assert triton_usable(x, w)


def test_import_and_references_without_triton():
    """``import triton`` fails (as when it is not installed): references work, launchers say why."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["triton"] = None  # makes ``import triton`` raise ImportError
        import torch, kernels
        from kernels import apply_lora, moe_experts, multi_lora
        x = torch.randn(5, 8); w13 = torch.randn(3, 6, 8); w2 = torch.randn(3, 8, 3)
        ids = torch.tensor([[0, 1], [2, 0], [1, 2], [0, 2], [1, 0]]); wts = torch.rand(5, 2)
        assert moe_experts(x, w13, w2, wts, ids).shape == (5, 8)
        a, b = torch.randn(2, 2, 8), torch.randn(2, 4, 2)
        assert apply_lora(x, a, b, torch.tensor([0, 1, -1, 1, 0]), 1.0).shape == (5, 4)
        try:
            multi_lora(x, a, b, torch.tensor([0, 1, -1, 1, 0]), 1.0)
        except RuntimeError as e:
            assert "Triton is not installed" in str(e), e
        else:
            raise AssertionError("multi_lora ran without Triton")
        print("ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CL_KERNELS", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


@pytest.mark.parametrize(("value", "expected"), [(None, True), ("1", True), ("0", False), ("off", False)])
def test_check_ids_switch(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("CL_KERNELS_CHECK_IDS", raising=False)
    else:
        monkeypatch.setenv("CL_KERNELS_CHECK_IDS", value)
    assert check_ids_enabled() is expected
