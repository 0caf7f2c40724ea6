"""Refuse request bodies over ``serve.max_body_bytes`` with 413 before they are parsed.

An ASGI middleware: a declared ``Content-Length`` over the limit is refused at once, and a
body sent without one (chunked) is counted as it arrives and refused once it passes the limit.
The limit is set per process by the ingress (``configure``), since the FastAPI app, and so
its middleware, is built at import time.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["BodyLimit", "configure"]

_limit = {"max_bytes": 1_048_576}


def configure(max_bytes: int) -> None:
    """Set the limit for this process (the ingress calls it with ``serve.max_body_bytes``)."""
    _limit["max_bytes"] = int(max_bytes)


class _TooLarge(Exception):
    pass


def _body(size: str, limit: int) -> bytes:
    message = (
        f"the request body is {size}, over the limit of {limit} bytes (serve.max_body_bytes); "
        "send less, e.g. shorter text"
    )
    entry = {
        "type": "body_too_large",
        "loc": ["body"],
        "field": "",
        "msg": message,
        "limit": "serve.max_body_bytes",
        "value": limit,
    }
    return json.dumps({"detail": [entry]}).encode()


class BodyLimit:
    """The middleware (``app.add_middleware(BodyLimit)``)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = _limit["max_bytes"]
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await self._refuse(send, f"{int(declared)} bytes", limit)
        seen = 0
        too_large = refused = False

        async def counted_receive() -> dict:
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    too_large = True
                    raise _TooLarge
            return message

        async def guarded_send(message: dict) -> None:
            # FastAPI turns an error while reading the body into its own 400; say 413 instead.
            nonlocal refused
            if not too_large:
                return await send(message)
            if not refused:
                refused = True
                await self._refuse(send, f"more than {limit} bytes", limit)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except _TooLarge:
            if not refused:
                await self._refuse(send, f"more than {limit} bytes", limit)

    @staticmethod
    async def _refuse(send: Any, size: str, limit: int) -> None:
        body = _body(size, limit)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
