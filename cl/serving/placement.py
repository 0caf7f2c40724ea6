"""Where the model runs and in which dtype: ``serve.num_gpus``, ``serve.dtype``, ``learner.use_gpu``.

Two steps, both pure. At deploy or launch time :func:`plan_gpus` turns the settings and the GPUs
Ray reports (``ray.cluster_resources()["GPU"]``) into the GPUs one replica and one learner worker
ask Ray for. Inside the process, :func:`resolve_device` and :func:`resolve_dtype` turn that request
and the GPUs the process sees into a ``torch.device`` and a ``torch.dtype``. ``"auto"`` shares the
GPUs between the replicas and the learner workers that may use one (Ray's fractional GPUs only
book a share; a process still uses the whole card), so a one-GPU machine serves and learns on it.
Without a GPU every ``"auto"`` resolves to the CPU, 0 GPUs and float32: today's behaviour.

The helpers below them move a model there: :func:`place_for_serving` casts all of it (the kernels
want one dtype), :func:`place_for_training` keeps the adapters in float32 (master weights) and
casts only the frozen base; :func:`training_autocast` is the autocast a learner's forward runs
under, and :func:`cpu_state` what a snapshot saves.

Example:
    >>> plan_gpus("auto", "auto", replicas=1, workers=1, gpus_reported=0)
    GpuPlan(per_replica=0.0, per_worker=0.0)
    >>> plan_gpus("auto", "auto", replicas=1, workers=1, gpus_reported=1)
    GpuPlan(per_replica=0.5, per_worker=0.5)
    >>> resolve_device(0.5, gpus_visible=1), resolve_device("auto", gpus_visible=0)
    (device(type='cuda'), device(type='cpu'))
    >>> resolve_dtype("auto", torch.device("cuda")), resolve_dtype("auto", torch.device("cpu"))
    (torch.bfloat16, torch.float32)
"""

from __future__ import annotations

import contextlib
from typing import Any, NamedTuple

import torch
from torch import nn

__all__ = [
    "GpuPlan",
    "cpu_state",
    "place_for_serving",
    "place_for_training",
    "plan_gpus",
    "resolve_device",
    "resolve_dtype",
    "training_autocast",
]

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
TRAINING_DTYPE = torch.bfloat16
"""The frozen base's dtype and the autocast dtype of a learner on CUDA (adapters stay float32)."""


class GpuPlan(NamedTuple):
    """GPUs one model replica and one learner worker ask Ray for (0: the CPU)."""

    per_replica: float
    per_worker: float


def plan_gpus(
    num_gpus: float | str, use_gpu: bool | str, *, replicas: int, workers: int, gpus_reported: float
) -> GpuPlan:
    """The GPUs each replica and each learner worker asks for.

    A number (``serve.num_gpus``) or ``True`` (``learner.use_gpu``: one whole GPU per worker) is
    taken as given. ``"auto"`` splits what the explicit settings leave of ``gpus_reported`` evenly
    among the ``"auto"`` processes, at most one GPU each; nothing left means the CPU.

    Args:
        num_gpus: ``serve.num_gpus``: GPUs per replica, or ``"auto"``.
        use_gpu: ``learner.use_gpu``: True, False or ``"auto"``.
        replicas: ``serve.replicas``.
        workers: ``learner.workers``.
        gpus_reported: GPUs in the Ray cluster (``ray.cluster_resources().get("GPU", 0)``).

    Returns:
        The :class:`GpuPlan`.
    """
    fixed_replica = None if num_gpus == "auto" else float(num_gpus)
    fixed_worker = None if use_gpu == "auto" else (1.0 if use_gpu else 0.0)
    taken = (fixed_replica or 0.0) * replicas + (fixed_worker or 0.0) * workers
    sharing = (replicas if fixed_replica is None else 0) + (workers if fixed_worker is None else 0)
    share = min(1.0, max(0.0, gpus_reported - taken) / sharing) if sharing else 0.0
    return GpuPlan(
        per_replica=share if fixed_replica is None else fixed_replica,
        per_worker=share if fixed_worker is None else fixed_worker,
    )


def resolve_device(gpus: float | bool | str, gpus_visible: int) -> torch.device:
    """The torch device of a process that asked Ray for ``gpus`` and sees ``gpus_visible`` GPUs.

    Args:
        gpus: A replica's GPU count, a worker's use-GPU flag, or ``"auto"`` (the GPU if one is visible).
        gpus_visible: ``torch.cuda.device_count()`` in this process.

    Returns:
        ``cuda`` (the process's current device) or ``cpu``.

    Raises:
        ValueError: A GPU was asked for but the process sees none.
    """
    wants = gpus_visible > 0 if gpus == "auto" else bool(gpus) and float(gpus) > 0
    if wants and gpus_visible < 1:
        raise ValueError(
            f"asked for {gpus!r} GPU(s) but this process sees no CUDA device; "
            'set serve.num_gpus = 0 / learner.use_gpu = false, or "auto" to use a GPU only when there is one'
        )
    return torch.device("cuda") if wants else torch.device("cpu")


def resolve_dtype(setting: str, device: torch.device) -> torch.dtype:
    """``serve.dtype`` on ``device``: ``"auto"`` is bfloat16 on CUDA and float32 on the CPU.

    Raises:
        ValueError: An unknown setting (the config validates it first; this is for direct callers).
    """
    if setting == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if setting not in _DTYPES:
        raise ValueError(f"dtype {setting!r} is unknown; use auto, {', '.join(_DTYPES)}")
    return _DTYPES[setting]


def place_for_serving(model: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """Move the whole model, adapter bank included, to ``device`` and ``dtype`` (in place).

    The routers keep their balance bias and load counters in full precision (``Router._apply``).
    """
    return model.to(device=device, dtype=dtype)


def place_for_training(model: nn.Module, device: torch.device) -> nn.Module:
    """Move the model to ``device`` (in place); on CUDA the frozen base becomes bfloat16 and the
    trainable adapter parameters stay float32, the master weights AdamW updates.

    The model must come with its adapters marked trainable (``requires_grad``), as
    ``build_base_model`` builds it.
    """
    model.to(device)
    if device.type != "cuda":
        return model
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad and p.is_floating_point():
                p.data = p.data.to(TRAINING_DTYPE)
    return model


def training_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast a learner's forward and loss run under: bfloat16 on CUDA, none on the CPU."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=TRAINING_DTYPE)
    return contextlib.nullcontext()


def cpu_state(value: Any) -> Any:
    """``value`` with every tensor detached and on the CPU (float32 if it was a lower float):
    what a snapshot saves, whatever device the learner ran on. Dicts, lists and tuples are walked."""
    if isinstance(value, torch.Tensor):
        t = value.detach()
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.float()
        return t.cpu()
    if isinstance(value, dict):
        return {k: cpu_state(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(cpu_state(v) for v in value)
    return value
