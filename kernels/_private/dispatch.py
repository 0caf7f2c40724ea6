"""The one rule that decides between a Triton launcher and its torch reference."""

from __future__ import annotations

import os
from typing import Any, Iterable

import torch

from kernels._private.triton_compat import HAS_TRITON

__all__ = ["autocast_operands", "backend_override", "check_ids_enabled", "triton_usable"]

_ENV = "CL_KERNELS"


def backend_override() -> str | None:
    """The backend forced by ``CL_KERNELS`` (``"torch"`` or ``"triton"``), or ``None``.

    Raises:
        ValueError: ``CL_KERNELS`` holds anything else.
    """
    value = os.environ.get(_ENV, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value not in ("torch", "triton"):
        raise ValueError(f"{_ENV}={value!r}: expected 'torch', 'triton' or 'auto' (or unset)")
    return value


def check_ids_enabled() -> bool:
    """Whether dispatchers range-check ids before a launch (``CL_KERNELS_CHECK_IDS``, default on).

    The check costs one device-to-host sync per call; serving with ids straight
    from ``topk`` may turn it off (``CL_KERNELS_CHECK_IDS=0``) to keep the decode
    path sync-free and CUDA-graph capturable.
    """
    return os.environ.get("CL_KERNELS_CHECK_IDS", "1").strip().lower() not in ("0", "false", "no", "off")


_AUTOCAST_ELIGIBLE = (torch.float32, torch.float16, torch.bfloat16)


def autocast_operands(*tensors: Any) -> tuple[Any, ...]:
    """The float operands cast to the autocast dtype when ``torch.autocast`` is on for their device.

    What autocast does to a matmul's operands, done once at the dispatch point, so that the
    kernels' one-dtype checks hold in a mixed-precision forward (a bfloat16 base with float32
    adapters): the casts are differentiable, so float32 master weights get float32 gradients.
    ``None``, integer tensors and float64 pass through; without autocast nothing changes.
    """
    first = next((t for t in tensors if isinstance(t, torch.Tensor)), None)
    if first is None or not torch.is_autocast_enabled(first.device.type):
        return tensors
    dtype = torch.get_autocast_dtype(first.device.type)
    return tuple(t.to(dtype) if isinstance(t, torch.Tensor) and t.dtype in _AUTOCAST_ELIGIBLE else t for t in tensors)


def _flatten(items: Iterable[Any]) -> list[torch.Tensor]:
    tensors = []
    for item in items:
        if isinstance(item, torch.Tensor):
            tensors.append(item)
        elif isinstance(item, (list, tuple)):
            tensors.extend(_flatten(item))
    return tensors


def triton_usable(*tensors: Any) -> bool:
    """Whether a dispatcher should call the Triton launcher for these inputs.

    True when Triton is importable, every tensor is on CUDA, and no autograd graph
    is needed (grad mode off, or no input requires grad). ``CL_KERNELS=torch``
    forces False; ``CL_KERNELS=triton`` skips the device test (e.g. to exercise a
    launcher under ``TRITON_INTERPRET=1`` on the CPU) but never the autograd one,
    since the launchers have no backward. ``None`` and non-tensors are skipped;
    lists and tuples are searched.

    Args:
        *tensors: The kernel's inputs.

    Returns:
        True to launch Triton, False to run the torch reference.

    Raises:
        ValueError: ``CL_KERNELS`` is set to an unknown value.

    Example:
        >>> import torch
        >>> triton_usable(torch.ones(2))  # CPU tensor
        False
    """
    forced = backend_override()
    if forced == "torch":
        return False
    flat = _flatten(tensors)
    if torch.is_grad_enabled() and any(t.requires_grad for t in flat):
        return False
    if forced == "triton":
        return True  # the launcher raises a clear error if Triton is missing
    return HAS_TRITON and bool(flat) and all(t.is_cuda for t in flat)
