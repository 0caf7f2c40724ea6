"""A checkpoint's own tokenizer: ``tokenizer.json`` through the ``tokenizers`` library.

``tokenizer_config.json`` (or ``chat_template.jinja``, where newer ``transformers`` writes it)
gives the chat template and which added tokens are BOS/EOS. Padding uses an id outside the
vocabulary (``pad_id == vocab_size``), so no real token, EOS included, is ever taken for padding.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from cl.model.checkpoint import CheckpointError
from cl.model.tokenizer import Tokenizer

__all__ = ["CheckpointTokenizer"]


def _token_text(value: object) -> str | None:
    """A special token as ``tokenizer_config.json`` writes it: a string or an AddedToken dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


class CheckpointTokenizer(Tokenizer):
    """Encode and decode with a checkpoint's ``tokenizer.json``.

    Args:
        directory: The checkpoint directory.
        vocab_size: The model's vocabulary (embedding rows); every tokenizer id must be below it.
        bos_id: BOS from ``config.json`` (``None``: from ``tokenizer_config.json``'s ``bos_token``,
            else no BOS is added).
        eos_ids: EOS ids from ``config.json``.

    Raises:
        CheckpointError: No ``tokenizer.json``, or a tokenizer with ids the model has no row for.
    """

    def __init__(self, directory: str | Path, vocab_size: int, bos_id: int | None, eos_ids: Sequence[int]) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        directory = Path(directory)
        path = directory / "tokenizer.json"
        if not path.is_file():
            raise CheckpointError(f"model.checkpoint: {path} not found; the checkpoint must ship its tokenizer.json")
        self._tok = HFTokenizer.from_file(str(path))
        size = self._tok.get_vocab_size(with_added_tokens=True)
        if size > vocab_size:
            raise CheckpointError(
                f"model.checkpoint: tokenizer.json has {size} tokens but config.json vocab_size={vocab_size}; "
                "the tokenizer does not belong to these weights"
            )
        extra = {}
        config_path = directory / "tokenizer_config.json"
        if config_path.is_file():
            extra = json.loads(config_path.read_text())
        template = directory / "chat_template.jinja"
        self.chat_template = template.read_text() if template.is_file() else extra.get("chat_template")
        self.bos_token = _token_text(extra.get("bos_token")) or ""
        self.eos_token = _token_text(extra.get("eos_token")) or ""
        if bos_id is None and self.bos_token:
            bos_id = self._tok.token_to_id(self.bos_token)
        self.bos_id = bos_id if extra.get("add_bos_token", bos_id is not None) else None
        eos = list(eos_ids) or ([self._tok.token_to_id(self.eos_token)] if self.eos_token else [])
        self.eos_ids = tuple(i for i in eos if i is not None)
        self.eos_id = self.eos_ids[0] if self.eos_ids else vocab_size
        self.pad_id = vocab_size
        self.vocab_size = vocab_size

    def encode(self, text: str, *, bos: bool = True, eos: bool = False) -> list[int]:
        """Ids of ``text`` (no template or specials of the tokenizer's own post-processor)."""
        if not isinstance(text, str):
            raise ValueError(f"CheckpointTokenizer.encode expects a str, got {type(text).__name__}")
        ids = self._tok.encode(text, add_special_tokens=False).ids
        head = [self.bos_id] if bos and self.bos_id is not None else []
        tail = [self.eos_id] if eos and self.eos_ids else []
        return head + ids + tail

    def decode(self, ids: Sequence[int] | torch.Tensor, *, stop_at_eos: bool = True) -> str:
        """Text of ``ids`` with special tokens and padding dropped."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        kept = []
        for i in ids:
            if stop_at_eos and i in self.eos_ids:
                break
            if 0 <= i < self.vocab_size:
                kept.append(i)
        return self._tok.decode(kept, skip_special_tokens=True)
