"""Adapters apart from the base: find, freeze, copy out, load, save, merge, count.

Every module that implements :class:`~cl.model.lora.AdapterModule` keeps its adapter
tensors banked over slots on dim 0. An adapter *state* is one slot's share of all of them,
keyed ``"<module path>.<tensor name>"`` (e.g. ``blocks.0.attn.q.lora_a``), so it can be
saved with safetensors and loaded into any slot of a model with the same config.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from cl.model._checks import check_slot
from cl.model.lora import AdapterModule

FORMAT = "cl-adapter/1"
"""``format`` metadata written into every adapter file."""


def _adapter_modules(model: nn.Module) -> Iterator[tuple[str, AdapterModule]]:
    for name, module in model.named_modules():
        if isinstance(module, AdapterModule) and module.adapter_tensors():
            yield name, module


def banked_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every adapter bank in ``model``: key -> ``(L, ...)`` tensor (parameters and buffers)."""
    return {
        f"{name}.{key}" if name else key: t
        for name, module in _adapter_modules(model)
        for key, t in module.adapter_tensors().items()
    }


def adapter_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable adapter banks (all slots); everything else is the base.

    All slots share these tensors, so a step touches only the rows of the slots in the
    batch (the others get zero gradient), *except* through weight decay, which shrinks
    every slot: train with ``weight_decay=0`` or in a model whose other slots are unused.
    """
    return [t for t in banked_tensors(model).values() if isinstance(t, nn.Parameter)]


def freeze_base(model: nn.Module) -> None:
    """Set ``requires_grad=False`` on every base parameter and True on adapter parameters."""
    for p in model.parameters():
        p.requires_grad_(False)
    for p in adapter_parameters(model):
        p.requires_grad_(True)


def _n_slots(model: nn.Module) -> int:
    return model.config.n_adapter_slots  # type: ignore[union-attr]


def adapter_state(model: nn.Module, slot: int) -> dict[str, torch.Tensor]:
    """Copy one slot's adapter out of the model.

    Args:
        model: A model with adapter banks (e.g. ``MoETransformer``).
        slot: Slot in ``[0, n_adapter_slots)``.

    Returns:
        Key -> contiguous tensor (a copy, detached from the model).
    """
    check_slot(slot, _n_slots(model))
    return {k: t[slot].detach().clone().contiguous() for k, t in banked_tensors(model).items()}


def load_adapter_state(model: nn.Module, slot: int, state: dict[str, torch.Tensor]) -> None:
    """Write an :func:`adapter_state` dict into ``slot``; nothing changes if a check fails.

    Raises:
        ValueError: Missing or unexpected keys, a non-tensor value, or a shape mismatch;
            the message names the keys.
    """
    check_slot(slot, _n_slots(model))
    banks = banked_tensors(model)
    missing = sorted(set(banks) - set(state))
    unexpected = sorted(set(state) - set(banks))
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    for key in sorted(set(banks) & set(state)):
        value, want = state[key], tuple(banks[key].shape[1:])
        if not isinstance(value, torch.Tensor):
            problems.append(f"{key}: expected a tensor, got {type(value).__name__}")
        elif tuple(value.shape) != want:
            problems.append(f"{key}: expected shape {want}, got {tuple(value.shape)}")
    if problems:
        raise ValueError(
            "adapter state does not fit this model (was it saved from a model with another "
            "config?): " + "; ".join(problems)
        )
    with torch.no_grad():
        for key, bank in banks.items():
            bank[slot].copy_(state[key].to(bank.device, bank.dtype))


def save_adapter(model: nn.Module, path: str | Path, slot: int, metadata: dict[str, str] | None = None) -> None:
    """Save one slot to a safetensors file with the model config in its metadata.

    Args:
        model: Model holding the adapter.
        path: File to write.
        slot: Slot to save.
        metadata: Extra string metadata (e.g. an MLflow run id).
    """
    cfg = model.config  # type: ignore[union-attr]
    meta = {
        "format": FORMAT,
        "lora_rank": str(cfg.lora_rank),
        "lora_alpha": repr(float(cfg.lora_alpha)),
        "config": json.dumps(cfg.to_dict()),
    }
    meta.update({str(k): str(v) for k, v in (metadata or {}).items()})
    save_file(adapter_state(model, slot), str(path), metadata=meta)


def load_adapter(model: nn.Module, path: str | Path, slot: int) -> dict[str, str]:
    """Load a file written by :func:`save_adapter` into ``slot``.

    Returns:
        The file's metadata.

    Raises:
        ValueError: Not an adapter file, LoRA rank/alpha differ from the model's, or the
            tensors do not fit (names the key).
    """
    cfg = model.config  # type: ignore[union-attr]
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        state = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not an adapter file: metadata format={meta.get('format')!r}, expected {FORMAT!r}")
    rank, alpha = int(meta.get("lora_rank", -1)), float(meta.get("lora_alpha", "nan"))
    if rank != cfg.lora_rank or alpha != cfg.lora_alpha:
        raise ValueError(
            f"{path} has lora_rank={meta.get('lora_rank')} lora_alpha={meta.get('lora_alpha')}, "
            f"but the model has lora_rank={cfg.lora_rank} lora_alpha={cfg.lora_alpha}; "
            "build the model with the adapter's config"
        )
    load_adapter_state(model, slot, state)
    return meta


def merge_adapter(model: nn.Module, slot: int) -> None:
    """Fold ``slot`` into the base weights; afterwards base alone == old base + slot.

    The slot's B matrices become zero, so ``slot`` then adds nothing. Other slots stay
    deltas on the *new* base. With int8 experts the merged expert weights are
    re-quantised (a small rounding change).
    """
    check_slot(slot, _n_slots(model))
    for _, module in _adapter_modules(model):
        module.merge_adapter(slot)


def reset_adapter(model: nn.Module, slot: int) -> None:
    """Make ``slot`` a fresh adapter: new random A, zero B, the base's balancing bias."""
    check_slot(slot, _n_slots(model))
    for _, module in _adapter_modules(model):
        module.reset_adapter(slot)


def adapter_fraction(model: nn.Module) -> float:
    """Elements of one adapter slot divided by elements of the base.

    The base is everything in ``state_dict()`` except the adapter banks (int8 expert
    weights count one element each, as do their scales).
    """
    banks = banked_tensors(model)
    per_slot = sum(t[0].numel() for t in banks.values())
    base = sum(t.numel() for k, t in model.state_dict().items() if k not in banks and t is not None)
    return per_slot / base
