"""The service's frozen base model, built the same way by every learner and replica.

The base is initialised from a seed rather than shipped as weights, so a learner and a replica
that agree on ``[model]`` hold bit-identical bases; ``ModelSection.base_version`` names it and
every adapter version records it in its ``base_version`` tag. A trained base
(``model.base_weights``, a safetensors file from ``learners.retrain --train-base``) replaces
the seeded weights; its digest is part of ``base_version``, so adapters of one base are never
served on another.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cl.config import ModelSection
from cl.model.config import ModelConfig
from cl.model.tokenizer import ByteTokenizer, Tokenizer
from cl.model.transformer import MoETransformer

__all__ = [
    "base_model_config",
    "base_state",
    "build_base_model",
    "build_tokenizer",
    "load_base_weights",
    "save_base_weights",
]


def build_tokenizer(section: ModelSection) -> Tokenizer:
    """The tokenizer of the base that ``section`` names: the checkpoint's own, or the byte tokenizer."""
    if not section.checkpoint:
        return ByteTokenizer()
    from cl.model.checkpoint_tokenizer import CheckpointTokenizer

    cfg = base_model_config(section)
    return CheckpointTokenizer(section.checkpoint, cfg.vocab_size, cfg.bos_id, cfg.eos_ids)


def base_model_config(section: ModelSection, n_adapter_slots: int = 1) -> ModelConfig:
    """The ``ModelConfig`` for ``section`` with room for ``n_adapter_slots`` adapters."""
    if section.checkpoint:
        from cl.model.checkpoint import read_checkpoint_config

        spec = read_checkpoint_config(section.checkpoint)
        return ModelConfig(
            **spec.fields,
            n_features=section.n_features,
            n_labels=section.n_labels,
            lora_rank=section.lora_rank,
            lora_alpha=2.0 * section.lora_rank,
            n_adapter_slots=n_adapter_slots,
            never_sampled=(),
        )
    return ModelConfig.preset(
        section.preset,
        n_features=section.n_features,
        n_labels=section.n_labels,
        lora_rank=section.lora_rank,
        lora_alpha=2.0 * section.lora_rank,
        n_adapter_slots=n_adapter_slots,
    )


def build_base_model(section: ModelSection, n_adapter_slots: int = 1) -> MoETransformer:
    """A seeded base with zeroed adapters in ``n_adapter_slots`` slots, in eval mode.

    Example:
        >>> from cl.config import ModelSection
        >>> a, b = build_base_model(ModelSection(seed=3)), build_base_model(ModelSection(seed=3), 2)
        >>> frozen = [name for name, p in a.named_parameters() if not p.requires_grad]
        >>> len(frozen) > 10 and all(torch.equal(a.get_parameter(n), b.get_parameter(n)) for n in frozen)
        True
    """
    if section.checkpoint:
        return _build_from_checkpoint(section, n_adapter_slots)
    cpu_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(section.seed)
        # Initialise with one slot, so the base weights do not depend on how many adapter
        # slots the caller wants (LoRA's A matrices draw from the same generator).
        seeded = MoETransformer(base_model_config(section, 1))
    finally:
        torch.random.set_rng_state(cpu_state)
    if section.base_weights:
        load_base_weights(seeded, section.base_weights)
    if n_adapter_slots == 1:
        return seeded.eval()
    model = MoETransformer(base_model_config(section, n_adapter_slots))
    _install_base_state(model, base_state(seeded))
    return model.eval()


def _build_from_checkpoint(section: ModelSection, n_adapter_slots: int) -> MoETransformer:
    """The checkpoint's weights, and our own additions (classify head, feature tokens) drawn
    from ``seed`` whatever the slot count, so every process builds the same base."""
    from cl.model.checkpoint import load_checkpoint

    model = MoETransformer(base_model_config(section, n_adapter_slots))
    load_checkpoint(model, section.checkpoint)
    g = torch.Generator().manual_seed(section.seed)
    std = model.config.init_std
    with torch.no_grad():
        head = model.classify_head
        head.weight.copy_(torch.randn(head.weight.shape, generator=g) * std)
        if head.bias is not None:
            head.bias.zero_()
        if model.features is not None:
            f = model.features
            f.weight.copy_(torch.randn(f.weight.shape, generator=g))
            f.bias.copy_(torch.randn(f.bias.shape, generator=g) * std)
            f.cls.copy_(torch.randn(f.cls.shape, generator=g) * std)
    if section.base_weights:
        load_base_weights(model, section.base_weights)
    model.tokenizer = build_tokenizer(section)
    return model.eval()


BASE_BIAS = "base_balance_bias"  # a router's bias row of the base (row 0 of its balance_bias)


def base_state(model: MoETransformer) -> dict[str, torch.Tensor]:
    """The base's own tensors: everything but the adapters (the trainable tensors) and the
    per-slot rows of the balancing bias; the base's own bias row is kept as
    ``<router>.base_balance_bias`` (a trained base moved it while it learned, so a model built
    without it would route, and answer, differently)."""
    adapter = {name for name, p in model.named_parameters() if p.requires_grad}
    state = {}
    for k, v in model.state_dict().items():
        if k.endswith("balance_bias"):
            state[k[: -len("balance_bias")] + BASE_BIAS] = v[0].clone()
        elif k not in adapter:
            state[k] = v
    return state


def _install_base_state(model: MoETransformer, state: dict[str, torch.Tensor]) -> None:
    """Load ``state`` (from :func:`base_state`); every bias row, the slots' too, starts from the base's."""
    tensors = {k: v for k, v in state.items() if not k.endswith(BASE_BIAS)}
    model.load_state_dict(tensors, strict=False)
    own = model.state_dict()  # shares storage with the model's buffers
    with torch.no_grad():
        for k, row in state.items():
            if k.endswith(BASE_BIAS):
                rows = own[k[: -len(BASE_BIAS)] + "balance_bias"]  # (L+1, E)
                rows.copy_(row.expand_as(rows))


def save_base_weights(model: MoETransformer, path: Path) -> Path:
    """Write :func:`base_state` as safetensors (what ``model.base_weights`` names)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in base_state(model).items()}, str(path))
    return path


def load_base_weights(model: MoETransformer, path: str | Path) -> None:
    """Replace the base tensors of ``model`` by those in ``path``; every one must match."""
    from safetensors.torch import load_file

    weights, own = load_file(str(path)), base_state(model)
    # Files written before the base's bias row was kept lack it: that row was zero for them.
    missing = sorted(k for k in set(own) - set(weights) if not k.endswith(BASE_BIAS))
    extra = sorted(set(weights) - set(own))
    shapes = [k for k in set(own) & set(weights) if own[k].shape != weights[k].shape]
    if missing or extra or shapes:
        raise ValueError(
            f"model.base_weights: {path} does not fit [model] (preset, n_features, n_labels): "
            f"{len(missing)} tensors missing, {len(extra)} unexpected, {len(shapes)} of another shape; "
            "train a base with this [model] or set the [model] it was trained with"
        )
    _install_base_state(model, weights)
