"""The MoE transformer with a bank of LoRA adapters, its inputs and its adapter tools.

The domain object is :class:`MoETransformer`; everything else here is a building block
it is made of or a tool that works on it. ``base_model`` builds the service's frozen base from
the ``[model]`` config section, the same in every process.
"""

from cl.model.adapters import (
    adapter_fraction,
    adapter_parameters,
    adapter_state,
    freeze_base,
    load_adapter,
    load_adapter_state,
    merge_adapter,
    reset_adapter,
    save_adapter,
)
from cl.model.attention import Attention, attention_mask
from cl.model.base_model import base_model_config, build_base_model, load_base_weights, save_base_weights
from cl.model.cache import KVCache
from cl.model.config import LORA_TARGETS, PRESETS, ModelConfig, ModelConfigError
from cl.model.features import FeatureTokenizer
from cl.model.generation import generate, sample_next
from cl.model.lora import AdapterModule, LoRALinear
from cl.model.moe import MoE, SharedExpert
from cl.model.quant import dequantize_int8, quantize_experts_int8, quantize_int8
from cl.model.router import Router
from cl.model.tokenizer import ByteTokenizer
from cl.model.transformer import MoETransformer

__all__ = [
    "LORA_TARGETS",
    "PRESETS",
    "AdapterModule",
    "Attention",
    "ByteTokenizer",
    "FeatureTokenizer",
    "KVCache",
    "LoRALinear",
    "MoE",
    "MoETransformer",
    "ModelConfig",
    "ModelConfigError",
    "Router",
    "SharedExpert",
    "adapter_fraction",
    "adapter_parameters",
    "adapter_state",
    "attention_mask",
    "base_model_config",
    "build_base_model",
    "dequantize_int8",
    "freeze_base",
    "generate",
    "load_adapter",
    "load_adapter_state",
    "load_base_weights",
    "merge_adapter",
    "quantize_experts_int8",
    "quantize_int8",
    "reset_adapter",
    "sample_next",
    "save_adapter",
    "save_base_weights",
]
