"""Error answers that name the field: one shape for FastAPI's validation and ours.

Every error answer of the API is ``{"detail": [...]}`` (FastAPI's shape) whose entries carry
``loc`` (``["body", <field>, ...]``), ``field`` (the dotted path, e.g. ``features[2]``),
``msg`` (what is wrong and the fix) and ``type``. Feedback errors are worded exactly as the
learners' dead-letter queue words them (:func:`cl.events.parse_event`), since the HTTP edge
and Kafka accept the same events.

The ingress refuses a request by raising a :class:`Refusal`, wherever it finds the problem: the
access check (401, 403, 429), the input checks (422), a replica's error answer (422, or 503 with
``Retry-After``), the rollout controller (409, 422), the registry (503). The app's one handler
for it writes the body (:meth:`Refusal.response`).

Example:
    >>> r = Refusal(422, "features", "got 2 values, but the model reads n_features=8; send 8 numbers")
    >>> r.entry()["loc"], r.response().status_code
    (['body', 'features'], 422)
    >>> Refusal.from_replica({"field": "", "message": "no model replica could answer", "status": 503}).retry_after
    1
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from cl.events import EventError, FeedbackEvent, parse_event

__all__ = ["Refusal", "loc_of", "validation_error_response"]

_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def loc_of(field: str) -> list[str | int]:
    """``"input.features[2]"`` -> ``["body", "input", "features", 2]``."""
    parts: list[str | int] = ["body"]
    for name, index in _PART.findall(field):
        parts.append(int(index) if index else name)
    return parts


def _dotted(loc: tuple[Any, ...] | list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclasses.dataclass(eq=False)
class Refusal(Exception):
    """A request the ingress will not answer as asked: raise it, and the app answers its :meth:`response`.

    Attributes:
        status: The HTTP status (401, 403, 409, 422, 429, 503, ...).
        field: The dotted field it is about (``features[2]``, ``Authorization``), or ``""``.
        msg: What is wrong, and the fix.
        type: The entry's ``type``: ``value_error``, or a reason such as ``no_role`` or ``rate_limited``.
        loc: Where the field is; default ``["body", ...]`` from ``field`` (:func:`loc_of`).
        retry_after: Seconds for a ``Retry-After`` header: when trying again may succeed.
        headers: Other headers, e.g. ``WWW-Authenticate`` on a 401.
        extra: More keys of the entry: ``role`` (401, 403), ``limit`` and ``value`` (429).
    """

    status: int
    field: str
    msg: str
    type: str = "value_error"
    loc: list[str | int] | None = None
    retry_after: int | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(f"{self.status} {self.field or 'request'}: {self.msg}")

    def __reduce__(self) -> tuple[Any, ...]:  # rebuilt from its fields, not from ``args`` as exceptions are
        return (type(self), tuple(getattr(self, f.name) for f in dataclasses.fields(self)))

    @classmethod
    def from_replica(cls, error: dict[str, Any]) -> Refusal:
        """A model replica's error answer, ``{"field", "message", "status"}`` (:mod:`serve.model_server`).

        Replicas answer each request of a batch with a plain dict, so one bad request never fails
        its batch; a 503 (a version that cannot be loaded now) may succeed if sent again in a second.
        """
        status = int(error.get("status", 422))
        return cls(status, error["field"], error["message"], retry_after=1 if status == 503 else None)

    def entry(self) -> dict[str, Any]:
        """The one entry of the answer's ``detail`` list."""
        loc = loc_of(self.field) if self.loc is None else self.loc
        return {"type": self.type, "loc": loc, "field": self.field, "msg": self.msg, **self.extra}

    def response(self) -> JSONResponse:
        """The answer: ``{"detail": [entry]}`` with the status and headers."""
        headers = dict(self.headers)
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return JSONResponse(status_code=self.status, content={"detail": [self.entry()]}, headers=headers or None)


def _once_each(errors: Any) -> list[dict[str, Any]]:
    """FastAPI's errors without repeats: a body declared by the route and by its auth dependency
    (``require_role``) is validated twice, and each problem would be reported twice."""
    seen, out = set(), []
    for e in errors:
        key = (tuple(str(part) for part in e.get("loc", ())), e.get("type"), str(e.get("msg")))
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


def validation_error_response(path: str, exc: RequestValidationError) -> JSONResponse:
    """The 422 answer to a body FastAPI could not validate.

    Args:
        path: The request path (``/v1/feedback`` gets the event parser's wording).
        exc: FastAPI's error.
    """
    if path.rstrip("/").endswith("/v1/feedback") and isinstance(exc.body, dict):
        try:
            parse_event(FeedbackEvent, json.dumps(exc.body))
        except EventError as err:
            detail = [
                {"type": err.reason, "loc": loc_of(e["field"]), "field": e["field"], "msg": e["message"]}
                for e in err.errors
            ]
            return JSONResponse(status_code=422, content={"detail": detail})
    detail = []
    for e in _once_each(exc.errors()):
        loc = list(e.get("loc", ()))
        where = loc[1:] if loc[:1] == ["body"] else loc
        field = str((e.get("ctx") or {}).get("field") or _dotted(where))
        msg = str(e.get("msg", "invalid"))
        if e.get("type") == "json_invalid":
            where = f" at character {loc[1]}" if len(loc) > 1 else ""
            error = (e.get("ctx") or {}).get("error", "")
            detail.append(
                {
                    "type": "json_invalid",
                    "loc": ["body"],
                    "field": "",
                    "msg": f"the body is not valid JSON{where} ({error}); send one JSON object",
                }
            )
            continue
        if e.get("type") == "model_attributes_type" and not where:
            msg = "the body must be one JSON object (with Content-Type: application/json)"
        elif e.get("type") == "extra_forbidden":
            msg = "unknown field; remove it (see /docs for the fields this endpoint takes)"
        elif e.get("type") not in ("missing", "one_input", "feedback_signal") and "input" in e:
            shown = repr(e["input"])
            msg += f", got {shown if len(shown) <= 80 else shown[:77] + '...'}"
        detail.append({"type": e.get("type", "value_error"), "loc": loc, "field": field, "msg": msg})
    return JSONResponse(status_code=422, content={"detail": detail})
