"""The domain model: a Mixture-of-Experts transformer with a bank of LoRA adapters.

One model reads text (byte tokens) or numeric feature vectors, and has two heads:
``classify`` (bidirectional attention, pooled at CLS or mean) and ``lm`` (causal, next
byte). The base is frozen at construction; only adapter parameters train.

>>> import torch
>>> from cl.model import ByteTokenizer, ModelConfig, MoETransformer
>>> _ = torch.manual_seed(0)
>>> model = MoETransformer(ModelConfig.preset("tiny")).eval()
>>> tokens = ByteTokenizer().batch(["good", "bad!"])
>>> tuple(model(tokens=tokens, head="classify").shape)
(2, 2)
>>> tuple(model(features=torch.randn(3, 8), adapter_ids=torch.tensor([0, -1, 1])).shape)
(3, 2)
>>> tuple(model(tokens=tokens, head="lm").shape)
(2, 5, 260)
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cl.model import adapters as _adapters
from cl.model._checks import check_adapter_ids, check_features, check_head, check_tokens
from cl.model.attention import attention_mask
from cl.model.block import Block
from cl.model.cache import KVCache
from cl.model.config import ModelConfig
from cl.model.features import FeatureTokenizer
from cl.model.generation import generate
from cl.model.lora import LoRALinear
from cl.model.quant import quantize_experts_int8
from cl.model.rope import RotaryEmbedding
from cl.model.tokenizer import ByteTokenizer, Tokenizer


class MoETransformer(nn.Module):
    """MoE transformer with ``classify`` and ``lm`` heads and per-row LoRA adapters.

    Args:
        config: Shape and behaviour; defaults to the ``tiny`` preset.
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = config if config is not None else ModelConfig()
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        nn.init.normal_(self.tok_emb.weight, std=cfg.init_std)
        self.features = FeatureTokenizer(cfg.n_features, cfg.d_model, cfg.init_std) if cfg.n_features else None
        self.rope = RotaryEmbedding(cfg.rope_dim, cfg.max_seq_len, cfg.rope_base)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)

        def head(target: str, n_out: int) -> LoRALinear:
            rank = cfg.lora_rank if cfg.has_lora(target) else 0
            return LoRALinear(
                cfg.d_model,
                n_out,
                n_slots=cfg.n_adapter_slots,
                rank=rank,
                alpha=cfg.lora_alpha,
                bias=cfg.head_bias,
                init_std=cfg.init_std,
            )

        self.classify_head = head("classify", cfg.n_labels)
        self.lm_head = head("lm", cfg.vocab_size)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        if cfg.int8_experts:
            quantize_experts_int8(self)
        _adapters.freeze_base(self)
        # Text in and out; a model built from a checkpoint carries the checkpoint's own.
        self.tokenizer: Tokenizer = ByteTokenizer()

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the model's states."""
        return self.tok_emb.weight.dtype

    @property
    def device(self) -> torch.device:
        """Device of the model's weights."""
        return self.tok_emb.weight.device

    def forward(
        self,
        tokens: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
        adapter_ids: torch.Tensor | None = None,
        head: str = "classify",
        *,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Compute logits.

        Padding is recognised by the PAD id; ``classify`` prepends a CLS token itself.

        Args:
            tokens: ``(B, T)`` int64 token ids (right-padded for classify, left-padded for
                generation). Give exactly one of ``tokens`` and ``features``.
            features: ``(B, n_features)`` float values (``classify`` only).
            adapter_ids: ``(B,)`` int64 adapter slot per row, ``-1`` = base only; ``None`` =
                base for every row.
            head: ``"classify"`` or ``"lm"``.
            cache: KV cache to extend (``lm`` on tokens only), see :meth:`new_cache`.

        Returns:
            ``(B, n_labels)`` for ``classify``; ``(B, T, vocab_size)`` for ``lm``.

        Raises:
            ValueError: Bad shapes, dtypes, ids out of range, too long a sequence, unknown
                adapter ids, a feature-count mismatch or an unknown head.
        """
        cfg = self.config
        check_head(head)
        if (tokens is None) == (features is None):
            raise ValueError(
                "pass exactly one of tokens= ((B, T) int64 ids) or features= "
                f"((B, {cfg.n_features}) floats), got " + ("both" if tokens is not None else "neither")
            )
        if cache is not None and (features is not None or head != "lm"):
            raise ValueError("cache= only works with tokens= and head='lm' (generation)")
        if features is not None:
            if head == "lm":
                raise ValueError("head='lm' needs tokens=; features= only go to head='classify'")
            x = self.features(check_features(features, cfg.n_features).to(self.device, self.dtype))
            valid, rope, offset = None, None, 0  # (B, F+1, d), no padding, no rotation
        else:
            x, valid, rope, offset = self._embed_tokens(tokens, head, cache)
        B, T, _ = x.shape
        ids = check_adapter_ids(adapter_ids, B, cfg.n_adapter_slots)
        ids = None if ids is None else ids.to(x.device)
        tok_ids = None if ids is None else ids[:, None].expand(B, T)  # (B, T)

        key_valid = valid
        if cache is not None:
            cache.valid[:, offset : offset + T] = valid
            key_valid = cache.valid[:, : offset + T]  # (B, Tk)
        if key_valid is not None and bool(key_valid.all()):
            key_valid = None
        mask, is_causal = attention_mask(
            key_valid,
            tq=T,
            tk=offset + T,
            offset=offset,
            causal=head == "lm",
            window=None if features is not None else cfg.sliding_window,
            device=x.device,
        )
        for block in self.blocks:
            x = block(x, tok_ids, valid, mask, is_causal, rope, cache)  # (B, T, d)
        if cache is not None:
            cache.length += T
            cache.next_pos += valid.sum(1)
        h = self.norm(x)  # (B, T, d)
        if head == "lm":
            return self.lm_head(h, tok_ids)  # (B, T, V)
        if cfg.pool == "cls":
            pooled = h[:, 0]  # (B, d)
        elif valid is None:
            pooled = h.mean(1)  # (B, d)
        else:
            w = valid.to(h.dtype)[..., None]  # (B, T, 1)
            pooled = (h * w).sum(1) / w.sum(1).clamp_min(1.0)  # (B, d)
        return self.classify_head(pooled, ids)  # (B, n_labels)

    def _embed_tokens(
        self, tokens: object, head: str, cache: KVCache | None
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor], int]:
        """Validate, add CLS (classify), embed; return states, validity, RoPE and offset."""
        cfg = self.config
        toks = check_tokens(tokens, cfg.vocab_size, cfg.pad_id).to(self.device)  # (B, T)
        B, T = toks.shape
        if head == "classify" and cfg.cls_id is not None:
            if T + 1 > cfg.max_seq_len:
                raise ValueError(
                    f"sequence length {T} is too long: classify adds a CLS token and max_seq_len="
                    f"{cfg.max_seq_len}, so give at most {cfg.max_seq_len - 1} tokens"
                )
            cls = torch.full((B, 1), cfg.cls_id, dtype=torch.long, device=toks.device)
            toks = torch.cat((cls, toks), dim=1)  # (B, T+1)
        offset = 0 if cache is None else cache.length
        limit = cfg.max_seq_len if cache is None else min(cfg.max_seq_len, cache.max_len)
        if offset + toks.shape[1] > limit:
            raise ValueError(
                f"sequence length {offset + toks.shape[1]} (cached {offset} + new {toks.shape[1]}) "
                f"exceeds the limit {limit} (max_seq_len={cfg.max_seq_len}); truncate the input"
            )
        if cache is not None and cache.batch_size != B:
            raise ValueError(f"cache holds {cache.batch_size} rows but tokens have {B} rows")
        valid = toks != cfg.pad_id  # (B, T)
        start = 0 if cache is None else cache.next_pos[:, None]
        positions = (start + valid.long().cumsum(1) - 1).clamp_min(0)  # (B, T)
        if cfg.pad_id >= cfg.vocab_size:  # padding outside the vocabulary: embed any real row
            toks = toks.masked_fill(~valid, 0)
        return self.tok_emb(toks), valid, self.rope(positions), offset

    # -- generation -----------------------------------------------------------------------

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty KV cache for ``batch_size`` rows and up to ``max_len`` (default max_seq_len) tokens."""
        cfg = self.config
        return KVCache(
            cfg.n_layers,
            batch_size,
            cfg.kv_heads,
            cfg.head_dim,
            max_len or cfg.max_seq_len,
            self.device,
            self.dtype,
            value_dim=cfg.value_dim,
        )

    def generate(
        self,
        tokens: torch.Tensor,
        *,
        max_new_tokens: int,
        adapter_ids: torch.Tensor | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        stop_at_eos: bool = True,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Continue ``(B, T)`` left-padded prompts; see :func:`cl.model.generation.generate`.

        Returns:
            ``(B, T + n)`` prompts and ``n <= max_new_tokens`` new tokens.
        """
        return generate(
            self,
            tokens,
            max_new_tokens=max_new_tokens,
            adapter_ids=adapter_ids,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            generator=generator,
            stop_at_eos=stop_at_eos,
            use_cache=use_cache,
        )

    # -- expert load ----------------------------------------------------------------------

    def expert_load_stats(self) -> dict[str, dict[str, object]]:
        """Per-layer router metrics since the last reset, keyed ``"layer0"``, ``"layer1"``, ...

        Each value has ``tokens``, ``share`` (per-expert fraction of assignments),
        ``max_violation`` (max load / mean load - 1), ``entropy`` and ``max_entropy``.
        """
        return {f"layer{i}": b.moe.router.load_stats() for i, b in enumerate(self.blocks) if b.moe is not None}

    def reset_expert_load_stats(self) -> None:
        """Start the expert-load metrics afresh."""
        for router in self.routers():
            router.reset_stats()

    def update_balance(self) -> None:
        """Apply the balancing-bias update from the load seen in training since the last one."""
        for router in self.routers():
            router.update_balance()

    def defer_balance(self) -> list[torch.Tensor]:
        """Balance only on :meth:`update_balance`, not after every training forward, and
        return each layer's pending load ``(L+1, E)`` (live buffers): data-parallel learners
        sum these over the ranks before each update, so every rank nudges the bias alike."""
        for router in self.routers():
            router.auto = False
        return [router._pending for router in self.routers()]

    def balance_biases(self) -> list[torch.Tensor]:
        """Each layer's balancing-bias buffer ``(L+1, E)`` (live buffers)."""
        return [router.balance_bias for router in self.routers()]

    def routers(self) -> list[nn.Module]:
        """The router of every MoE block, in order (dense blocks have none)."""
        return [b.moe.router for b in self.blocks if b.moe is not None]

    def quantize_experts_int8(self) -> int:
        """Store routed expert weights as int8; returns how many layers changed."""
        return quantize_experts_int8(self)

    # -- adapters (see cl.model.adapters) -------------------------------------------------

    def adapter_parameters(self) -> list[nn.Parameter]:
        """Trainable adapter banks (every slot); hand these to the optimiser."""
        return _adapters.adapter_parameters(self)

    def adapter_state(self, slot: int) -> dict[str, torch.Tensor]:
        """One slot's adapter as a flat dict of tensors (copies)."""
        return _adapters.adapter_state(self, slot)

    def load_adapter_state(self, slot: int, state: dict[str, torch.Tensor]) -> None:
        """Write an :meth:`adapter_state` dict into ``slot``."""
        _adapters.load_adapter_state(self, slot, state)

    def save_adapter(self, path: str | Path, slot: int, metadata: dict[str, str] | None = None) -> None:
        """Save ``slot`` to a safetensors file."""
        _adapters.save_adapter(self, path, slot, metadata)

    def load_adapter(self, path: str | Path, slot: int) -> dict[str, str]:
        """Load a safetensors adapter file into ``slot``; returns its metadata."""
        return _adapters.load_adapter(self, path, slot)

    def merge_adapter(self, slot: int) -> None:
        """Fold ``slot`` into the base weights (then ``slot`` adds nothing)."""
        _adapters.merge_adapter(self, slot)

    def reset_adapter(self, slot: int) -> None:
        """Make ``slot`` a fresh adapter equal to the base."""
        _adapters.reset_adapter(self, slot)

    def adapter_fraction(self) -> float:
        """Size of one adapter slot relative to the base parameter count."""
        return _adapters.adapter_fraction(self)
