"""Typed configuration of the MoE transformer, with named presets.

A :class:`ModelConfig` is validated as it is built and reports every problem at once,
each with the field name, the bad value and the fix:

>>> cfg = ModelConfig.preset("tiny", n_labels=3)
>>> (cfg.d_model, cfg.n_experts, cfg.n_labels)
(32, 4, 3)
>>> ModelConfig(d_model=30, n_heads=4, top_k=9)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
cl.model.config.ModelConfigError: 2 problems in ModelConfig:
  - d_model=30 is not divisible by n_heads=4; ...
  - top_k=9 ...
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from cl.model.tokenizer import ByteTokenizer

LORA_TARGETS: tuple[str, ...] = (
    "q",
    "k",
    "v",
    "o",
    "router",
    "experts",
    "shared_expert",
    "mlp",
    "classify",
    "lm",
)
"""Every layer a LoRA adapter can be attached to."""


class ModelConfigError(ValueError):
    """A :class:`ModelConfig` has one or more invalid fields.

    Attributes:
        problems: One line per problem, each naming the field and the fix.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        noun = "problem" if len(problems) == 1 else "problems"
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} {noun} in ModelConfig:\n{lines}")


@dataclass(frozen=True)
class ModelConfig:
    """Shape and behaviour of :class:`~cl.model.transformer.MoETransformer`.

    The defaults are the ``tiny`` preset: small enough for CPU unit tests.

    Attributes:
        vocab_size: Token vocabulary; the byte tokenizer needs exactly 260 (256 bytes + 4 specials).
        n_features: Numeric features per row for tabular input (0 = text only).
        d_model: Width of the residual stream.
        n_layers: Number of transformer blocks.
        n_heads: Attention heads; ``d_model / n_heads`` must be even (RoPE).
        n_experts: Routed experts E per MoE layer.
        top_k: Experts chosen per token.
        d_ff: Hidden width F of each SwiGLU expert.
        shared_expert: Add one always-on SwiGLU expert of width ``d_ff``.
        max_seq_len: Longest token sequence, including the CLS token that ``classify`` prepends.
        sliding_window: If set, a token attends only to keys fewer than this many positions
            away (behind it for ``lm``, either side for ``classify``); feature rows ignore it.
        n_labels: Classes of the ``classify`` head.
        pool: ``"cls"`` (hidden state of the CLS token) or ``"mean"`` (mean over real tokens).
        router_score: ``"sigmoid"`` (DeepSeek-V3) or ``"softmax"`` expert affinities.
        balance_rate: Step of the load-balancing bias update (0 disables balancing).
        balance_auto: Nudge the bias after every forward in training mode; otherwise only
            when ``update_balance()`` is called.
        lora_rank: Rank r of every LoRA adapter (0 = no adapters at all).
        lora_alpha: LoRA scale numerator; deltas are scaled by ``lora_alpha / lora_rank``.
        lora_targets: Layers that carry adapters, a subset of :data:`LORA_TARGETS`.
        n_adapter_slots: Adapters L held side by side in the bank (champion, challenger, ...).
        int8_experts: Store routed expert weights as int8 with per-output-channel scales.
        norm_eps: RMSNorm epsilon.
        rope_base: RoPE frequency base.
        init_std: Standard deviation of the base weights' normal initialisation.
        n_kv_heads: Key/value heads (grouped-query attention); ``None`` = ``n_heads``.
        attn_head_dim: Width of one head when it is not ``d_model / n_heads`` (Qwen3).
        qk_norm: RMSNorm of queries and keys before RoPE: ``"head"`` per head (Qwen3-MoE),
            ``"full"`` over all heads at once (OLMoE), or ``"none"``.
        attention_bias: q/k/v projections have a bias (Qwen2-MoE).
        norm_topk: Renormalise the k chosen gate weights to sum to 1 (``norm_topk_prob``).
        routed_scale: Factor on the routed experts' output (DeepSeek-V3 ``routed_scaling_factor``).
        n_expert_groups: Experts are split into this many groups (DeepSeek-V3 ``n_group``) ...
        topk_groups: ... and a token chooses its experts from its best ``topk_groups`` groups.
        shared_d_ff: Width of the shared expert; ``None`` = ``d_ff``.
        shared_gate: Scale the shared expert by ``sigmoid(w . x)`` (Qwen2-MoE).
        dense_layers: Blocks that have one dense SwiGLU MLP instead of experts.
        dense_d_ff: Width of those dense MLPs; ``None`` = ``d_ff``.
        tie_embeddings: The ``lm`` head reuses the token embedding matrix.
        head_bias: The ``lm`` and ``classify`` heads have a bias (checkpoints' ``lm`` head has none).
        pad_id: Padding id; ``vocab_size`` itself is allowed, an id no real token has.
        bos_id: Beginning-of-sequence id, or ``None``.
        eos_ids: Ids that end a generation.
        cls_id: Id that ``classify`` prepends to text, or ``None`` (then ``pool`` must be ``mean``).
        never_sampled: Ids generation never emits; ``None`` = the byte tokenizer's specials
            and its non-ASCII bytes.
        kv_lora_rank: Multi-head latent attention (DeepSeek-V2/V3) when > 0: width of the
            compressed key/value.
        q_lora_rank: MLA's compressed query width (0 = a plain query projection).
        qk_rope_dim: MLA: the rotated part of each query/key head.
        v_head_dim: MLA: width of a value head (``None`` = ``head_dim``).
        rope_interleave: MLA: the checkpoint rotates adjacent pairs of dims (DeepSeek-V3).
    """

    vocab_size: int = ByteTokenizer.vocab_size
    n_features: int = 8
    d_model: int = 32
    n_layers: int = 2
    n_heads: int = 2
    n_experts: int = 4
    top_k: int = 2
    d_ff: int = 32
    shared_expert: bool = True
    max_seq_len: int = 128
    sliding_window: int | None = None
    n_labels: int = 2
    pool: Literal["cls", "mean"] = "cls"
    router_score: Literal["sigmoid", "softmax"] = "sigmoid"
    balance_rate: float = 1e-3
    balance_auto: bool = True
    lora_rank: int = 4
    lora_alpha: float = 8.0
    lora_targets: tuple[str, ...] = LORA_TARGETS
    n_adapter_slots: int = 4
    int8_experts: bool = False
    norm_eps: float = 1e-6
    rope_base: float = 10_000.0
    init_std: float = 0.02
    n_kv_heads: int | None = None
    attn_head_dim: int | None = None
    qk_norm: Literal["none", "head", "full"] = "none"
    attention_bias: bool = False
    norm_topk: bool = True
    routed_scale: float = 1.0
    n_expert_groups: int = 1
    topk_groups: int = 1
    shared_d_ff: int | None = None
    shared_gate: bool = False
    dense_layers: tuple[int, ...] = ()
    dense_d_ff: int | None = None
    tie_embeddings: bool = False
    head_bias: bool = True
    pad_id: int = ByteTokenizer.pad_id
    bos_id: int | None = ByteTokenizer.bos_id
    eos_ids: tuple[int, ...] = (ByteTokenizer.eos_id,)
    cls_id: int | None = ByteTokenizer.cls_id
    never_sampled: tuple[int, ...] | None = None
    kv_lora_rank: int = 0
    q_lora_rank: int = 0
    qk_rope_dim: int = 0
    v_head_dim: int | None = None
    rope_interleave: bool = False

    def __post_init__(self) -> None:
        # Accept a list from a TOML/YAML file but store a hashable tuple.
        for name in _TUPLE_FIELDS:
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        problems = _problems(self)
        if problems:
            raise ModelConfigError(problems)

    @property
    def head_dim(self) -> int:
        """Width of one query/key head."""
        return self.attn_head_dim or self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        """Key/value heads (fewer than ``n_heads`` under grouped-query attention)."""
        return self.n_kv_heads or self.n_heads

    @property
    def value_dim(self) -> int:
        """Width of one value head."""
        return self.v_head_dim or self.head_dim

    @property
    def is_mla(self) -> bool:
        """Whether attention is multi-head latent attention."""
        return self.kv_lora_rank > 0

    @property
    def rope_dim(self) -> int:
        """How many dims of each head RoPE rotates."""
        return self.qk_rope_dim if self.is_mla else self.head_dim

    @property
    def sampling_exclusions(self) -> tuple[int, ...]:
        """Ids generation never emits (padding always among them when it is in the vocabulary)."""
        if self.never_sampled is None:
            return _BYTE_NEVER_SAMPLED
        return tuple(sorted({*self.never_sampled, *([self.pad_id] if self.pad_id < self.vocab_size else [])}))

    def is_dense(self, layer: int) -> bool:
        """Whether block ``layer`` has a dense MLP instead of experts."""
        return layer in self.dense_layers

    @property
    def lora_scale(self) -> float:
        """Factor ``alpha / r`` applied to every LoRA delta (0 when there are no adapters)."""
        return self.lora_alpha / self.lora_rank if self.lora_rank else 0.0

    def has_lora(self, target: str) -> bool:
        """Whether the layer named ``target`` (see :data:`LORA_TARGETS`) carries adapters."""
        return self.lora_rank > 0 and target in self.lora_targets

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ModelConfig:
        """Build a named preset, optionally overriding some fields.

        Args:
            name: One of ``tiny``, ``small``, ``base``, ``large``.
            **overrides: Fields to change from the preset.

        Raises:
            ModelConfigError: Unknown preset or field, or an invalid result.
        """
        if name not in PRESETS:
            raise ModelConfigError([f"preset={name!r} is unknown; use one of {sorted(PRESETS)}"])
        return cls.from_dict({**PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Build from a plain mapping (e.g. a TOML table); unknown keys are errors."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ModelConfigError(
                [f"{k!r} is not a ModelConfig field; valid fields are {sorted(known)}" for k in unknown]
            )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping that :meth:`from_dict` reads back (tuples become lists)."""
        out = dataclasses.asdict(self)
        for name in _TUPLE_FIELDS:
            if out[name] is not None:
                out[name] = list(out[name])
        return out

    def replace(self, **changes: Any) -> ModelConfig:
        """Copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


_TUPLE_FIELDS = ("lora_targets", "dense_layers", "eos_ids", "never_sampled")

# The byte tokenizer's specials, and bytes >= 0x80: a lone non-ASCII byte decodes to U+FFFD,
# which re-encodes as three other bytes, so feedback on it would train tokens that were never
# served. The tiny byte-level LM therefore writes ASCII (found by the language-feedback evaluation).
_BYTE_NEVER_SAMPLED = (ByteTokenizer.pad_id, ByteTokenizer.bos_id, ByteTokenizer.cls_id, *range(0x80, 0x100))

PRESETS: dict[str, dict[str, Any]] = {
    # CPU unit tests and the local default.
    "tiny": {},
    # A laptop / small-GPU model.
    "small": dict(
        d_model=256,
        n_layers=4,
        n_heads=4,
        n_experts=8,
        top_k=2,
        d_ff=256,
        max_seq_len=512,
        n_features=32,
        lora_rank=4,
        lora_alpha=8.0,
    ),
    # One data-centre GPU.
    "base": dict(
        d_model=768,
        n_layers=12,
        n_heads=12,
        n_experts=16,
        top_k=2,
        d_ff=768,
        max_seq_len=2048,
        sliding_window=1024,
        n_features=64,
        lora_rank=8,
        lora_alpha=16.0,
        n_adapter_slots=8,
    ),
    # Several GPUs or int8 experts.
    "large": dict(
        d_model=1024,
        n_layers=24,
        n_heads=16,
        n_experts=64,
        top_k=6,
        d_ff=512,
        max_seq_len=4096,
        sliding_window=2048,
        n_features=64,
        lora_rank=8,
        lora_alpha=16.0,
        n_adapter_slots=8,
        int8_experts=True,
    ),
}


def _positive_int(cfg: ModelConfig, name: str, minimum: int = 1) -> list[str]:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int):
        return [f"{name}={value!r} must be an int; give a whole number >= {minimum}"]
    if value < minimum:
        return [f"{name}={value} is too small; give a value >= {minimum}"]
    return []


