"""``stream: true``: completions and chat completions as server-sent events, in OpenAI's wire format.

Each event is one line ``data: <json chunk>`` and a blank line; the chunks are OpenAI's
``text_completion`` (``choices[].text``) or ``chat.completion.chunk`` (``choices[].delta``, the
first one with ``role: assistant``), each choice ends with a chunk that has its
``finish_reason``, ``stream_options.include_usage`` adds a chunk of no choices with the usage,
and ``data: [DONE]`` ends the stream. Every chunk has the completion's ``id`` (the first
choice's ``request_id``, as unstreamed), ``model``, ``model_version`` and ``arm``; every choice
its own ``request_id``.

The text comes from the replicas as they generate it (``ModelReplica.generate_stream``), and
several choices are interleaved as their pieces arrive. A stop sequence is cut as unstreamed
(:func:`serve._private.completions.cut_at_stop`): :class:`StopScanner` holds back what may
still become a stop sequence, so the joined pieces are exactly the unstreamed text. When the
stream ends, however it ends, ``on_end`` gets the texts that were sent, to log them.

Example:
    >>> scanner = StopScanner(["END"])
    >>> [scanner.feed(p) for p in ("ab", "cE", "N", "Dxyz")], scanner.stopped, scanner.text
    (['', 'ab', 'c', ''], True, 'abc')
    >>> event({"a": 1})
    b'data: {"a":1}\\n\\n'
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from serve._private.completions import Job, ServedAs, cut_at_stop, finish, openai_error, usage
from serve._private.errors import Refusal

__all__ = ["DONE", "HEADERS", "MEDIA_TYPE", "StopScanner", "StreamedChoice", "event", "stream_events"]

MEDIA_TYPE = "text/event-stream"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy may hold the events back
DONE = b"data: [DONE]\n\n"


def event(data: dict[str, Any]) -> bytes:
    """One server-sent event carrying ``data`` as JSON."""
    return b"data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n\n"


class StopScanner:
    """Cuts a text that arrives in pieces where :func:`cut_at_stop` cuts the whole of it.

    Text is released only when no stop sequence can begin in it any more: an occurrence that
    starts earlier than one already found may still be completing, so the last
    ``len(longest stop) - 1`` characters are held back until more text (or the end) decides.

    Args:
        stop: The request's ``stop``: a string, up to 4, or None.
    """

    def __init__(self, stop: str | list[str] | None) -> None:
        self.stop = stop
        stops = [stop] if isinstance(stop, str) else [s for s in stop or [] if s]
        self.hold = max((len(s) for s in stops if s), default=1) - 1
        self.raw = ""  # everything received
        self.text = ""  # everything released
        self.stopped = False

    def feed(self, piece: str) -> str:
        """Take the next piece; returns the text now released (``""`` if none)."""
        if self.stopped:
            return ""
        self.raw += piece
        cut, found = cut_at_stop(self.raw, self.stop)
        horizon = len(self.raw) - self.hold  # a stop starting before this would be complete already
        if found and len(cut) <= horizon:
            self.stopped = True
            return self._release(cut)
        return self._release(self.raw[: max(horizon, len(self.text))])

    def end(self) -> str:
        """The generation ended: release the rest, cut at a stop sequence if one is there."""
        if self.stopped:
            return ""
        cut, self.stopped = cut_at_stop(self.raw, self.stop)
        return self._release(cut)

    def _release(self, upto: str) -> str:
        piece, self.text = upto[len(self.text) :], upto
        return piece


@dataclass
class StreamedChoice:
    """One choice of a streamed answer: its job, its ``request_id`` and the replica's stream.

    ``source`` yields the replica's ``{"text": piece}`` messages (after the first, which the
    route has read); a ``cancel()`` on it, if it has one, stops the generation on the replica.
    """

    job: Job
    request_id: str
    source: Any
    scanner: StopScanner = field(init=False)
    finish_reason: str | None = None

    def bind(self, stop: str | list[str] | None) -> StreamedChoice:
        self.scanner = StopScanner(stop)
        return self

    def cancel(self) -> None:
        cancel = getattr(self.source, "cancel", None)
        if cancel is not None:
            cancel()


_END = object()


async def stream_events(
    *,
    chat: bool,
    choices: list[StreamedChoice],
    served: ServedAs,
    created: int,
    stop: str | list[str] | None,
    include_usage: bool,
    on_end: Callable[[list[str]], None],
) -> AsyncIterator[bytes]:
    """The events of one streamed answer, as the replicas' pieces arrive.

    Args:
        chat: ``chat.completion.chunk`` chunks (else ``text_completion``).
        choices: The choices, in ``index`` order, each with its replica stream.
        served: Who answers (model name, version, arm).
        created: The answer's unix time.
        stop: The request's stop sequences.
        include_usage: End with a usage chunk (``stream_options.include_usage``).
        on_end: Called once with each choice's sent text when the stream ends (also when the
            client went away or a replica failed): the request log.

    Yields:
        Encoded events; a replica failing mid-stream ends it with an ``error`` event and no ``[DONE]``.
    """
    for choice in choices:
        choice.bind(stop)
    head: dict[str, Any] = {
        "id": choices[0].request_id,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": created,
        "model": served.model,
        "model_version": served.version,
        "arm": served.arm,
    }
    if include_usage:
        head["usage"] = None

    def chunk(index: int, text: str | None = None, *, role: bool = False, reason: str | None = None) -> bytes:
        choice = choices[index]
        if chat:
            delta = {"role": "assistant"} if role else {}
            if text is not None:
                delta["content"] = text
            body = {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
        else:
            body = {"text": text or "", "index": index, "logprobs": None, "finish_reason": reason}
        return event({**head, "choices": [{**body, "request_id": choice.request_id}]})

    queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()

    async def read(index: int) -> None:
        try:
            async for message in choices[index].source:
                await queue.put((index, message))
        except Exception as e:  # noqa: BLE001 - handed to the loop below, which tells the client
            await queue.put((index, e))
        else:
            await queue.put((index, _END))

    readers = [asyncio.create_task(read(i)) for i in range(len(choices))]
    try:
        if chat:
            for i in range(len(choices)):
                yield chunk(i, "", role=True)
        open_choices = len(choices)
        while open_choices:
            index, message = await queue.get()
            choice = choices[index]
            if choice.finish_reason is not None:
                continue  # stopped at a stop sequence: what else it sent is not served
            failed = message if isinstance(message, Exception) else None
            if isinstance(message, dict) and "error" in message:
                failed = Refusal.from_replica(message["error"])
            if failed is not None:
                yield _error_event(failed)
                return
            if message is _END:
                rest = choice.scanner.end()
                if rest:
                    yield chunk(index, rest)
                choice.finish_reason = finish(choice.job, choice.scanner.raw, stop)[1]
            else:
                piece = choice.scanner.feed(message.get("text", ""))
                if piece:
                    yield chunk(index, piece)
                if choice.scanner.stopped:
                    choice.finish_reason = "stop"
                    choice.cancel()
                    readers[index].cancel()
            if choice.finish_reason is not None:
                open_choices -= 1
                yield chunk(index, reason=choice.finish_reason)
        if include_usage:
            counts = usage([c.job.prompt for c in choices], [c.scanner.text for c in choices])
            yield event({**head, "choices": [], "usage": counts.model_dump()})
        yield DONE
    finally:
        for choice, reader in zip(choices, readers):
            if choice.finish_reason is None:
                choice.cancel()
            reader.cancel()
        on_end([c.scanner.text for c in choices])


def _error_event(error: Exception) -> bytes:
    """The event that ends a stream whose replica failed, in both error shapes (the client raises it)."""
    if not isinstance(error, Refusal):
        error = Refusal(503, "", f"the model replica stopped while streaming ({type(error).__name__}); retry")
    entry = error.entry()
    return event({"error": openai_error([entry]), "detail": [entry]})
