"""Who may call what at the HTTP edge: API-key roles, feedback rate limits, the audit trail.

==============================  =========================
``/v1/predict``, ``/v1/generate``  role ``predict``
``/v1/feedback``                role ``feedback`` (and at most ``auth.feedback_rate_per_s`` per key)
``/v1/admin/*``                 role ``admin``
``/v1/models``, ``/v1/rollout``  any valid key
``/healthz``, ``/docs``          open
==============================  =========================

A key comes as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Refusals are JSON
in the API's error shape: 401 (no or bad key, with ``WWW-Authenticate``), 403 (the key lacks
the role, or its grant expired), 429 (too much feedback, with ``Retry-After``). Each refusal
and each admin action is appended to the audit trail and announced on ``cl.events``; a flood
of the same refusal (reason, caller and path) is recorded once per ``REFUSAL_RECORD_EVERY_S``
with a count, so it cannot fill the disk; a refusal on another path is recorded at once, so a
rate-limited client probing ``/v1/admin/*`` still shows up.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

from fastapi import Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPBearer

from cl.config import Config
from cl.security import AuditTrail, AuthError, KeyRecord, KeyStore, RateLimiter

__all__ = ["AUTH_DOC", "Access", "Caller", "announce_audit", "cli_actor"]

logger = logging.getLogger("ray.serve")

REFUSAL_RECORD_EVERY_S = 10.0

# No-op dependencies: they only put both key schemes in the OpenAPI document (the check is
# ``Access.admit``, which also audits), so clients and schemathesis know to send a key.
AUTH_DOC = [
    Security(HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")),
    Security(APIKeyHeader(name="X-API-Key", auto_error=False, description="The API key (alternative header)")),
]


@dataclass(frozen=True)
class Caller:
    """Who is calling: ``actor`` for the audit trail, ``key`` when auth is on."""

    actor: str
    key: KeyRecord | None = None

    @property
    def rate_key(self) -> str:
        return f"key:{self.key.key_id}" if self.key else self.actor


def _presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("x-api-key") or None


def _refusal(
    status: int, type_: str, field: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    entry = {"type": type_, "loc": ["header", field], "field": field, "msg": message, **extra}
    return JSONResponse(status_code=status, content={"detail": [entry]}, headers=headers)


def cli_actor() -> str:
    """How a change made with the ``cl`` command is attributed."""
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # noqa: BLE001 - no user name in a container is not an error
        return "cli:unknown"


def announce_audit(producer: Any, config: Config, record: dict[str, Any]) -> None:
    """Queue ``record`` on ``cl.events`` as a ``LifecycleEvent(type="audit")`` (not waited for)."""
    from cl.events import LifecycleEvent

    producer.send(config.topics.events, LifecycleEvent(type="audit", payload=record))


class Access:
    """The ingress's gatekeeper; see the module docstring.

    Args:
        config: The service config (``auth`` section, key file and audit file paths).
        announce: Called with each audit record to publish it (the ingress sends it to Kafka).
    """

    def __init__(self, config: Config, announce: Callable[[dict[str, Any]], None]) -> None:
        self.enabled = config.auth.enabled
        self.keys = KeyStore(config.keys_path)
        self.trail = AuditTrail(config.audit_path)
        self.feedback_limiter = RateLimiter(config.auth.feedback_rate_per_s, config.auth.feedback_burst)
        self.rate_per_s = config.auth.feedback_rate_per_s
        self.announce = announce
        self.refused = 0
        self._last_recorded: dict[
            tuple[str, str, str], tuple[float, int]
        ] = {}  # (reason, actor, path) -> (at, unrecorded since)

    async def admit(self, request: Request, role: str | None) -> Caller | JSONResponse:
        """The caller if it may act as ``role`` (None: any valid key), else the refusal to return."""
        client = request.client.host if request.client else "unknown"
        if not self.enabled:
            caller = Caller(actor=f"client:{client}")
        else:
            try:
                key = self.keys.authenticate(_presented_key(request))
                key.check(role)
            except AuthError as e:
                await self._refused(
                    request, e.status, e.reason, str(e), actor=f"key:{e.key_id}" if e.key_id else f"client:{client}"
                )
                headers = {"WWW-Authenticate": 'Bearer realm="cl"'} if e.status == 401 else None
                return _refusal(e.status, e.reason, "Authorization", str(e), headers, role=role)
            caller = Caller(actor=f"key:{key.key_id} ({key.name})", key=key)
        if role == "feedback":
            wait = self.feedback_limiter.take(caller.rate_key, time.monotonic())
            if wait > 0:
                message = (
                    f"more than {self.rate_per_s:g} feedback events per second from this key "
                    f"(auth.feedback_rate_per_s); retry after {wait:.2f} s"
                )
                await self._refused(request, 429, "rate_limited", message, actor=caller.actor)
                return _refusal(
                    429,
                    "rate_limited",
                    "Authorization",
                    message,
                    {"Retry-After": str(math.ceil(wait))},
                    limit="auth.feedback_rate_per_s",
                    value=self.rate_per_s,
                )
        return caller

    async def _refused(self, request: Request, status: int, reason: str, message: str, actor: str) -> None:
        self.refused += 1
        now = time.monotonic()
        seen = (reason, actor, request.url.path)
        at, unrecorded = self._last_recorded.get(seen, (-math.inf, 0))
        if now - at < REFUSAL_RECORD_EVERY_S:
            self._last_recorded[seen] = (at, unrecorded + 1)
            return
        if len(self._last_recorded) > 10_000:
            self._last_recorded.clear()
        self._last_recorded[seen] = (now, 0)
        details = {
            "method": request.method,
            "path": request.url.path,
            "status": status,
            "message": message,
            "also_refused_since_last_record": unrecorded,
        }
        await self.record(
            "auth_failed" if status in (401, 403) else "rate_limited", actor, f"{status} {reason}", details
        )

    async def record(self, action: str, actor: str, outcome: str, details: dict[str, Any]) -> None:
        """Append to the audit trail and announce it; a failure is logged, never raised."""
        try:
            record = await asyncio.to_thread(self.trail.append, action, actor=actor, outcome=outcome, details=details)
            self.announce(record)
        except Exception as e:  # noqa: BLE001 - auditing must not take the API down
            logger.error("audit record %s by %s not written: %s", action, actor, e)
