"""Server-sent events of streamed completions and chats: stop sequences cut as unstreamed, OpenAI's chunks."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cl.serving.inference import GenerateItem
from serve._private.completions import Job, ServedAs, cut_at_stop
from serve._private.sse import DONE, StopScanner, StreamedChoice, stream_events

SERVED = ServedAs("cl-adapter", "7", "champion")


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet="abcE", max_size=30),
    st.lists(st.text(alphabet="abcE", max_size=4), max_size=4) | st.none() | st.text(alphabet="abcE", max_size=3),
    st.lists(st.integers(1, 5), max_size=30),
)
def test_a_streamed_text_is_cut_where_the_whole_text_is(text: str, stop: Any, sizes: list[int]) -> None:
    scanner, sent, at = StopScanner(stop), [], 0
    for size in sizes + [len(text)]:
        sent.append(scanner.feed(text[at : at + size]))
        at += size
    sent.append(scanner.end())
    assert ("".join(sent), scanner.stopped) == cut_at_stop(text, stop)
    assert scanner.text == "".join(sent)


class _Source:
    """A replica stream after its first message: ``{"text": piece}`` for each string, any other
    message as it is, an exception raised."""

    def __init__(self, pieces: list[Any], delay_s: float = 0.0) -> None:
        self.pieces, self.delay_s, self.cancelled = pieces, delay_s, False

    def cancel(self) -> None:
        self.cancelled = True

    async def _run(self):
        for piece in self.pieces:
            await asyncio.sleep(self.delay_s)
            if isinstance(piece, Exception):
                raise piece
            yield {"text": piece} if isinstance(piece, str) else piece

    def __aiter__(self):
        return self._run()


def _run(sources: list[_Source], *, chat: bool, stop: Any = None, usage: bool = False, max_tokens: int = 8):
    logged: list[list[str]] = []

    async def main() -> list[bytes]:
        choices = [
            StreamedChoice(Job("hi", GenerateItem(prompt="hi", max_new_tokens=max_tokens)), f"r{i}", s)
            for i, s in enumerate(sources)
        ]
        events = stream_events(
            chat=chat, choices=choices, served=SERVED, created=1, stop=stop, include_usage=usage, on_end=logged.append
        )
        return [e async for e in events]

    return asyncio.run(main()), logged


def _chunks(events: list[bytes]) -> list[dict[str, Any]]:
    assert all(e.startswith(b"data: ") and e.endswith(b"\n\n") for e in events)
    return [json.loads(e[6:]) for e in events if e != DONE]


def test_chat_chunks_start_with_the_role_end_with_the_finish_reason_then_done() -> None:
    events, logged = _run([_Source(["He", "llo", " wo", "rld"])], chat=True, stop=" w", usage=True, max_tokens=16)
    assert events[-1] == DONE
    chunks = _chunks(events)
    assert {(c["id"], c["object"], c["model"], c["model_version"], c["arm"]) for c in chunks} == {
        ("r0", "chat.completion.chunk", "cl-adapter:7", "7", "champion")
    }
    choices = [c["choices"][0] for c in chunks[:-1]]
    assert choices[0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["delta"].get("content", "") for c in choices) == "Hello"
    assert choices[-1] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop", "request_id": "r0"}
    assert all(c["finish_reason"] is None for c in choices[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 5,
        "total_tokens": 8,
    }
    assert all(c["usage"] is None for c in chunks[:-1])
    assert logged == [["Hello"]]


def test_completion_chunks_interleave_choices_and_say_length_when_the_tokens_ran_out() -> None:
    slow, fast = _Source(["ab", "cd"], delay_s=0.05), _Source(["xyz"])
    events, logged = _run([slow, fast], chat=False, max_tokens=4)
    chunks = _chunks(events)
    assert all(c["object"] == "text_completion" and "usage" not in c for c in chunks)
    order = [(c["choices"][0]["index"], c["choices"][0]["text"], c["choices"][0]["finish_reason"]) for c in chunks]
    assert order.index((1, "", "stop")) < order.index((0, "ab", None))  # the fast choice did not wait
    assert [o for o in order if o[0] == 0] == [(0, "ab", None), (0, "cd", None), (0, "", "length")]
    assert {c["choices"][0]["request_id"] for c in chunks if c["choices"][0]["index"] == 1} == {"r1"}
    assert logged == [["abcd", "xyz"]]


def test_a_stop_sequence_stops_that_generation_on_the_replica() -> None:
    source = _Source(["a.", "b", "c"])
    events, logged = _run([source], chat=False, stop=".")
    assert source.cancelled and logged == [["a"]]
    assert [c["choices"][0]["text"] for c in _chunks(events)] == ["a", ""]


@pytest.mark.parametrize(
    ("failure", "words"),
    [
        (RuntimeError("ActorDiedError"), "replica stopped while streaming (RuntimeError)"),
        ({"error": {"field": "model_version", "message": "gone", "status": 422}}, "model_version: gone"),
    ],
)
def test_a_replica_failing_mid_stream_ends_it_with_an_error_event_and_the_text_sent_is_logged(failure, words):
    events, logged = _run([_Source(["ab", failure, "never"])], chat=True)
    assert events[-1] != DONE
    last = json.loads(events[-1][6:])
    assert last["error"]["type"] == "invalid_request_error" and words in last["error"]["message"]
    assert last["detail"][0]["loc"][0] == "body"
    assert logged == [["ab"]]


def test_a_client_that_goes_away_stops_the_generations_and_what_it_got_is_logged() -> None:
    source, logged = _Source(["a", "b", "c", "d"], delay_s=0.05), []

    async def main() -> None:
        choice = StreamedChoice(Job("hi", GenerateItem(prompt="hi")), "r0", source)
        events = stream_events(
            chat=False, choices=[choice], served=SERVED, created=1, stop=None, include_usage=False, on_end=logged.append
        )
        async for e in events:
            if b'"text":"b"' in e:
                break
        await events.aclose()

    asyncio.run(main())
    assert source.cancelled and logged == [["ab"]]
