"""Build our MoE transformer from a Hugging Face checkpoint directory, offline.

A checkpoint is ``config.json``, its weights (``model.safetensors`` or shards named by
``model.safetensors.index.json``) and ``tokenizer.json``. Five families map onto our own
modules (our attention, router, experts and kernels; ``transformers`` is never imported here):

============  =====================================================================
qwen3_moe     softmax top-k, ``norm_topk_prob``, per-head q/k RMSNorm, GQA
qwen2_moe     + a shared expert scaled by its sigmoid gate, q/k/v biases
olmoe         q/k RMSNorm over the whole projection
mixtral       ``block_sparse_moe.experts.M.w1/w2/w3`` names
deepseek_v3   sigmoid scores, ``e_score_correction_bias`` for selection only, grouped
              top-k, shared experts, ``first_k_dense_replace`` dense blocks, MLA
============  =====================================================================

Routed experts may be stored one tensor per expert or fused (``experts.gate_up_proj``
``(E, 2F, d)`` and ``experts.down_proj`` ``(E, d, F)``). Every config field is either read,
known to be harmless, or an error that names it; every tensor is either placed or an error:
a checkpoint is never half-loaded into a model that would answer differently.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cl.model.config import ModelConfig

__all__ = [
    "FAMILIES",
    "CheckpointError",
    "CheckpointSpec",
    "load_checkpoint",
    "read_checkpoint_config",
    "weight_files",
]

FAMILIES = ("qwen3_moe", "qwen2_moe", "olmoe", "mixtral", "deepseek_v3")


class CheckpointError(ValueError):
    """A checkpoint directory cannot be served: a missing file, an unsupported field or tensor."""


# Fields that do not change what the model computes at inference (training knobs, metadata).
_HARMLESS = {
    "architectures",
    "attention_dropout",
    "dtype",
    "torch_dtype",
    "transformers_version",
    "initializer_range",
    "use_cache",
    "output_router_logits",
    "router_aux_loss_coef",
    "aux_loss_alpha",
    "seq_aux",
    "router_jitter_noise",  # noise only in training
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "model_type",
    "max_window_layers",  # read only with use_sliding_window
    "layer_types",
    "pretraining_tp",
    "num_mtp_layers",  # multi-token prediction layers beyond num_hidden_layers are not served
    "num_nextn_predict_layers",
    "ep_size",
    "moe_layer_freq",
    "topk_method",
    "scoring_func",
    "sliding_window",  # Mixtral's is read; Qwen's only counts with use_sliding_window (refused)
    "use_sliding_window",
    "tie_word_embeddings",
    "auto_map",
    "rope_scaling",
    "rope_parameters",
    "rope_theta",
    "head_dim",
}


@dataclass(frozen=True)
class CheckpointSpec:
    """What a checkpoint's ``config.json`` says, in our terms.

    Attributes:
        family: The ``model_type``.
        fields: :class:`ModelConfig` fields for this checkpoint (shape, routing, token ids).
    """

    family: str
    fields: dict[str, Any]


def _get(cfg: dict[str, Any], *names: str, default: Any = None) -> Any:
    for name in names:
        if cfg.get(name) is not None:
            return cfg[name]
    return default


def _rope_base(cfg: dict[str, Any], problems: list[str]) -> float:
    params = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling")
    kind = params.get("rope_type") or params.get("type") or "default"
    if kind != "default" or (scaling and (scaling.get("rope_type") or scaling.get("type")) not in (None, "default")):
        problems.append(
            f"rope_parameters.rope_type={kind!r} / rope_scaling={scaling!r}: only plain RoPE is supported "
            "(no YaRN, linear or dynamic scaling)"
        )
    return float(params.get("rope_theta") or cfg.get("rope_theta") or 10_000.0)


def _dense_layers(cfg: dict[str, Any], family: str, n_layers: int) -> tuple[int, ...]:
    if family == "deepseek_v3":
        return tuple(range(min(int(cfg.get("first_k_dense_replace") or 0), n_layers)))
    if family in ("qwen3_moe", "qwen2_moe"):
        step = int(cfg.get("decoder_sparse_step") or 1)
        only = set(cfg.get("mlp_only_layers") or [])
        return tuple(i for i in range(n_layers) if i in only or (i + 1) % step)
    return ()


def _token_fields(cfg: dict[str, Any]) -> dict[str, Any]:
    eos = cfg.get("eos_token_id")
    eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (eos,))
    return {"bos_id": cfg.get("bos_token_id"), "eos_ids": eos_ids}


def read_checkpoint_config(directory: str | Path) -> CheckpointSpec:
    """Read ``config.json`` and map it onto :class:`ModelConfig` fields.

    Raises:
        CheckpointError: No ``config.json``, an unknown ``model_type``, or fields we do not
            support (each named, with its value).
    """
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"model.checkpoint: {path} not found; give a Hugging Face model directory")
    cfg = json.loads(path.read_text())
    family = cfg.get("model_type")
    if family not in FAMILIES:
        raise CheckpointError(
            f"model.checkpoint: config.json model_type={family!r} is not supported; supported: {', '.join(FAMILIES)}"
        )
    problems: list[str] = []
    read: set[str] = set()

    def take(*names: str, default: Any = None) -> Any:
        read.update(names)
        return _get(cfg, *names, default=default)

    if take("hidden_act", default="silu") != "silu":
        problems.append(f"hidden_act={cfg['hidden_act']!r}: only SwiGLU experts with silu are supported")
    if cfg.get("use_sliding_window"):
        problems.append("use_sliding_window=true: per-layer sliding windows are not supported")
    if take("clip_qkv") is not None:
        problems.append(f"clip_qkv={cfg['clip_qkv']!r}: clipping q/k/v is not supported")
    if family == "deepseek_v3" and cfg.get("topk_method") not in (None, "noaux_tc"):
        problems.append(f"topk_method={cfg['topk_method']!r}: only 'noaux_tc' routing is supported")
    if cfg.get("scoring_func") not in (None, "sigmoid" if family == "deepseek_v3" else "softmax"):
        problems.append(f"scoring_func={cfg['scoring_func']!r} does not match {family}'s routing")
    d_model = take("hidden_size")
    n_heads = take("num_attention_heads")
    n_layers = take("num_hidden_layers")
    head_dim = _get(cfg, "head_dim") or (d_model // n_heads if d_model and n_heads else None)
    fields: dict[str, Any] = {
        "vocab_size": take("vocab_size"),
        "d_model": d_model,
        "n_layers": n_layers,
        "n_heads": n_heads,
        "n_kv_heads": take("num_key_value_heads") or n_heads,
        "attn_head_dim": head_dim if head_dim != d_model // n_heads else None,
        "n_experts": take("num_experts", "num_local_experts", "n_routed_experts"),
        "top_k": take("num_experts_per_tok"),
        "max_seq_len": take("max_position_embeddings", default=4096),
        "norm_eps": float(take("rms_norm_eps", default=1e-6)),
        "rope_base": _rope_base(cfg, problems),
        "tie_embeddings": bool(cfg.get("tie_word_embeddings", False)),
        "head_bias": False,
        "shared_expert": False,
        "router_score": "softmax",
        "norm_topk": bool(take("norm_topk_prob", default=False)),
        "balance_rate": 0.0,  # a pretrained router is balanced already; biases move only if asked
        "dense_layers": _dense_layers(cfg, family, n_layers or 0),
        "pad_id": take("vocab_size"),  # padding outside the vocabulary: no real token is ever mistaken for it
        "cls_id": None,
        "pool": "mean",
        **_token_fields(cfg),
    }
    read.update({"decoder_sparse_step", "mlp_only_layers", "first_k_dense_replace"})
    moe_width = take("moe_intermediate_size")
    dense_width = take("intermediate_size")
    if family in ("qwen3_moe", "qwen2_moe", "deepseek_v3"):
        fields["d_ff"], fields["dense_d_ff"] = moe_width, dense_width
    else:  # olmoe and mixtral: every block is MoE with experts of intermediate_size
        fields["d_ff"] = dense_width
    if family == "qwen3_moe":
        fields["qk_norm"] = "head"
        fields["attention_bias"] = bool(take("attention_bias", default=False))
    elif family == "qwen2_moe":
        fields["attention_bias"] = bool(take("qkv_bias", default=True))
        if width := take("shared_expert_intermediate_size"):
            fields.update(shared_expert=True, shared_d_ff=width, shared_gate=True)
    elif family == "olmoe":
        fields["qk_norm"] = "full"
        fields["attention_bias"] = bool(take("attention_bias", default=False))
    elif family == "mixtral":
        fields["norm_topk"] = True  # softmax over all experts, then the k renormalised
        fields["sliding_window"] = cfg.get("sliding_window")  # a key sees keys < window positions behind
    elif family == "deepseek_v3":
        n_shared = take("n_shared_experts", default=0)
        fields.update(
            router_score="sigmoid",
            norm_topk=bool(take("norm_topk_prob", default=True)),
            routed_scale=float(take("routed_scaling_factor", default=1.0)),
            n_expert_groups=take("n_group", default=1),
            topk_groups=take("topk_group", default=1),
            shared_expert=bool(n_shared),
            shared_d_ff=(moe_width * n_shared) if n_shared else None,
            attention_bias=bool(take("attention_bias", default=False)),
            kv_lora_rank=take("kv_lora_rank"),
            q_lora_rank=take("q_lora_rank", default=0) or 0,
            qk_rope_dim=take("qk_rope_head_dim"),
            attn_head_dim=take("qk_nope_head_dim") + take("qk_rope_head_dim"),
            v_head_dim=take("v_head_dim"),
            n_kv_heads=n_heads,  # MLA expands the latent into every head
            rope_interleave=bool(take("rope_interleave", default=True)),
        )
        if take("qk_head_dim") not in (None, fields["attn_head_dim"]):
            problems.append(f"qk_head_dim={cfg['qk_head_dim']} is not qk_nope_head_dim + qk_rope_head_dim")
    unknown = sorted(k for k in cfg if k not in read and k not in _HARMLESS and not k.startswith("_"))
    problems += [
        f"{k}={cfg[k]!r} is not a field we read for {family}; remove it or use a supported model" for k in unknown
    ]
    missing = sorted(k for k, v in fields.items() if v is None and k not in _OPTIONAL)
    problems += [f"config.json lacks the value for {k!r}" for k in missing]
    if problems:
        raise CheckpointError(f"model.checkpoint: {path}: " + "; ".join(problems))
    return CheckpointSpec(family, fields)


_OPTIONAL = {"attn_head_dim", "bos_id", "cls_id", "dense_d_ff", "shared_d_ff", "sliding_window", "v_head_dim"}


# ---- tensors ----------------------------------------------------------------------------


def weight_files(directory: Path) -> list[str]:
    """The checkpoint's safetensors files (one, or the shards its index names).

    Raises:
        CheckpointError: No weights, or a shard the index names is missing.
    """
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (directory / "model.safetensors").is_file():
        shards = ["model.safetensors"]
    else:
        raise CheckpointError(
            f"model.checkpoint: {directory} has neither model.safetensors nor model.safetensors.index.json "
            "(only safetensors weights are read; convert .bin files with transformers first)"
        )
    for shard in shards:
        if not (directory / shard).is_file():
            raise CheckpointError(f"model.checkpoint: shard {shard} named by the index is missing from {directory}")
    return shards


def _open_weights(directory: Path) -> Iterator[tuple[str, Callable[[], torch.Tensor]]]:
    """Every tensor name in the checkpoint with a loader for it (nothing read until asked)."""
    from safetensors import safe_open

    for shard in weight_files(directory):
        handle = safe_open(str(directory / shard), framework="pt")
        for name in handle.keys():
            yield name, (lambda h=handle, n=name: h.get_tensor(n))


_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_ATTN = {
    "self_attn.q_proj": "attn.q",
    "self_attn.k_proj": "attn.k",
    "self_attn.v_proj": "attn.v",
    "self_attn.o_proj": "attn.o",
    "self_attn.q_norm": "attn.q_norm",
    "self_attn.k_norm": "attn.k_norm",
    "self_attn.q_a_proj": "attn.q_a",
    "self_attn.q_a_layernorm": "attn.q_a_norm",
    "self_attn.q_b_proj": "attn.q",
    "self_attn.kv_a_proj_with_mqa": "attn.k",
    "self_attn.kv_a_layernorm": "attn.kv_norm",
    "self_attn.kv_b_proj": "attn.v",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "moe_norm",
}
_EXPERT = re.compile(r"^(?:mlp|block_sparse_moe)\.experts\.(\d+)\.(gate_proj|up_proj|down_proj|w1|w2|w3)\.weight$")
_PART = {"gate_proj": "gate", "w1": "gate", "up_proj": "up", "w3": "up", "down_proj": "down", "w2": "down"}
_MLP = re.compile(r"^mlp\.(shared_expert|shared_experts)?\.?(gate_proj|up_proj|down_proj)\.weight$")


class _Placer:
    """Collects checkpoint tensors under our names; experts and SwiGLU halves are joined at the end."""

    def __init__(self, cfg: ModelConfig) -> None:
        self.cfg = cfg
        self.out: dict[str, torch.Tensor] = {}
        self.experts: dict[tuple[int, str], dict[int, torch.Tensor]] = {}
        self.halves: dict[tuple[str, str], torch.Tensor] = {}
        self.unplaced: list[str] = []

    def put(self, name: str, tensor: torch.Tensor) -> None:
        cfg = self.cfg
        if name == "model.embed_tokens.weight":
            self.out["tok_emb.weight"] = tensor
        elif name == "model.norm.weight":
            self.out["norm.weight"] = tensor
        elif name == "lm_head.weight":
            if not cfg.tie_embeddings:
                self.out["lm_head.weight"] = tensor
        elif m := _LAYER.match(name):
            layer, rest = int(m.group(1)), m.group(2)
            if layer >= cfg.n_layers:  # DeepSeek's multi-token-prediction layers: not used to serve
                return
            self._put_layer(layer, rest, name, tensor)
        else:
            self.unplaced.append(name)

    def _put_layer(self, layer: int, rest: str, name: str, tensor: torch.Tensor) -> None:
        prefix = f"blocks.{layer}."
        module, _, leaf = rest.rpartition(".")
        if module in _ATTN:
            self.out[prefix + _ATTN[module] + "." + leaf] = tensor
        elif m := _EXPERT.match(rest):
            self.experts.setdefault((layer, _PART[m.group(2)]), {})[int(m.group(1))] = tensor
        elif rest in ("mlp.experts.gate_up_proj", "block_sparse_moe.experts.gate_up_proj"):
            self.out[prefix + "moe.w13"] = tensor  # (E, 2F, d): gate rows, then up rows
        elif rest in ("mlp.experts.down_proj", "block_sparse_moe.experts.down_proj"):
            self.out[prefix + "moe.w2"] = tensor  # (E, d, F)
        elif rest in ("mlp.gate.weight", "block_sparse_moe.gate.weight"):
            self.out[prefix + "moe.router.proj.weight"] = tensor
        elif rest == "mlp.gate.e_score_correction_bias":
            self.out[prefix + "moe.router.balance_bias"] = tensor
        elif rest == "mlp.shared_expert_gate.weight":
            self.out[prefix + "moe.shared.gate.weight"] = tensor
        elif m := _MLP.match(rest):
            owner = prefix + ("moe.shared" if m.group(1) else "mlp")
            part = m.group(2)
            if part == "down_proj":
                self.out[owner + ".w2.weight"] = tensor
            else:
                self.halves[(owner, part)] = tensor
        else:
            self.unplaced.append(name)

    def finish(self) -> dict[str, torch.Tensor]:
        for (layer, part), by_expert in self.experts.items():
            if sorted(by_expert) != list(range(self.cfg.n_experts)):
                raise CheckpointError(
                    f"model.checkpoint: layer {layer} has {part} weights for experts {sorted(by_expert)}, "
                    f"expected 0..{self.cfg.n_experts - 1}"
                )
        for layer in sorted({layer for layer, _ in self.experts}):
            parts = {p: self.experts.get((layer, p)) for p in ("gate", "up", "down")}
            if None in parts.values():
                raise CheckpointError(f"model.checkpoint: layer {layer}'s experts lack some of gate/up/down weights")
            E = self.cfg.n_experts
            gate_up = [torch.cat((parts["gate"][e], parts["up"][e]), dim=0) for e in range(E)]
            self.out[f"blocks.{layer}.moe.w13"] = torch.stack(gate_up)  # (E, 2F, d)
            self.out[f"blocks.{layer}.moe.w2"] = torch.stack([parts["down"][e] for e in range(E)])  # (E, d, F)
        owners = {owner for owner, _ in self.halves}
        for owner in owners:
            gate, up = self.halves.get((owner, "gate_proj")), self.halves.get((owner, "up_proj"))
            if gate is None or up is None:
                raise CheckpointError(f"model.checkpoint: {owner} lacks its gate_proj or up_proj weight")
            self.out[owner + ".w13.weight"] = torch.cat((gate, up), dim=0)  # (2F, d)
        if self.unplaced:
            raise CheckpointError(
                f"model.checkpoint: {len(self.unplaced)} tensors have no place in our model, e.g. "
                f"{self.unplaced[:3]}; this checkpoint uses a feature we do not support"
            )
        return self.out


def load_checkpoint(model: torch.nn.Module, directory: str | Path) -> None:
    """Copy a checkpoint's weights into ``model`` (built from :func:`read_checkpoint_config`).

    Our own extras keep their initialisation: the classify head, the feature tokens and the
    LoRA banks. Every base tensor of ``model`` that the checkpoint has must match in shape,
    and every checkpoint tensor must find its place.

    Raises:
        CheckpointError: A missing, unexpected or misshapen tensor (named).
    """
    directory = Path(directory)
    placer = _Placer(model.config)
    for name, read in _open_weights(directory):
        placer.put(name, read())
    tensors = placer.finish()
    own = model.state_dict()
    problems = [f"{k} (not in our model)" for k in tensors if k not in own]
    problems += [
        f"{k}: checkpoint {tuple(v.shape)} vs ours {tuple(own[k].shape)}"
        for k, v in tensors.items()
        if k in own and own[k].shape[-v.dim() :] != v.shape
    ]
    expected = {k for k in own if _from_checkpoint(k)}
    problems += [f"{k} (missing from the checkpoint)" for k in sorted(expected - set(tensors))]
    if problems:
        raise CheckpointError(f"model.checkpoint: {directory} does not match its config.json: " + "; ".join(problems))
    with torch.no_grad():
        for k, v in tensors.items():
            target = own[k]
            target.copy_(v.to(target.dtype).expand_as(target))  # a bias row fills every slot's row


_OURS = ("lora_", "features.", "classify_head.", "lm_head.bias", ".a13", ".b13", ".a2", ".b2")


def _from_checkpoint(name: str) -> bool:
    """Whether a tensor of our model comes from the checkpoint (not our own addition)."""
    if any(part in name for part in _OURS) or name.endswith("balance_bias"):
        return False
    return True
