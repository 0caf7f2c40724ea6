"""The service's frozen base model, built the same way by every learner and replica.

The base is initialised from a seed rather than shipped as weights, so a learner and a replica
that agree on ``[model]`` hold bit-identical bases; ``ModelSection.base_version`` names it and
every adapter version records it in its ``base_version`` tag.
"""

from __future__ import annotations

import torch

from cl.config import ModelSection
from cl.model import ModelConfig, MoETransformer

__all__ = ["base_model_config", "build_base_model"]


def base_model_config(section: ModelSection, n_adapter_slots: int = 1) -> ModelConfig:
    """The ``ModelConfig`` for ``section`` with room for ``n_adapter_slots`` adapters."""
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
    cpu_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(section.seed)
        # Initialise with one slot, so the base weights do not depend on how many adapter
        # slots the caller wants (LoRA's A matrices draw from the same generator).
        seeded = MoETransformer(base_model_config(section, 1))
    finally:
        torch.random.set_rng_state(cpu_state)
    if n_adapter_slots == 1:
        return seeded.eval()
    model = MoETransformer(base_model_config(section, n_adapter_slots))
    # Adapter tensors and the per-slot balancing bias (zero at start) are not part of the base.
    adapter = {name for name, p in seeded.named_parameters() if p.requires_grad}
    base = {k: v for k, v in seeded.state_dict().items() if k not in adapter and "balance_bias" not in k}
    model.load_state_dict(base, strict=False)
    return model.eval()
