"""The client's retry, error and parsing logic, against scripted answers (``httpx.MockTransport``).

No sleeping: the clients' sleep functions are replaced by ones that record the wait asked for.
What the real service answers is checked in ``test_client_live.py``.
"""

from __future__ import annotations

import ast
import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from email.utils import formatdate
from pathlib import Path

import httpx
import pytest

import cl.client.api as api
from cl.client import (
    MAX_RETRY_AFTER_S,
    AsyncClient,
    AuthError,
    Client,
    InvalidInput,
    RateLimited,
    ServiceError,
    Unreachable,
)

PACKAGE = Path(api.__file__).parent
PREDICTION = {"request_id": "r1", "label": 1, "probabilities": [0.25, 0.75], "model_version": "3", "arm": "champion"}
RECEIPT = {"event_id": "e", "request_id": "r1"}


def _detail(field: str, msg: str, type_: str = "value_error") -> dict:
    return {"detail": [{"type": type_, "loc": ["body", field], "field": field, "msg": msg}]}


class Script:
    """Answers requests with ``answers`` in turn (a Response, or an exception to raise); keeps the requests."""

    def __init__(self, *answers: httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer(request) if callable(answer) else answer

    def bodies(self) -> list[dict]:
        return [json.loads(r.content) for r in self.requests]


@pytest.fixture
def waits(monkeypatch) -> list[float]:
    """The waits the clients asked for, in order (nothing actually sleeps)."""
    asked: list[float] = []

    async def async_sleep(s: float) -> None:
        asked.append(s)

    monkeypatch.setattr(api, "_sleep", asked.append)
    monkeypatch.setattr(api, "_async_sleep", async_sleep)
    return asked


def _client(script: Script, **kw) -> Client:
    return Client("http://cl.test", api_key="k", transport=httpx.MockTransport(script), **kw)


def _async_client(script: Script, **kw) -> AsyncClient:
    return AsyncClient("http://cl.test", api_key="k", transport=httpx.MockTransport(script), **kw)


# ---- retries ------------------------------------------------------------------------------------


def test_feedback_retried_after_503_sends_one_event_id(waits):
    script = Script(
        httpx.Response(503),
        httpx.Response(503),
        lambda r: httpx.Response(202, json={"event_id": json.loads(r.content)["event_id"], "request_id": "r1"}),
    )
    with _client(script, backoff_s=0.2) as client:
        receipt = client.feedback("r1", thumbs="up", user_id="u1")
    sent = script.bodies()
    assert len(sent) == 3
    assert {b["event_id"] for b in sent} == {receipt.event_id} and len(receipt.event_id) == 32
    assert sent[0] == {"request_id": "r1", "thumbs": "up", "user_id": "u1", "event_id": receipt.event_id}
    # exponential from backoff_s, less up to half at random
    assert len(waits) == 2 and 0.1 <= waits[0] <= 0.2 and 0.2 <= waits[1] <= 0.4


def test_each_feedback_call_gets_its_own_event_id_unless_given(waits):
    script = Script(httpx.Response(202, json=RECEIPT))
    with _client(script) as client:
        client.feedback("r1", rating=4)
        client.feedback("r1", rating=4)
        client.feedback("r1", rating=4, event_id="mine")
    ids = [b["event_id"] for b in script.bodies()]
    assert ids[0] != ids[1] and ids[2] == "mine"


def test_retry_after_is_honoured_on_503_and_on_feedback_429(waits):
    script = Script(httpx.Response(503, headers={"Retry-After": "3"}), httpx.Response(200, json=PREDICTION))
    with _client(script) as client:
        assert client.predict(features=[1.0, 2.0]).label == 1
    assert waits == [3.0]

    limited = httpx.Response(429, headers={"Retry-After": "1"}, json=_detail("Authorization", "too much feedback"))
    script = Script(limited, httpx.Response(202, json=RECEIPT))
    with _client(script) as client:
        client.feedback("r1", rating=5)
    assert waits == [3.0, 1.0] and len(script.requests) == 2
    assert script.bodies()[0]["event_id"] == script.bodies()[1]["event_id"]


def test_retry_after_as_an_http_date_is_honoured(waits):
    in_30_s = formatdate(__import__("time").time() + 30, usegmt=True)
    script = Script(httpx.Response(503, headers={"Retry-After": in_30_s}), httpx.Response(200, json=PREDICTION))
    with _client(script) as client:
        client.predict(text="hi")
    assert len(waits) == 1 and 25 < waits[0] <= 30


def test_a_retry_after_beyond_the_cap_is_raised_not_slept(waits):
    long = str(int(MAX_RETRY_AFTER_S) + 1)
    script = Script(httpx.Response(429, headers={"Retry-After": long}, json=_detail("Authorization", "slow down")))
    with _client(script) as client, pytest.raises(RateLimited) as caught:
        client.feedback("r1", rating=5)
    assert caught.value.retry_after == float(long) and waits == [] and len(script.requests) == 1


def test_retries_run_out_into_the_last_error(waits):
    script = Script(httpx.Response(502, text="bad gateway"))
    with _client(script, retries=2) as client, pytest.raises(ServiceError) as caught:
        client.health()
    assert caught.value.status == 502 and "bad gateway" in str(caught.value)
    assert len(script.requests) == 3 and len(waits) == 2


def test_connection_failures_are_retried_then_raised_as_unreachable(waits):
    script = Script(httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.Response(200, json=PREDICTION))
    with _client(script) as client:
        assert client.predict(text="hi").request_id == "r1"
    assert len(script.requests) == 3

    script = Script(httpx.ConnectError("connection refused"))
    with _client(script, retries=1) as client, pytest.raises(Unreachable) as caught:
        client.predict(text="hi")
    err = caught.value
    assert err.status is None and err.attempts == 2 and isinstance(err.__cause__, httpx.ConnectError)
    assert "http://cl.test" in str(err) and "CL_URL" in str(err)


@pytest.mark.parametrize(
    ("status", "kind", "field"),
    [
        (401, AuthError, "Authorization"),
        (403, AuthError, "Authorization"),
        (422, InvalidInput, "features"),
        (413, InvalidInput, ""),
        (429, RateLimited, "Authorization"),
        (409, ServiceError, "serve.serve_new_versions"),
        (404, ServiceError, ""),
        (500, ServiceError, ""),
    ],
)
def test_other_errors_are_raised_at_once_as_their_kind(waits, status, kind, field):
    body = _detail(field, f"the server's words for {status}") if field else {"detail": f"words for {status}"}
    script = Script(httpx.Response(status, json=body, headers={"Retry-After": "1"}))
    with _client(script) as client, pytest.raises(ServiceError) as caught:
        client.predict(features=[1.0])
    err = caught.value
    assert type(err) is kind and err.status == status and err.field == field
    assert len(script.requests) == 1 and waits == []
    assert f"POST /v1/predict answered {status}" in str(err) and f"for {status}" in str(err)
    if field:
        assert f"{field}: the server's words" in str(err) and err.detail == body["detail"]


def test_admin_actions_are_retried_only_when_not_acted_on(waits):
    decisions = {"decisions": [{"action": "rollback", "version": "2", "reason": "by hand", "ts": 1.0}]}
    script = Script(httpx.ConnectError("refused"), httpx.Response(503), httpx.Response(200, json=decisions))
    with _client(script) as client:
        assert client.rollback().decisions[0].action == "rollback"
    assert len(script.requests) == 3

    for answer in (httpx.ReadTimeout("answer lost"), httpx.Response(504), httpx.Response(502)):
        script = Script(answer)
        with _client(script) as client, pytest.raises(ServiceError):
            client.rollback()
        assert len(script.requests) == 1, answer


# ---- what is sent and parsed --------------------------------------------------------------------


def test_key_and_url_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("CL_URL", "http://from-env:9000/")
    monkeypatch.setenv("CL_API_KEY", "cl_env_key")
    script = Script(httpx.Response(200, json=PREDICTION))
    with Client(transport=httpx.MockTransport(script)) as client:
        client.predict(features=(1, 2.5), user_id="u", model_version=3)
    [sent] = script.requests
    assert str(sent.url) == "http://from-env:9000/v1/predict"
    assert sent.headers["authorization"] == "Bearer cl_env_key"
    assert json.loads(sent.content) == {"features": [1.0, 2.5], "user_id": "u", "model_version": "3"}
    with Client(api_key="", transport=httpx.MockTransport(script)) as client:
        client.predict(text="hi")
    assert "authorization" not in script.requests[-1].headers


def test_bad_settings_name_the_fix():
    with pytest.raises(ValueError, match="http://localhost:8000"):
        Client("localhost:8000")
    with pytest.raises(ValueError, match="retries=-1"):
        Client(retries=-1)


def test_versions_joins_models_and_rollout_into_typed_answers():
    models = {
        "model_name": "m",
        "base_version": "b1",
        "aliases": {"champion": "2"},
        "serving": ["2"],
        "versions": [{"version": "2", "aliases": ["champion"], "tags": {"reason": "drift"}, "created_ms": 5}],
        "replicas": [{"replica_id": "x", "current_version": "2", "loaded_versions": ["1", "2"], "reported_s_ago": 0.5}],
        "added_later": True,
    }
    rollout = {
        "enabled": True,
        "active": True,
        "champion": "2",
        "challengers": ["3"],
        "weights": {"3": 0.1},
        "rollout_id": "r7",
        "explain": [{"action": "hold", "version": "3", "reason": "waiting"}],
    }
    answers = {"/v1/models": models, "/v1/rollout": rollout}
    script = Script(lambda r: httpx.Response(200, json=answers[r.url.path]))
    with _client(script) as client:
        v = client.versions()
    assert v.versions[0].version == "2" and v.versions[0].aliases == ("champion",) and v.aliases == {"champion": "2"}
    assert v.replicas[0].loaded_versions == ("1", "2") and v.serving == ("2",)
    assert v.rollout.enabled and v.rollout.weights == {"3": 0.1} and v.rollout.explain[0].reason == "waiting"
    with pytest.raises(Exception):
        v.model_name = "other"  # frozen

    script = Script(httpx.Response(200, json={"status": "ok"}))  # not what /v1/models answers
    with _client(script) as client, pytest.raises(ServiceError, match="model_name"):
        client.versions()


# ---- the async client ---------------------------------------------------------------------------


def test_async_client_retries_with_one_event_id_and_raises_the_same_errors(waits):
    async def main() -> None:
        script = Script(
            httpx.Response(503, headers={"Retry-After": "2"}),
            httpx.ReadTimeout("slow"),
            httpx.Response(202, json=RECEIPT),
        )
        async with _async_client(script) as client:
            await client.feedback("r1", label=2)
        assert len({b["event_id"] for b in script.bodies()}) == 1 and len(script.requests) == 3
        assert waits[0] == 2.0 and len(waits) == 2

        script = Script(httpx.Response(422, json=_detail("top_p", "Input should be greater than 0")))
        async with _async_client(script) as client:
            with pytest.raises(InvalidInput, match="top_p: Input should be greater than 0") as caught:
                await client.generate("hi", top_p=0.0)
        assert caught.value.field == "top_p" and len(script.requests) == 1
        assert json.loads(script.requests[0].content)["top_p"] == 0.0

    asyncio.run(main())


def test_async_docs_are_the_sync_docs():
    assert AsyncClient.feedback.__doc__ == Client.feedback.__doc__ and "event_id" in AsyncClient.feedback.__doc__


# ---- what the package depends on ----------------------------------------------------------------


def test_the_package_imports_only_the_standard_library_and_httpx():
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            )
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top == "httpx" or name.startswith("cl.client"), (path, name)
    code = (
        "import sys, cl.client; print(sorted(m for m in ('torch', 'ray', 'serve', 'pydantic', 'numpy', 'mlflow', "
        "'kafka', 'fastapi', 'cl.config', 'cl.events') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parents[1]
    ).stdout
    assert out.strip() == "[]"
