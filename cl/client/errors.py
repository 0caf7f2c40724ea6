"""What becomes of a failed call: sent again (:class:`RetryPolicy`), or raised as one of these errors.

Retried, ``retries`` times, after waits growing from ``backoff_s`` or as ``Retry-After`` says:

* 502, 503, 504 and connection failures or timeouts, for every call but the admin actions;
* 429 on ``feedback`` only: a rate-limited rating is worth waiting for, and the call sends one
  ``event_id`` on every attempt, so the service applies it once however often it is sent;
* admin actions (``promote``, ``rollback``, ``traffic``) change state, and ``rollback()`` does not
  give the same result twice, so they are sent again only when the service cannot have acted on
  them: no connection could be made, or a 503.

Any other 4xx or 5xx is raised at once, as are the last failure when the retries run out and a
``Retry-After`` above ``MAX_RETRY_AFTER_S`` (it is in the error's ``retry_after``).

Every error answer of the service is ``{"detail": [{"type", "loc", "field", "msg", ...}]}``;
:class:`ServiceError` keeps that list as ``detail`` and puts each entry's field and message in
its own message.

Example:
    >>> err = error_for(422, [{"type": "value_error", "loc": ["body", "features"], "field": "features",
    ...                        "msg": "got 2 values, but the model reads n_features=8"}], "POST /v1/predict")
    >>> type(err).__name__, err.status, err.field
    ('InvalidInput', 422, 'features')
    >>> print(err)
    POST /v1/predict answered 422: features: got 2 values, but the model reads n_features=8
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = [
    "MAX_RETRY_AFTER_S",
    "AuthError",
    "InvalidInput",
    "RateLimited",
    "RetryPolicy",
    "ServiceError",
    "Unreachable",
    "error_for",
    "error_from_response",
    "retry_after_s",
]

RETRIED_STATUSES = frozenset({502, 503, 504})
MAX_BACKOFF_S = 10.0  # the longest wait between attempts without a Retry-After
MAX_RETRY_AFTER_S = 60.0  # a longer Retry-After is raised, not slept through
_RETRIED_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
_NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)  # the request never left


class ServiceError(Exception):
    """The service refused a call or failed it, and it was not retried (or retries ran out).

    Attributes:
        status: The HTTP status, or None when no answer came (see :class:`Unreachable`).
        detail: The answer's ``detail`` entries (dicts with ``type``, ``loc``, ``field``, ``msg``);
            empty when the body was not in the API's error shape.
        what: The call, e.g. ``"POST /v1/predict"``.
        retry_after: The answer's ``Retry-After`` in seconds, if it had one.
    """

    def __init__(
        self,
        status: int | None,
        detail: list[dict[str, Any]],
        what: str,
        *,
        text: str = "",
        retry_after: float | None = None,
        hint: str = "",
    ) -> None:
        self.status = status
        self.detail = detail
        self.what = what
        self.retry_after = retry_after
        if detail:
            reasons = "; ".join(
                f"{d['field']}: {d.get('msg', '')}" if d.get("field") else str(d.get("msg", d)) for d in detail
            )
        else:
            reasons = text.strip()[:300] or "no details in the answer"
        head = what if status is None else f"{what} answered {status}"
        super().__init__(f"{head}: {reasons}" + (f" ({hint})" if hint else ""))

    @property
    def field(self) -> str:
        """The field the first problem is about (dotted, e.g. ``features[2]``), or ``""``."""
        return str(self.detail[0].get("field", "")) if self.detail else ""


class AuthError(ServiceError):
    """401 (no key, or a bad, revoked or unknown one) or 403 (the key lacks the role, or it expired)."""


class RateLimited(ServiceError):
    """429: too many calls from this key; ``retry_after`` says when to try again."""


class InvalidInput(ServiceError):
    """422 (a field is wrong: see ``field`` and ``detail``) or 413 (the body is over ``serve.max_body_bytes``)."""


class Unreachable(ServiceError):
    """No answer: the connection failed or timed out on every attempt (``status`` is None).

    The underlying ``httpx`` error is the exception's ``__cause__``.
    """

    def __init__(self, what: str, url: str, attempts: int, error: Exception) -> None:
        self.url = url
        self.attempts = attempts
        text = f"no answer from {url} after {attempts} attempt(s): {type(error).__name__}: {error}"
        hint = "is the service running (`cl serve`)? set CL_URL or base_url to where it answers"
        super().__init__(None, [], what, text=text, hint=hint)


_KINDS: dict[int, type[ServiceError]] = {
    401: AuthError,
    403: AuthError,
    429: RateLimited,
    413: InvalidInput,
    422: InvalidInput,
}
_HINTS = {401: "send a valid key: api_key= or $CL_API_KEY; `cl keys create` makes one"}


def error_for(
    status: int, detail: list[dict[str, Any]], what: str, *, text: str = "", retry_after: float | None = None
) -> ServiceError:
    """The error to raise for an answer with ``status``: the subclass that fits, else :class:`ServiceError`.

    Args:
        status: The HTTP status.
        detail: The answer's ``detail`` list (empty if it had none).
        what: The call, e.g. ``"POST /v1/feedback"``.
        text: The body, shown when ``detail`` is empty.
        retry_after: The answer's ``Retry-After`` in seconds.

    Returns:
        An exception to raise.
    """
    kind = _KINDS.get(status, ServiceError)
    return kind(status, detail, what, text=text, retry_after=retry_after, hint=_HINTS.get(status, ""))


def error_from_response(response: httpx.Response, what: str) -> ServiceError:
    """The error for an error answer, with its ``detail`` list parsed from the body when it has one."""
    try:
        detail = response.json().get("detail", [])
    except (AttributeError, ValueError):  # not JSON, or not an object
        detail = []
    if isinstance(detail, str):  # FastAPI's and Serve's own errors, e.g. {"detail": "Not Found"}
        detail = [{"type": "http_error", "loc": [], "field": "", "msg": detail}]
    if not isinstance(detail, list) or not all(isinstance(d, dict) for d in detail):
        detail = []
    return error_for(response.status_code, detail, what, text=response.text, retry_after=retry_after_s(response))


def retry_after_s(response: httpx.Response) -> float | None:
    """The answer's ``Retry-After`` in seconds (a number or an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class RetryPolicy:
    """When to send a failed call again, and after how long (see the module docstring).

    Args:
        retries: How many times a call may be sent again.
        backoff_s: The first wait without a ``Retry-After``; it doubles each time.
    """

    retries: int
    backoff_s: float

    def wait(
        self,
        attempt: int,
        repeatable: bool,
        retry_429: bool,
        response: httpx.Response | None = None,
        error: Exception | None = None,
    ) -> float | None:
        """Seconds to wait before sending a call again, or None to raise.

        Args:
            attempt: The attempt that failed, from 0.
            repeatable: Whether the call may be repeated after it could have been acted on.
            retry_429: Whether a 429 is waited out (feedback).
            response: The error answer, if one came.
            error: The ``httpx`` error, if none came.

        Returns:
            The wait, or None when the call must not be sent again.
        """
        if attempt >= self.retries:
            return None
        if response is None:
            retried = isinstance(error, _RETRIED_ERRORS if repeatable else _NOT_SENT_ERRORS)
            return self.backoff(attempt) if retried else None
        status = response.status_code
        if not (status == 503 or (status in RETRIED_STATUSES and repeatable) or (status == 429 and retry_429)):
            return None
        after = retry_after_s(response)
        if after is None:
            return self.backoff(attempt)
        return after if after <= MAX_RETRY_AFTER_S else None

    def backoff(self, attempt: int) -> float:
        """``backoff_s * 2**attempt`` (at most ``MAX_BACKOFF_S``), less up to half of it at random."""
        return min(MAX_BACKOFF_S, self.backoff_s * 2**attempt) * (0.5 + 0.5 * random.random())