def _problems(cfg: ModelConfig) -> list[str]:  # noqa: C901 - a flat list of checks reads best
    p: list[str] = []
    for name in (
        "vocab_size",
        "d_model",
        "n_layers",
        "n_heads",
        "n_experts",
        "top_k",
        "d_ff",
        "max_seq_len",
        "n_labels",
        "n_adapter_slots",
    ):
        p += _positive_int(cfg, name)
    for name in ("n_features", "lora_rank"):
        p += _positive_int(cfg, name, minimum=0)
    bad = {line.split("=", 1)[0] for line in p}  # fields already reported
    if "vocab_size" not in bad:
        p += _token_id_problems(cfg)
    for name in ("n_kv_heads", "attn_head_dim", "shared_d_ff", "dense_d_ff", "v_head_dim"):
        if getattr(cfg, name) is not None:
            p += _positive_int(cfg, name)
    for name in ("n_expert_groups", "topk_groups"):
        p += _positive_int(cfg, name)
    for name in ("kv_lora_rank", "q_lora_rank", "qk_rope_dim"):
        p += _positive_int(cfg, name, minimum=0)
    bad = {line.split("=", 1)[0] for line in p}
    if not bad & {"n_kv_heads", "n_heads"} and cfg.n_heads % cfg.kv_heads:
        p.append(
            f"n_kv_heads={cfg.kv_heads} does not divide n_heads={cfg.n_heads}; grouped-query attention needs it to"
        )
    if cfg.n_expert_groups > 1 and not bad & {"n_expert_groups", "topk_groups", "n_experts", "top_k"}:
        if cfg.n_experts % cfg.n_expert_groups:
            p.append(f"n_expert_groups={cfg.n_expert_groups} does not divide n_experts={cfg.n_experts}")
        elif cfg.topk_groups > cfg.n_expert_groups:
            p.append(f"topk_groups={cfg.topk_groups} exceeds n_expert_groups={cfg.n_expert_groups}")
        elif cfg.top_k > cfg.topk_groups * (cfg.n_experts // cfg.n_expert_groups):
            p.append(f"top_k={cfg.top_k} exceeds the experts in topk_groups={cfg.topk_groups} groups")
    if cfg.qk_norm not in ("none", "head", "full"):
        p.append(f"qk_norm={cfg.qk_norm!r} is unknown; use 'none', 'head' or 'full'")
    if not isinstance(cfg.routed_scale, (int, float)) or cfg.routed_scale <= 0:
        p.append(f"routed_scale={cfg.routed_scale!r} must be a number > 0")
    if isinstance(cfg.dense_layers, tuple) and not bad & {"n_layers"}:
        if outside := [i for i in cfg.dense_layers if not isinstance(i, int) or not 0 <= i < cfg.n_layers]:
            p.append(f"dense_layers has {outside}, not block indices in [0, {cfg.n_layers})")
    if cfg.is_mla and (cfg.qk_rope_dim < 2 or cfg.qk_rope_dim % 2 or cfg.qk_rope_dim >= cfg.head_dim):
        p.append(f"qk_rope_dim={cfg.qk_rope_dim} must be even, >= 2 and below head_dim={cfg.head_dim} with MLA")
    if not bad & {"d_model", "n_heads"} and cfg.attn_head_dim is not None:
        if cfg.rope_dim % 2:
            p.append(f"attn_head_dim={cfg.attn_head_dim} is odd; RoPE needs an even head width")
    elif not bad & {"d_model", "n_heads"}:
        if cfg.d_model % cfg.n_heads:
            p.append(f"d_model={cfg.d_model} is not divisible by n_heads={cfg.n_heads}; pick n_heads dividing d_model")
        elif (cfg.d_model // cfg.n_heads) % 2:
            p.append(
                f"head_dim=d_model/n_heads={cfg.d_model // cfg.n_heads} is odd; RoPE needs an even "
                f"head width, so change d_model or n_heads"
            )
    if not bad & {"top_k", "n_experts"} and cfg.top_k > cfg.n_experts:
        p.append(f"top_k={cfg.top_k} exceeds n_experts={cfg.n_experts}; use top_k <= n_experts")
    if cfg.sliding_window is not None and (
        isinstance(cfg.sliding_window, bool) or not isinstance(cfg.sliding_window, int) or cfg.sliding_window < 1
    ):
        p.append(f"sliding_window={cfg.sliding_window!r} must be None or an int >= 1")
    if cfg.pool not in ("cls", "mean"):
        p.append(f"pool={cfg.pool!r} is unknown; use 'cls' or 'mean'")
    if cfg.router_score not in ("sigmoid", "softmax"):
        p.append(f"router_score={cfg.router_score!r} is unknown; use 'sigmoid' or 'softmax'")
    if not isinstance(cfg.balance_rate, (int, float)) or cfg.balance_rate < 0:
        p.append(f"balance_rate={cfg.balance_rate!r} must be a number >= 0 (0 disables balancing)")
    if not isinstance(cfg.lora_alpha, (int, float)) or cfg.lora_alpha <= 0:
        p.append(f"lora_alpha={cfg.lora_alpha!r} must be a number > 0; a common choice is 2 * lora_rank")
    if not isinstance(cfg.lora_targets, tuple):
        p.append(f"lora_targets={cfg.lora_targets!r} must be a tuple or list of names from {LORA_TARGETS}")
    elif unknown := [t for t in cfg.lora_targets if t not in LORA_TARGETS]:
        p.append(f"lora_targets has unknown names {unknown}; choose from {LORA_TARGETS}")
    for name in ("norm_eps", "rope_base", "init_std"):
        value = getattr(cfg, name)
        if not isinstance(value, (int, float)) or value <= 0:
            p.append(f"{name}={value!r} must be a number > 0")
    for name in (
        "shared_expert",
        "balance_auto",
        "int8_experts",
        "attention_bias",
        "norm_topk",
        "shared_gate",
        "tie_embeddings",
        "head_bias",
        "rope_interleave",
    ):
        if not isinstance(getattr(cfg, name), bool):
            p.append(f"{name}={getattr(cfg, name)!r} must be True or False")
    return p


def _token_id_problems(cfg: ModelConfig) -> list[str]:
    p = []
    v = cfg.vocab_size
    if not isinstance(cfg.pad_id, int) or not 0 <= cfg.pad_id <= v:
        p.append(f"pad_id={cfg.pad_id!r} must be an id in [0, vocab_size={v}] (vocab_size itself = no real token)")
    for name in ("bos_id", "cls_id"):
        value = getattr(cfg, name)
        if value is not None and (not isinstance(value, int) or not 0 <= value < v):
            p.append(f"{name}={value!r} must be None or an id in [0, vocab_size={v})")
    for name in ("eos_ids", "never_sampled"):
        ids = getattr(cfg, name)
        if ids is not None and (
            not isinstance(ids, tuple) or any(not isinstance(i, int) or not 0 <= i < v for i in ids)
        ):
            p.append(f"{name}={ids!r} must be a list of ids in [0, vocab_size={v})")
    if cfg.never_sampled is None and v < ByteTokenizer.vocab_size:
        p.append(
            f"vocab_size={v} cannot hold the byte tokenizer; use vocab_size >= {ByteTokenizer.vocab_size} "
            "or give the checkpoint's token ids (never_sampled, pad_id, ...)"
        )
    if cfg.cls_id is None and cfg.pool == "cls":
        p.append("pool='cls' needs a cls_id to prepend; set pool='mean' for a vocabulary without one")
    return p
