"""422 bodies that name the field: one shape for FastAPI's validation and ours.

Every error answer of the API is ``{"detail": [...]}`` (FastAPI's shape) whose entries carry
``loc`` (``["body", <field>, ...]``), ``field`` (the dotted path, e.g. ``features[2]``),
``msg`` (what is wrong and the fix) and ``type``. Feedback errors are worded exactly as the
learners' dead-letter queue words them (:func:`cl.events.parse_event`), since the HTTP edge
and Kafka accept the same events.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from cl.events import EventError, FeedbackEvent, parse_event

__all__ = ["field_error", "loc_of", "validation_error_response"]

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


def field_error(field: str, message: str, status: int = 422, type_: str = "value_error") -> JSONResponse:
    """A one-entry error answer about ``field``."""
    entry = {"type": type_, "loc": loc_of(field), "field": field, "msg": message}
    return JSONResponse(status_code=status, content={"detail": [entry]})


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
    for e in exc.errors():
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
