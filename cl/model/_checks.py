"""Input checks shared by the model and generation; every error names expected and got."""

from __future__ import annotations

import torch

HEADS = ("classify", "lm")


def check_head(head: str) -> None:
    """Raise ``ValueError`` unless ``head`` is ``"classify"`` or ``"lm"``."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")


def check_tokens(tokens: object, vocab_size: int, pad_id: int | None = None) -> torch.Tensor:
    """Validate token ids.

    Args:
        tokens: Expected a ``(B, T)`` integer tensor with values in ``[0, vocab_size)``.
        vocab_size: Size of the vocabulary.
        pad_id: The padding id, allowed too (it may be ``vocab_size``, an id no token has).

    Returns:
        The ids as int64.

    Raises:
        ValueError: Not a tensor, wrong rank/dtype, empty, or ids out of range.
    """
    if not isinstance(tokens, torch.Tensor):
        raise ValueError(f"tokens must be a torch.Tensor of shape (B, T), got {type(tokens).__name__}")
    if tokens.dim() != 2:
        raise ValueError(f"tokens must have shape (B, T), got shape {tuple(tokens.shape)}")
    if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
        raise ValueError(f"tokens must be an integer tensor (int64), got dtype {tokens.dtype}")
    if tokens.numel() == 0:
        raise ValueError(f"tokens must have B >= 1 and T >= 1, got shape {tuple(tokens.shape)}")
    lo, hi = int(tokens.min()), int(tokens.max())
    if lo < 0 or (hi >= vocab_size and hi != pad_id):
        raise ValueError(f"token ids must lie in [0, {vocab_size}) (vocab_size), got values in [{lo}, {hi}]")
    return tokens.long()


def check_features(features: object, n_features: int) -> torch.Tensor:
    """Validate a feature batch: a finite float ``(B, n_features)`` tensor.

    Raises:
        ValueError: The model has no feature input, or wrong type/rank/dtype/width, or
            non-finite values.
    """
    if n_features == 0:
        raise ValueError("this model takes no features (config n_features=0); pass tokens= instead")
    if not isinstance(features, torch.Tensor):
        raise ValueError(f"features must be a torch.Tensor of shape (B, {n_features}), got {type(features).__name__}")
    if features.dim() != 2 or features.shape[1] != n_features or features.shape[0] == 0:
        raise ValueError(f"features must have shape (B, {n_features}) with B >= 1, got shape {tuple(features.shape)}")
    if not features.dtype.is_floating_point:
        raise ValueError(f"features must be a floating-point tensor, got dtype {features.dtype}")
    if not bool(torch.isfinite(features).all()):
        raise ValueError("features must be finite; got NaN or inf (impute missing values first)")
    return features


def check_adapter_ids(adapter_ids: object, batch_size: int, n_slots: int) -> torch.Tensor | None:
    """Validate per-row adapter ids: ``(B,)`` integers in ``[-1, n_slots)``, or ``None``.

    Raises:
        ValueError: Wrong type/shape/dtype or an unknown slot.
    """
    if adapter_ids is None:
        return None
    if not isinstance(adapter_ids, torch.Tensor):
        raise ValueError(
            f"adapter_ids must be a torch.Tensor of shape ({batch_size},) or None, got {type(adapter_ids).__name__}"
        )
    if adapter_ids.shape != (batch_size,):
        raise ValueError(f"adapter_ids must have shape ({batch_size},), one per row, got {tuple(adapter_ids.shape)}")
    if adapter_ids.dtype.is_floating_point or adapter_ids.dtype.is_complex or adapter_ids.dtype == torch.bool:
        raise ValueError(f"adapter_ids must be an integer tensor (int64), got dtype {adapter_ids.dtype}")
    lo, hi = int(adapter_ids.min()), int(adapter_ids.max())
    if lo < -1 or hi >= n_slots:
        raise ValueError(
            f"adapter_ids must lie in [-1, {n_slots}) (-1 = base only, n_adapter_slots={n_slots}), "
            f"got values in [{lo}, {hi}]"
        )
    return adapter_ids.long()


def check_slot(slot: object, n_slots: int) -> int:
    """Validate one adapter slot index in ``[0, n_slots)``."""
    if isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < n_slots:
        raise ValueError(f"adapter slot must be an int in [0, {n_slots}), got {slot!r}")
    return slot
