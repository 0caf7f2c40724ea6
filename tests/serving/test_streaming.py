"""Streamed generation: incremental decoding, the same text as a whole generation, the thread hand-over."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cl.model import ByteTokenizer
from cl.model.base_model import build_base_model
from cl.serving.inference import GenerateItem, generate_batch
from cl.serving.streaming import IncrementalDecoder, iterate_in_thread, stream_generate
from tests.serving.conftest import random_adapter

TOK = ByteTokenizer()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.lists(st.integers(1, 6), max_size=40))
def test_pieces_join_to_the_whole_and_never_split_a_character(text: str, sizes: list[int]) -> None:
    ids = TOK.encode(text, bos=False)
    decoder, pieces, at = IncrementalDecoder(TOK), [], 0
    for size in sizes + [len(ids)]:  # ids arrive a few at a time
        pieces.append(decoder.push(ids[at : at + size]))
        at += size
    pieces.append(decoder.flush())
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces) or "\ufffd" in text


def test_bytes_that_never_complete_a_character_come_out_as_the_whole_decodes_them() -> None:
    decoder = IncrementalDecoder(TOK)
    assert decoder.push([0xE6, 0x97]) == ""  # two of 日's three bytes
    assert decoder.push([ord("x")]) == "\ufffdx"  # not a character after all: as decode says
    assert decoder.push([0xF0, 0x9F]) == ""  # the generation ends halfway through 🙂
    assert decoder.flush() == "\ufffd"
    assert decoder.text == TOK.decode([0xE6, 0x97, ord("x"), 0xF0, 0x9F])
    assert decoder.push([TOK.eos_id, ord("y")]) == "" and decoder.flush() == ""  # nothing after EOS


@pytest.mark.parametrize(
    "item",
    [
        GenerateItem(prompt="hello", max_new_tokens=12),
        GenerateItem(prompt="hello", max_new_tokens=12, slot=1),
        GenerateItem(prompt="héllo wörld", max_new_tokens=20, temperature=1.3, top_p=0.9, seed=5),
    ],
)
def test_a_stream_is_the_text_generate_batch_gives(section, item: GenerateItem) -> None:
    model = build_base_model(section, n_adapter_slots=2)
    model.load_adapter_state(1, random_adapter(model.adapter_state(1), seed=3))
    pieces = list(stream_generate(model, item))
    assert "".join(pieces) == generate_batch(model, [item])[0]
    assert len(pieces) > 1 and all(pieces)  # one piece per token here: it streams


def test_a_stream_closed_early_leaves_the_model_as_it_was(section) -> None:
    model = build_base_model(section).train()
    stream = stream_generate(model, GenerateItem(prompt="hello", max_new_tokens=8))
    next(stream)
    assert not model.training
    stream.close()
    assert model.training


def _collect(items: Iterator[int], stop_after: int | None = None) -> list[int]:
    async def main() -> list[int]:
        out = []
        async for item in iterate_in_thread(items):
            out.append(item)
            if len(out) == stop_after:
                break
        return out

    return asyncio.run(main())


def test_iterate_in_thread_hands_over_every_item_in_order_and_raises_what_the_iterator_raises() -> None:
    threads = []

    def numbers() -> Iterator[int]:
        threads.append(threading.current_thread())
        yield from range(50)
        raise KeyError("broken")

    with pytest.raises(KeyError, match="broken"):
        _collect(numbers())
    assert threads[0] is not threading.main_thread()
    assert _collect(iter(range(5))) == [0, 1, 2, 3, 4]


def test_iterate_in_thread_closes_the_iterator_when_the_consumer_stops() -> None:
    lock, closed, produced = threading.Lock(), threading.Event(), []

    def held() -> Iterator[int]:
        with lock:  # as ModelServer.generate_stream holds its lock
            try:
                for i in range(10_000):
                    produced.append(i)
                    yield i
            finally:
                closed.set()

    assert _collect(held(), stop_after=3) == [0, 1, 2]
    assert closed.wait(5.0) and lock.acquire(timeout=5.0)
    assert len(produced) < 10_000
