"""``Client`` and ``AsyncClient``: the service's HTTP API as typed Python calls, with retries.

Which failures are retried and which raised: :mod:`cl.client.errors`.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx

from cl.client.errors import RetryPolicy, ServiceError, Unreachable, error_from_response
from cl.client.types import FeedbackReceipt, Generation, Health, ModelVersions, Prediction, RolloutDecisions

__all__ = ["DEFAULT_URL", "AsyncClient", "Client"]

DEFAULT_URL = "http://127.0.0.1:8000"

_sleep = time.sleep  # module attributes, so tests can replace them
_async_sleep = asyncio.sleep

T = TypeVar("T")


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One API call, built once and sent as often as the retries allow (same body every time)."""

    method: str
    path: str
    parse: Callable[[Any], T]
    body: dict[str, Any] | None = None
    repeatable: bool = True  # False: retried only when the service certainly did not act on it
    retry_429: bool = False

    @property
    def what(self) -> str:
        return f"{self.method} {self.path}"


def _present(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _version(v: str | int | None) -> str | None:
    return None if v is None else str(v)


def _predict(
    text: str | None, features: Sequence[float] | None, user_id: str | None, model_version: str | int | None
) -> _Call[Prediction]:
    vector = None if features is None else [float(x) for x in features]  # numpy arrays too
    body = _present(text=text, features=vector, user_id=user_id, model_version=_version(model_version))
    return _Call("POST", "/v1/predict", Prediction.from_json, body)


def _generate(
    prompt: str,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seed: int | None,
    user_id: str | None,
    model_version: str | int | None,
) -> _Call[Generation]:
    body = _present(
        prompt=prompt,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        user_id=user_id,
        model_version=_version(model_version),
    )
    return _Call("POST", "/v1/generate", Generation.from_json, body)


def _feedback(request_id: str, fields: Mapping[str, Any], event_id: str | None) -> _Call[FeedbackReceipt]:
    body = _present(request_id=request_id, **fields, event_id=event_id or uuid.uuid4().hex)  # one id for all attempts
    return _Call("POST", "/v1/feedback", FeedbackReceipt.from_json, body, retry_429=True)


def _admin(action: str, body: dict[str, Any]) -> _Call[RolloutDecisions]:
    return _Call("POST", f"/v1/admin/{action}", RolloutDecisions.from_json, body, repeatable=False)


_MODELS = _Call("GET", "/v1/models", dict)
_ROLLOUT = _Call("GET", "/v1/rollout", dict)
_HEALTH = _Call("GET", "/healthz", Health.from_json)


def _parse(call: _Call[T], response: httpx.Response) -> T:
    try:
        return call.parse(response.json())
    except (TypeError, ValueError) as e:  # not JSON, or not the shape this client knows
        text = f"unexpected answer ({e}): {response.text[:200]}"
        raise ServiceError(response.status_code, [], call.what, text=text) from e


def _versions(models: Any, rollout: Any) -> ModelVersions:
    try:
        return ModelVersions.from_json(models, rollout)
    except (TypeError, ValueError) as e:
        raise ServiceError(200, [], f"{_MODELS.what} + {_ROLLOUT.what}", text=f"unexpected answer ({e})") from e


class _Settings:
    """The constructor arguments both clients share, checked and resolved from the environment."""

    def __init__(
        self, base_url: str | None, api_key: str | None, timeout: float | httpx.Timeout, retries: int, backoff_s: float
    ) -> None:
        url = (base_url or os.environ.get("CL_URL") or DEFAULT_URL).rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"base_url {url!r} needs a scheme, e.g. 'http://{url}'")
        if retries < 0 or backoff_s < 0:
            raise ValueError(f"retries={retries} and backoff_s={backoff_s} must be 0 or more, e.g. 5 and 0.2")
        self.base_url = url
        self.timeout = timeout
        self.retries = retries
        self.backoff_s = backoff_s
        self._policy = RetryPolicy(retries, backoff_s)
        key = os.environ.get("CL_API_KEY") if api_key is None else api_key
        self._headers = {"Accept": "application/json", "User-Agent": "cl-client"}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"


