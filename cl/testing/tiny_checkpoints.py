"""Tiny random Hugging Face MoE checkpoints, built and saved by ``transformers`` itself.

The loader is tested against what ``transformers`` computes on these (2 layers, width 64, 4-8
experts), and the GPU check serves one. Every weight is redrawn before saving, norms and
biases included, at a scale where logits and router choices are well separated, so a
mis-mapped tensor changes the answer instead of hiding in near-zero noise.

Needs ``transformers`` and ``tokenizers`` (test dependencies); nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

__all__ = ["FAMILY_CONFIGS", "build_tiny_checkpoint", "build_tokenizer_files", "load_reference"]

_COMMON: dict[str, Any] = dict(
    vocab_size=320,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=128,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)

# One tiny config per family, each exercising the family's own features.
FAMILY_CONFIGS: dict[str, dict[str, Any]] = {
    "qwen3_moe": dict(
        num_key_value_heads=2,
        head_dim=24,  # not hidden / heads: Qwen3 sets it apart
        intermediate_size=96,
        moe_intermediate_size=32,
        num_experts=8,
        num_experts_per_tok=2,
        norm_topk_prob=True,
    ),
    "qwen2_moe": dict(
        num_key_value_heads=2,
        intermediate_size=96,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=48,
        num_experts=4,
        num_experts_per_tok=2,
        norm_topk_prob=False,
        mlp_only_layers=[1],  # one dense block
    ),
    "olmoe": dict(
        num_key_value_heads=2,
        intermediate_size=32,
        num_experts=8,
        num_experts_per_tok=2,
        norm_topk_prob=False,
    ),
    "mixtral": dict(
        num_key_value_heads=2,
        intermediate_size=32,
        num_local_experts=4,
        num_experts_per_tok=2,
    ),
    "deepseek_v3": dict(
        num_key_value_heads=4,
        intermediate_size=96,
        moe_intermediate_size=32,
        n_shared_experts=1,
        n_routed_experts=8,
        routed_scaling_factor=2.5,
        kv_lora_rank=16,
        q_lora_rank=24,
        qk_rope_head_dim=8,
        qk_nope_head_dim=16,
        v_head_dim=16,
        n_group=4,
        topk_group=2,
        num_experts_per_tok=2,
        first_k_dense_replace=1,
        norm_topk_prob=True,
        rope_interleave=True,
    ),
}

_SPECIALS = ["<s>", "</s>", "<|im_start|>", "<|im_end|>"]
_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a mixture of experts routes every token to a few experts",
    "hello world, how are you today? fine, thanks!",
    "online learning from feedback with replay and drift detection",
    "0123456789 +-*/=<>()[]{} .,;:!? 'quotes' \"double\"",
]


def build_tokenizer_files(directory: Path, vocab_size: int = 300) -> dict[str, int]:
    """Train a small byte-level BPE on a fixed corpus and write ``tokenizer.json`` and
    ``tokenizer_config.json`` (ChatML template); returns the specials' ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in _SPECIALS}
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": "<s>",
                "eos_token": "<|im_end|>",
                "chat_template": _CHAT_TEMPLATE,
                "tokenizer_class": "PreTrainedTokenizerFast",
            }
        )
    )
    return ids


def _config(family: str, ids: dict[str, int], overrides: dict[str, Any]) -> Any:
    import transformers

    cls = transformers.AutoConfig.for_model(family).__class__
    values = {**_COMMON, **FAMILY_CONFIGS[family], **overrides}
    values.setdefault("bos_token_id", ids["<s>"])
    values.setdefault("eos_token_id", ids["<|im_end|>"])
    return cls(**values)


@torch.no_grad()
def _perturb(model: torch.nn.Module, seed: int) -> None:
    """Redraw every parameter and persistent float buffer (norms near 1, the rest ~ 1/sqrt(fan-in))."""
    g = torch.Generator().manual_seed(seed)
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if not tensor.is_floating_point() or "inv_freq" in name:
            continue
        noise = torch.randn(tensor.shape, generator=g)
        if name.endswith("norm.weight") or "layernorm" in name:
            tensor.copy_(1.0 + 0.2 * noise)
        elif tensor.dim() == 1:
            tensor.copy_(0.1 * noise)
        else:
            tensor.copy_(noise * tensor.shape[-1] ** -0.5)


def build_tiny_checkpoint(
    family: str, directory: str | Path, *, fused: bool = False, seed: int = 0, **overrides: Any
) -> Path:
    """Build, perturb and ``save_pretrained`` a tiny ``family`` model with its tokenizer.

    Args:
        family: A key of :data:`FAMILY_CONFIGS` (a ``model_type``).
        directory: Where to write it.
        fused: Write routed experts as fused 3-D ``gate_up_proj``/``down_proj`` tensors
            (``transformers``' in-memory layout) instead of one tensor per expert.
        seed: Seed of the weights.
        **overrides: Config fields to change.
    """
    import transformers

    directory = Path(directory)
    ids = build_tokenizer_files(directory)
    config = _config(family, ids, overrides)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    _perturb(model, seed)
    model.save_pretrained(str(directory), save_original_format=not fused)
    return directory


def load_reference(directory: str | Path) -> Any:
    """The checkpoint as ``transformers`` loads it: fp32, eager attention, eval mode."""
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(
        str(directory), attn_implementation="eager", dtype=torch.float32, use_kernels=False
    ).eval()
