"""Who may call what at the HTTP edge: API-key roles, feedback rate limits, the audit trail.

======================================================  ================================================================
``/v1/predict``, ``/v1/generate``, ``/v1/completions``  role ``predict``
``/v1/chat/completions``                                role ``predict``
``/v1/feedback``                                        role ``feedback`` (at most ``auth.feedback_rate_per_s`` per key)
``/v1/admin/*``                                         role ``admin``
``/v1/models``, ``/v1/rollout``                         any valid key
``/healthz``, ``/docs``                                 open
======================================================  ================================================================

Each route declares what it needs as a FastAPI dependency, :func:`require_role` (e.g.
``dependencies=[require_role("predict", PredictRequest)]``, or ``caller: Caller =
require_role("admin", PromoteRequest)`` when the route needs to know who): the route runs only
for an admitted caller. A key comes as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.
A refusal is raised as a :class:`serve._private.errors.Refusal` and answered as JSON in the
API's error shape: 401 (no or bad key, with ``WWW-Authenticate``), 403 (the key lacks the role,
or its grant expired), 429 (too much feedback, with ``Retry-After``).
Each refusal and each admin action is appended to the audit trail and announced on
``cl.events``; a flood of the same refusal (reason, caller and path) is recorded once per
``REFUSAL_RECORD_EVERY_S`` with a count, so it cannot fill the disk; a refusal on another path
is recorded at once, so a rate-limited client probing ``/v1/admin/*`` still shows up.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPBearer
from ray import serve

from cl.config import Config
from cl.security import AccessDenied, AuditTrail, KeyRecord, KeyStore, RateLimiter
from serve._private.errors import Refusal

__all__ = ["Access", "Caller", "current_access", "require_role"]

logger = logging.getLogger("ray.serve")

REFUSAL_RECORD_EVERY_S = 10.0

# Parameters of every ``require_role`` dependency that only put both key schemes in the OpenAPI
# document (the key is read by ``Access.admit``), so clients and schemathesis know to send one.
_KEY_SCHEMES = [
    inspect.Parameter(
        "_bearer",
        inspect.Parameter.KEYWORD_ONLY,
        default=Security(HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")),
    ),
    inspect.Parameter(
        "_api_key",
        inspect.Parameter.KEYWORD_ONLY,
        default=Security(
            APIKeyHeader(name="X-API-Key", auto_error=False, description="The API key (alternative header)")
        ),
    ),
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
    status: int,
    reason: str,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    retry_after: int | None = None,
    **extra: Any,
) -> Refusal:
    """A refusal about the key, which the caller sends in the ``Authorization`` header."""
    return Refusal(
        status,
        "Authorization",
        message,
        type=reason,
        loc=["header", "Authorization"],
        retry_after=retry_after,
        headers=headers or {},
        extra=extra,
    )


async def current_access() -> Access:
    """The :class:`Access` of the ingress replica serving the request.

    Found as Serve finds each route's ``self``: the replica's one servable object. (Serve runs a
    frozen copy of the FastAPI app, so state put on the module's ``app`` would not be seen.)
    """
    return serve.get_replica_context().servable_object.access


def require_role(role: str | None, body: type | None = None) -> Any:
    """The dependency of a route that needs ``role`` (None: any valid key): the admitted :class:`Caller`.

    Args:
        role: ``predict``, ``feedback`` or ``admin``; None for any valid key.
        body: The route's body model, if it has one (its parameter must be called ``body``).
            Declared here too, FastAPI validates the body before the key is checked: a body that
            does not parse gets its 422 first (docs/security.md), and only valid feedback takes a
            rate-limit token.

    Raises (as the route's answer):
        Refusal: 401, 403 or 429; see :meth:`Access.admit`.
    """

    async def admitted(request: Request, access: Access, **_: Any) -> Caller:
        return await access.admit(request, role)

    # The signature is built, not written: FastAPI reads it to know what to inject, and the body's
    # type differs per route.
    params = [
        inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request),
        inspect.Parameter("access", inspect.Parameter.KEYWORD_ONLY, default=Depends(current_access)),
        *_KEY_SCHEMES,
    ]
    if body is not None:
        params.append(inspect.Parameter("body", inspect.Parameter.KEYWORD_ONLY, annotation=body))
    admitted.__signature__ = inspect.Signature(params, return_annotation=Caller)  # type: ignore[attr-defined]
    return Depends(admitted)


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

    async def admit(self, request: Request, role: str | None) -> Caller:
        """The caller, if it may act as ``role`` (None: any valid key).

        Raises:
            Refusal: 401 (no or bad key), 403 (no such role, or it expired) or 429 (feedback over
                the key's rate), once it is counted and audited.
        """
        client = request.client.host if request.client else "unknown"
        if not self.enabled:
            caller = Caller(actor=f"client:{client}")
        else:
            try:
                key = self.keys.authenticate(_presented_key(request))
                key.check(role)
            except AccessDenied as e:
                await self._refused(
                    request, e.status, e.reason, str(e), actor=f"key:{e.key_id}" if e.key_id else f"client:{client}"
                )
                headers = {"WWW-Authenticate": 'Bearer realm="cl"'} if e.status == 401 else None
                raise _refusal(e.status, e.reason, str(e), headers=headers, role=role) from e
            caller = Caller(actor=f"key:{key.key_id} ({key.name})", key=key)
        if role == "feedback":
            wait = self.feedback_limiter.take(caller.rate_key, time.monotonic())
            if wait > 0:
                message = (
                    f"more than {self.rate_per_s:g} feedback events per second from this key "
                    f"(auth.feedback_rate_per_s); retry after {wait:.2f} s"
                )
                await self._refused(request, 429, "rate_limited", message, actor=caller.actor)
                raise _refusal(
                    429,
                    "rate_limited",
                    message,
                    retry_after=math.ceil(wait),
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
