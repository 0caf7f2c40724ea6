"""Streamed generation: text pieces as the model samples them, for server-sent events.

* :class:`IncrementalDecoder` turns a growing list of token ids into text pieces. A piece never
  ends in half a character: while the text decoded so far ends in U+FFFD (the bytes of a
  multi-byte UTF-8 character not all there yet), it is held back, so a client never sees a
  replacement character that the whole text does not have.
* :func:`stream_generate` continues one prompt through :func:`cl.model.generation.generate_steps`
  and yields each piece as soon as it is decoded; the pieces join to what
  :func:`cl.serving.inference.generate_batch` returns for the same item alone.
* :func:`iterate_in_thread` drives such a blocking iterator in a thread of its own and hands
  its items to an ``async for`` (a model replica's streaming method), stopping it when the
  consumer goes away.

Example:
    >>> from cl.model import ByteTokenizer
    >>> decoder = IncrementalDecoder(ByteTokenizer())
    >>> [decoder.push([b]) for b in "hé!".encode()]  # é is two bytes: nothing until both came
    ['h', '', 'é', '!']
    >>> decoder.text
    'hé!'
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import TypeVar

import torch

from cl.model.generation import generate_steps
from cl.model.tokenizer import Tokenizer
from cl.model.transformer import MoETransformer
from cl.serving.inference import GenerateItem

__all__ = ["IncrementalDecoder", "iterate_in_thread", "stream_generate"]

T = TypeVar("T")
_REPLACEMENT = "\ufffd"


class IncrementalDecoder:
    """Text pieces of a generation whose ids arrive a few at a time.

    Each :meth:`push` decodes all ids so far and returns what is new since the last piece;
    :meth:`flush` returns the rest at the end. Joined, the pieces are ``tokenizer.decode(ids)``
    (for a tokenizer whose decoding of a prefix is a prefix of the whole's, as byte-level BPE's is).

    Args:
        tokenizer: The model's tokenizer.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.text = ""  # what the pieces so far add up to

    def push(self, ids: Iterable[int]) -> str:
        """Add ``ids``; returns the new text, ``""`` while a character is incomplete."""
        self.ids.extend(ids)
        decoded = self.tokenizer.decode(self.ids)
        if decoded.endswith(_REPLACEMENT) or not decoded.startswith(self.text):
            return ""  # wait for the rest of the character (or for the text to settle)
        return self._advance(decoded)

    def flush(self) -> str:
        """The text not yet returned: an incomplete character the generation ended on, as U+FFFD."""
        decoded = self.tokenizer.decode(self.ids)
        return self._advance(decoded) if decoded.startswith(self.text) else ""

    def _advance(self, decoded: str) -> str:
        piece, self.text = decoded[len(self.text) :], decoded
        return piece


def stream_generate(model: MoETransformer, item: GenerateItem, tokenizer: Tokenizer | None = None) -> Iterator[str]:
    """Continue ``item.prompt``, yielding text pieces as the model samples them.

    The same tokens as ``generate_batch(model, [item])`` (one row, the same seed); ``item`` must
    have passed :func:`cl.serving.inference.check_generate` and name a loaded adapter slot.

    Args:
        model: The serving model.
        item: The request and its adapter slot.
        tokenizer: The model's tokenizer (default ``model.tokenizer``).

    Example:
        >>> from cl.model.base_model import build_base_model
        >>> from cl.config import ModelSection
        >>> from cl.serving.inference import generate_batch
        >>> model, item = build_base_model(ModelSection()), GenerateItem(prompt="hello", max_new_tokens=6)
        >>> "".join(stream_generate(model, item)) == generate_batch(model, [item])[0]
        True

    Yields:
        Non-empty pieces of text, in order (a piece may hold several tokens' text).
    """
    tokenizer = tokenizer or model.tokenizer
    tokens = tokenizer.batch([item.prompt], pad_side="left")  # (1, T)
    steps = generate_steps(
        model,
        tokens,
        max_new_tokens=item.max_new_tokens,
        adapter_ids=torch.tensor([item.slot], dtype=torch.long, device=model.device),
        temperature=float(item.temperature),
        top_p=float(item.top_p),
        seed=item.seed if item.temperature > 0 else None,
    )
    decoder = IncrementalDecoder(tokenizer)
    try:
        for step in steps:
            piece = decoder.push(step.tolist())  # (1,): this step's id
            if piece:
                yield piece
        rest = decoder.flush()
        if rest:
            yield rest
    finally:
        steps.close()  # a consumer that stopped early leaves the model as it found it


_END = object()


async def iterate_in_thread(items: Iterator[T], *, name: str = "cl-stream") -> AsyncIterator[T]:
    """The items of a blocking iterator, produced in a thread of its own, for ``async for``.

    The thread runs ahead of the consumer (it never waits for it), so a lock the iterator holds
    is held only while it computes. When the consumer stops early (a client disconnects, the
    task is cancelled) the thread closes the iterator before its next item.

    Args:
        items: The iterator; it is advanced and closed only in the thread.
        name: The thread's name.

    Yields:
        The items, in order; an exception the iterator raises is raised here.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    stop = threading.Event()

    def hand_over(entry: object) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, entry)
        except RuntimeError:  # the loop is gone: nobody is listening any more
            stop.set()

    def run() -> None:
        try:
            for item in items:
                hand_over((item,))
                if stop.is_set():
                    break
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            hand_over(e)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
            hand_over(_END)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        while True:
            entry = await queue.get()
            if entry is _END:
                return
            if isinstance(entry, BaseException):
                raise entry
            yield entry[0]  # type: ignore[index]
    finally:
        stop.set()
