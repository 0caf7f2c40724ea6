"""Optional Triton import and a late-binding ``jit`` decorator.

``kernels`` must import on machines without Triton (or without a GPU), and the
Triton interpreter (``TRITON_INTERPRET=1``) must work even when the variable is
set *after* this package was imported: ``triton.jit`` decides between compiling
and interpreting at decoration time, so :func:`lazy_jit` postpones that choice
to the first launch and keeps one compiled object per mode.

Caveat: the helpers of ``triton.language.standard`` (``tl.zeros``, ``tl.sigmoid``,
``tl.cdiv``, ...) are themselves ``@jit`` functions, bound to one mode when
``triton`` is first imported. Kernels here therefore use only the core builtins
(``tl.full`` instead of ``tl.zeros``, ``tl.exp`` for SiLU), which the interpreter
patches at launch, so they run interpreted whatever the import order.
"""

from __future__ import annotations

import os
import types
from typing import Any, Callable

import torch

try:  # Triton is optional: a CPU-only install still gets the torch references.
    import triton
    import triton.language as tl

    HAS_TRITON = True
except Exception:  # ImportError, or a broken install that fails on import
    triton = None
    # Only ``tl.constexpr`` is evaluated when the kernels are defined (as an
    # annotation); their bodies never run without Triton.
    tl = types.SimpleNamespace(constexpr="constexpr")
    HAS_TRITON = False

__all__ = [
    "HAS_TRITON",
    "cdiv",
    "check_launch_device",
    "interpreting",
    "lazy_jit",
    "next_pow2",
    "scratch",
    "tl",
    "triton",
]

_INTERPRETER_DTYPES = (torch.float32, torch.float16)
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def interpreting() -> bool:
    """Whether Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


class lazy_jit:  # noqa: N801 - used as a decorator, like ``triton.jit``
    """``triton.jit`` applied at first launch, once per interpreter mode.

    Args:
        fn: The kernel function, written exactly as for ``@triton.jit``.

    Example:
        >>> @lazy_jit
        ... def _noop_kernel(x_ptr):
        ...     pass
        >>> _noop_kernel.__name__
        '_noop_kernel'
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__
        self._compiled: dict[bool, Any] = {}

    def jitted(self) -> Any:
        """The ``triton.jit`` object for the current mode (compiled or interpreted)."""
        if triton is None:
            raise RuntimeError(f"{self.__name__}: Triton is not installed; use the *_ref function instead")
        mode = interpreting()
        kernel = self._compiled.get(mode)
        if kernel is None:
            kernel = self._compiled[mode] = triton.jit(self.fn)
        return kernel

    def __getitem__(self, grid: Any) -> Any:
        return self.jitted()[grid]


def check_launch_device(name: str, tensors: dict[str, torch.Tensor]) -> torch.device:
    """Checks that Triton can run on the tensors' device and returns it.

    Args:
        name: Launcher name, for the error message.
        tensors: Argument name -> tensor; all must share one device.

    Returns:
        The common device.

    Raises:
        RuntimeError: Triton is not installed.
        ValueError: Tensors on different devices, float64 tensors, CPU tensors
            without ``TRITON_INTERPRET=1``, or a dtype the interpreter cannot run.
    """
    if triton is None:
        raise RuntimeError(f"{name}: Triton is not installed; call the torch reference instead")
    devices = {arg: t.device for arg, t in tensors.items()}
    first = next(iter(devices.values()))
    if any(d != first for d in devices.values()):
        raise ValueError(f"{name}: expected all tensors on one device, got {devices}")
    wide = {arg: t.dtype for arg, t in tensors.items() if t.is_floating_point() and t.dtype not in _KERNEL_DTYPES}
    if wide:
        raise ValueError(f"{name}: expected float32/float16/bfloat16 tensors, got {wide}; use the *_ref function")
    if first.type != "cuda":
        if not interpreting():
            raise ValueError(
                f"{name}: expected CUDA tensors (got {first}); set TRITON_INTERPRET=1 to run on the CPU interpreter"
            )
        bad = {a: t.dtype for a, t in tensors.items() if t.is_floating_point() and t.dtype not in _INTERPRETER_DTYPES}
        if bad:
            raise ValueError(f"{name}: the Triton CPU interpreter supports float32/float16 only, got {bad}")
    return first


def poison_buffers() -> bool:
    """Whether launchers fill their scratch buffers with NaN (``CL_KERNELS_POISON=1``, for tests)."""
    return os.environ.get("CL_KERNELS_POISON", "0") == "1"


def scratch(shape: tuple[int, ...], *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised buffer, or a NaN-filled one when :func:`poison_buffers` is on."""
    if poison_buffers():
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def cdiv(n: int, d: int) -> int:
    """Ceiling division (``triton.cdiv`` without needing Triton)."""
    return -(-n // d)


def next_pow2(n: int) -> int:
    """Smallest power of two >= ``n`` (1 for ``n <= 1``)."""
    return 1 << max(0, (n - 1).bit_length())