class Client(_Settings):
    """A blocking client of the service; use it as a context manager, or ``close()`` it.

    Args:
        base_url: Where the service answers; default ``$CL_URL``, else ``http://127.0.0.1:8000``.
        api_key: The API key, sent as ``Authorization: Bearer <key>``; default ``$CL_API_KEY``
            (``""``: send none).
        timeout: Seconds (or an ``httpx.Timeout``) each attempt may take.
        retries: How many times a failed call may be sent again (:mod:`cl.client.errors` says which).
        backoff_s: The first wait between attempts; it doubles each time, up to ``MAX_BACKOFF_S``.
        transport: An ``httpx`` transport to send through instead of the network (tests, proxies).

    Raises:
        ValueError: ``base_url`` has no ``http://`` or ``https://``, or ``retries`` or ``backoff_s``
            is negative.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = 30.0,
        retries: int = 5,
        backoff_s: float = 0.2,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout, retries, backoff_s)
        self._http = httpx.Client(base_url=self.base_url, headers=self._headers, timeout=timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections; the client cannot be used afterwards."""
        self._http.close()

    def _run(self, call: _Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = self._http.request(call.method, call.path, json=call.body)
            except httpx.TransportError as e:
                wait = self._policy.wait(attempt, call.repeatable, call.retry_429, error=e)
                if wait is None:
                    raise Unreachable(call.what, self.base_url, attempt + 1, e) from e
            else:
                if response.is_success:
                    return _parse(call, response)
                wait = self._policy.wait(attempt, call.repeatable, call.retry_429, response=response)
                if wait is None:
                    raise error_from_response(response, call.what)
            _sleep(wait)
            attempt += 1

    def predict(
        self,
        text: str | None = None,
        features: Sequence[float] | None = None,
        user_id: str | None = None,
        model_version: str | int | None = None,
    ) -> Prediction:
        """Classify a text or a feature vector (give exactly one).

        Args:
            text: The text to classify.
            features: A vector of ``model.n_features`` finite numbers.
            user_id: Who asks; a user keeps one model version for a whole rollout.
            model_version: Pin a version (``"base"`` or a registered one) instead of the served one.

        Returns:
            The :class:`Prediction`; its ``request_id`` is what ``feedback`` refers to.

        Raises:
            InvalidInput: 422 naming the field (both or neither input, wrong length, unknown version), or 413.
            AuthError: 401 or 403 (the key needs the ``predict`` role).
            ServiceError: Any other refusal, or 5xx after the retries.
            Unreachable: No answer after the retries.
        """
        return self._run(_predict(text, features, user_id, model_version))

    def generate(
        self,
        prompt: str,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        user_id: str | None = None,
        model_version: str | int | None = None,
    ) -> Generation:
        """Continue a prompt with the language-model head.

        Args:
            prompt: The text to continue.
            max_new_tokens: At most this many new tokens (bytes); capped by ``serve.max_new_tokens``.
            temperature: 0 is greedy (the same text every time); above 0 samples.
            top_p: Nucleus sampling threshold, in (0, 1].
            seed: With sampling, the same seed gives the same text.
            user_id: Who asks.
            model_version: Pin a version instead of the served one.

        Returns:
            The :class:`Generation` (the new text, without the prompt).

        Raises:
            InvalidInput: 422 naming the field (e.g. ``max_new_tokens`` over the cap), or 413.
            AuthError: 401 or 403 (the key needs the ``predict`` role).
            ServiceError: Any other refusal, or 5xx after the retries.
            Unreachable: No answer after the retries.
        """
        return self._run(_generate(prompt, max_new_tokens, temperature, top_p, seed, user_id, model_version))

    def feedback(
        self,
        request_id: str,
        *,
        rating: int | None = None,
        thumbs: str | None = None,
        label: int | None = None,
        correction: str | None = None,
        user_id: str | None = None,
        event_id: str | None = None,
    ) -> FeedbackReceipt:
        """Rate a served request: give exactly one of ``rating``, ``thumbs``, ``label``, ``correction``.

        The event gets one ``event_id`` for the whole call, so a retried post (after a 503 or a
        lost answer) is applied once.

        Args:
            request_id: The ``request_id`` of the prediction or generation.
            rating: 1 (bad) to 5 (good).
            thumbs: ``"up"`` or ``"down"``.
            label: The correct class (classification).
            correction: The output the user wanted instead (generation).
            user_id: Who gives the feedback.
            event_id: The dedupe key; default a fresh uuid4 hex. Reuse one to post the same event again.

        Returns:
            The :class:`FeedbackReceipt`, once Kafka has acknowledged the event.

        Raises:
            InvalidInput: 422 naming the field (none or several signals, a rating out of range, ...).
            AuthError: 401 or 403 (the key needs the ``feedback`` role).
            RateLimited: 429 still, after the retries (or a ``Retry-After`` above ``MAX_RETRY_AFTER_S``).
            ServiceError: Any other refusal, or 503 (Kafka down) after the retries.
            Unreachable: No answer after the retries.
        """
        signals = {"rating": rating, "thumbs": thumbs, "label": label, "correction": correction, "user_id": user_id}
        return self._run(_feedback(request_id, signals, event_id))

    def versions(self) -> ModelVersions:
        """The registered versions, what each replica serves, and the rollout's state.

        Returns:
            :class:`ModelVersions` (from ``GET /v1/models`` and ``GET /v1/rollout``).

        Raises:
            AuthError: 401 (any valid key may read this).
            ServiceError: 503 when the model registry does not answer, after the retries.
            Unreachable: No answer after the retries.
        """
        return _versions(self._run(_MODELS), self._run(_ROLLOUT))

    def promote(self, version: str | int) -> RolloutDecisions:
        """Make ``version`` the champion now (needs the ``admin`` role, and rollouts on).

        Args:
            version: A registered version, e.g. ``7``, or ``"base"``.

        Returns:
            The :class:`RolloutDecisions` taken.

        Raises:
            InvalidInput: 422: the version is not registered, or was trained on another base.
            AuthError: 401 or 403.
            ServiceError: 409 when rollouts are off (``serve.serve_new_versions = true``).
            Unreachable: No answer after the retries.
        """
        return self._run(_admin("promote", {"version": str(version)}))

    def rollback(self, to_version: str | int | None = None) -> RolloutDecisions:
        """Take the challengers' traffic to 0 (or, with no rollout running, bring back the previous
        champion); with ``to_version``, make that version the champion.

        Args:
            to_version: Any registered version to serve as champion; None to roll back.

        Returns:
            The :class:`RolloutDecisions` taken.

        Raises:
            InvalidInput: 422: nothing to roll back to, or an unknown version.
            AuthError: 401 or 403.
            ServiceError: 409 when rollouts are off.
            Unreachable: No answer after the retries.
        """
        return self._run(_admin("rollback", {"to_version": _version(to_version)}))

    def traffic(self, version: str | int, weight: float) -> RolloutDecisions:
        """Set a challenger's share of the traffic (0 pauses it; the champion takes the rest).

        Args:
            version: A challenger of the running rollout.
            weight: Its share, 0 to 1.

        Returns:
            The :class:`RolloutDecisions` taken.

        Raises:
            InvalidInput: 422: not an active challenger, or a weight outside [0, 1].
            AuthError: 401 or 403.
            ServiceError: 409 when rollouts are off.
            Unreachable: No answer after the retries.
        """
        return self._run(_admin("traffic", {"version": str(version), "weight": float(weight)}))

    def health(self) -> Health:
        """Liveness of the HTTP edge (needs no key).

        Returns:
            :class:`Health`, as the ingress replica that answered sees it.

        Raises:
            ServiceError: The service answered with an error after the retries.
            Unreachable: No answer after the retries.
        """
        return self._run(_HEALTH)


class AsyncClient(_Settings):
    """The same calls as :class:`Client`, awaited; use ``async with``, or ``await close()``.

    Args:
        base_url: As for :class:`Client`.
        api_key: As for :class:`Client`.
        timeout: As for :class:`Client`.
        retries: As for :class:`Client`.
        backoff_s: As for :class:`Client`.
        transport: An ``httpx`` async transport to send through instead of the network.

    Raises:
        ValueError: As for :class:`Client`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = 30.0,
        retries: int = 5,
        backoff_s: float = 0.2,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout, retries, backoff_s)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self._headers, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connections; the client cannot be used afterwards."""
        await self._http.aclose()

    async def _run(self, call: _Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = await self._http.request(call.method, call.path, json=call.body)
            except httpx.TransportError as e:
                wait = self._policy.wait(attempt, call.repeatable, call.retry_429, error=e)
                if wait is None:
                    raise Unreachable(call.what, self.base_url, attempt + 1, e) from e
            else:
                if response.is_success:
                    return _parse(call, response)
                wait = self._policy.wait(attempt, call.repeatable, call.retry_429, response=response)
                if wait is None:
                    raise error_from_response(response, call.what)
            await _async_sleep(wait)
            attempt += 1

    async def predict(
        self,
        text: str | None = None,
        features: Sequence[float] | None = None,
        user_id: str | None = None,
        model_version: str | int | None = None,
    ) -> Prediction:
        return await self._run(_predict(text, features, user_id, model_version))

    async def generate(
        self,
        prompt: str,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        user_id: str | None = None,
        model_version: str | int | None = None,
    ) -> Generation:
        return await self._run(_generate(prompt, max_new_tokens, temperature, top_p, seed, user_id, model_version))

    async def feedback(
        self,
        request_id: str,
        *,
        rating: int | None = None,
        thumbs: str | None = None,
        label: int | None = None,
        correction: str | None = None,
        user_id: str | None = None,
        event_id: str | None = None,
    ) -> FeedbackReceipt:
        signals = {"rating": rating, "thumbs": thumbs, "label": label, "correction": correction, "user_id": user_id}
        return await self._run(_feedback(request_id, signals, event_id))

    async def versions(self) -> ModelVersions:
        return _versions(await self._run(_MODELS), await self._run(_ROLLOUT))

    async def promote(self, version: str | int) -> RolloutDecisions:
        return await self._run(_admin("promote", {"version": str(version)}))

    async def rollback(self, to_version: str | int | None = None) -> RolloutDecisions:
        return await self._run(_admin("rollback", {"to_version": _version(to_version)}))

    async def traffic(self, version: str | int, weight: float) -> RolloutDecisions:
        return await self._run(_admin("traffic", {"version": str(version), "weight": float(weight)}))

    async def health(self) -> Health:
        return await self._run(_HEALTH)


# One text per call: the async methods say what the sync ones say (help(AsyncClient.predict) shows it).
for _name in ("predict", "generate", "feedback", "versions", "promote", "rollback", "traffic", "health"):
    getattr(AsyncClient, _name).__doc__ = getattr(Client, _name).__doc__
del _name
