"""Byte-level tokenizer: UTF-8 bytes plus four special tokens, nothing to download.

>>> tok = ByteTokenizer()
>>> ids = tok.encode("héllo")
>>> ids[0] == tok.bos_id, len(ids)
(True, 7)
>>> tok.decode(ids)
'héllo'
>>> batch = tok.batch(["a", "abc"], pad_side="left")
>>> batch.tolist() == [[tok.pad_id, tok.pad_id, tok.bos_id, 97], [tok.bos_id, 97, 98, 99]]
True
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, Literal

import torch


class Tokenizer(ABC):
    """What the model's text path needs from a tokenizer: ids for text, text for ids, padded batches.

    Subclasses set ``pad_id``, ``bos_id`` (or ``None``), ``eos_id`` and ``vocab_size`` and
    implement :meth:`encode` and :meth:`decode`; :meth:`batch` pads with ``pad_id``, which the
    model recognises as padding.
    """

    pad_id: int
    bos_id: int | None
    eos_id: int
    vocab_size: int
    chat_template: str | None = None  # a Jinja template over ``messages`` (Hugging Face's convention)
    bos_token: str = ""  # the specials as text, for chat templates
    eos_token: str = ""

    @abstractmethod
    def encode(self, text: str, *, bos: bool = True, eos: bool = False) -> list[int]:
        """Ids of ``text``, optionally with BOS first and EOS last."""

    @abstractmethod
    def decode(self, ids: Sequence[int] | torch.Tensor, *, stop_at_eos: bool = True) -> str:
        """Text of ``ids`` without special tokens (up to the first EOS with ``stop_at_eos``)."""

    def count(self, text: str) -> int:
        """Tokens ``text`` takes as a prompt (with BOS)."""
        return len(self.encode(text))

    def batch(
        self,
        texts: Sequence[str],
        *,
        bos: bool = True,
        eos: bool = False,
        max_len: int | None = None,
        pad_side: Literal["left", "right"] = "right",
    ) -> torch.Tensor:
        """Encode and pad several strings into one tensor.

        Use ``pad_side="left"`` for generation prompts and ``"right"`` for classification.
        The model recognises padding by the PAD id, so no separate mask is needed.

        Args:
            texts: Strings to encode.
            bos: Prepend BOS to each.
            eos: Append EOS to each.
            max_len: Truncate each sequence to its last ``max_len`` ids (left padding, keeps
                the prompt's end) or its first ``max_len`` ids (right padding).
            pad_side: Where the padding goes.

        Returns:
            ``(B, T)`` int64 token ids, T the longest (truncated) sequence.

        Raises:
            ValueError: Empty ``texts``, a bad ``pad_side`` or ``max_len < 1``.
        """
        if len(texts) == 0:
            raise ValueError(f"{type(self).__name__}.batch needs at least one text, got an empty sequence")
        if pad_side not in ("left", "right"):
            raise ValueError(f"pad_side must be 'left' or 'right', got {pad_side!r}")
        if max_len is not None and max_len < 1:
            raise ValueError(f"max_len must be >= 1 or None, got {max_len}")
        seqs = [self.encode(t, bos=bos, eos=eos) for t in texts]
        if max_len is not None:
            seqs = [s[-max_len:] if pad_side == "left" else s[:max_len] for s in seqs]
        width = max(1, max(len(s) for s in seqs))
        out = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)  # (B, T)
        for row, s in enumerate(seqs):
            if s:
                if pad_side == "left":
                    out[row, width - len(s) :] = torch.tensor(s)
                else:
                    out[row, : len(s)] = torch.tensor(s)
        return out


class ByteTokenizer(Tokenizer):
    """Maps text to ids 0..255 (its UTF-8 bytes) and reserves 256..259 for specials.

    Ids: ``PAD=256``, ``BOS=257``, ``EOS=258``, ``CLS=259``; ``vocab_size == 260``.
    The tokenizer has no state, so every instance is interchangeable.
    """

    pad_id: ClassVar[int] = 256
    bos_id: ClassVar[int] = 257
    eos_id: ClassVar[int] = 258
    cls_id: ClassVar[int] = 259
    vocab_size: ClassVar[int] = 260

    def encode(self, text: str, *, bos: bool = True, eos: bool = False) -> list[int]:
        """Encode one string.

        Args:
            text: Any Python string; it is encoded as UTF-8.
            bos: Prepend the BOS token.
            eos: Append the EOS token.

        Returns:
            Token ids, each in ``[0, vocab_size)``.

        Raises:
            ValueError: ``text`` is not a ``str``.
        """
        if not isinstance(text, str):
            raise ValueError(f"ByteTokenizer.encode expects a str, got {type(text).__name__}")
        ids = list(text.encode("utf-8"))
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def count(self, text: str) -> int:
        """BOS plus one token per UTF-8 byte."""
        return len(text.encode("utf-8")) + 1

    def decode(self, ids: Sequence[int] | torch.Tensor, *, stop_at_eos: bool = True) -> str:
        """Turn ids back into text, dropping special tokens.

        Args:
            ids: Token ids (a list or a 1-D tensor).
            stop_at_eos: Ignore everything after the first EOS.

        Returns:
            The decoded text; invalid UTF-8 sequences become U+FFFD.
        """
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        out = bytearray()
        for i in ids:
            if i == self.eos_id and stop_at_eos:
                break
            if 0 <= i < 256:
                out.append(i)
        return out.decode("utf-8", errors="replace")
