"""The ingress's routes without Ray: its access dependency, its one refusal handler, its one inference path.

The app is the real one (``serve.ingress.app``); Serve's replica context, which gives each route
its ``self``, is replaced by an ``Ingress`` built by hand around a fake replica handle, so every
answer can be checked in a second. The live app is tested in ``test_app.py`` and ``test_access.py``.
"""

from __future__ import annotations

import json
import time
import types
import warnings
from collections.abc import Callable
from typing import Any

import pytest

from cl.config import Config
from cl.model.base_model import base_model_config, build_tokenizer
from cl.security import AuditTrail, KeyStore
from cl.serving.inference import Limits
from serve._private.access import Access
from serve._private.traffic import TrafficRouter

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


class _Method:
    """A replica method's handle: ``remote(payload)`` answers ``answer(payload)`` (or raises it)."""

    def __init__(self, answer: Callable[[dict[str, Any]], Any]) -> None:
        self.answer = answer
        self.calls: list[dict[str, Any]] = []

    def remote(self, payload: dict[str, Any]) -> Any:
        self.calls.append(payload)

        async def run() -> Any:
            out = self.answer(payload)
            if isinstance(out, Exception):
                raise out
            return out

        return run()


class _Stream:
    """A streaming replica call (``DeploymentResponseGenerator``): its messages, then the end."""

    def __init__(self, messages: list[Any]) -> None:
        self.messages, self.cancelled = list(messages), False

    def cancel(self) -> None:
        self.cancelled = True

    def __aiter__(self) -> _Stream:
        return self

    async def __anext__(self) -> Any:
        if not self.messages:
            raise StopAsyncIteration
        message = self.messages.pop(0)
        if isinstance(message, Exception):
            raise message
        return message


class _StreamMethod(_Method):
    """``generate_stream`` through ``options(stream=True)``: ``remote`` gives a :class:`_Stream`."""

    def remote(self, payload: dict[str, Any]) -> _Stream:
        self.calls.append(payload)
        self.streams.append(_Stream(self.answer(payload)))
        return self.streams[-1]

    def __init__(self, answer: Callable[[dict[str, Any]], Any]) -> None:
        super().__init__(answer)
        self.streams: list[_Stream] = []


class _Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def send(self, topic: str, event: Any, key: str | None = None) -> Any:
        self.sent.append((topic, event))
        return types.SimpleNamespace(add_errback=lambda f: None)

    def send_and_wait(self, topic: str, event: Any, key: str | None = None, timeout_s: float = 0) -> None:
        self.sent.append((topic, event))


def _predicted(payload: dict[str, Any]) -> dict[str, Any]:
    return {"label": 1, "probabilities": [0.25, 0.75], "model_version": payload["model_version"] or "base"}


def _generated(payload: dict[str, Any]) -> dict[str, Any]:
    return {"text": "xyz", "model_version": payload["model_version"] or "base"}


def _streamed(payload: dict[str, Any]) -> list[Any]:
    """What the replica streams for ``_generated``'s answer: its version, then the text in pieces."""
    return [{"model_version": payload["model_version"] or "base"}, {"text": "x"}, {"text": "yz"}]


@pytest.fixture
def ingress(tmp_path, monkeypatch):
    """(client, the hand-built Ingress, keys by role) with auth on and rollouts off."""
    import ray.serve

    from serve.ingress import Ingress, app

    values = Config().to_dict()
    values["auth"].update(
        enabled=True,
        keys_file=str(tmp_path / "keys.json"),
        audit_file=str(tmp_path / "audit.jsonl"),
        feedback_rate_per_s=0.001,
        feedback_burst=1,
    )
    cfg = Config.from_dict(values)
    store = KeyStore(cfg.keys_path)
    keys = {role: store.create(role, {role: None})[0] for role in ("predict", "feedback", "admin")}

    self = object.__new__(Ingress.func_or_class)
    producer = _Producer()
    self.config = cfg
    self.kafka = types.SimpleNamespace(get=lambda timeout_s=None: producer, connected=True, producer=producer)
    self.access = Access(cfg, announce=self._announce)
    streaming = types.SimpleNamespace(generate_stream=_StreamMethod(_streamed))
    self.replica = types.SimpleNamespace(
        predict=_Method(_predicted),
        predict_unbatched=_Method(_predicted),
        generate=_Method(_generated),
        generate_unbatched=_Method(_generated),
        options=lambda stream=False: streaming,
        generate_stream=streaming.generate_stream,
    )
    self.batching = True
    self.limits = Limits.from_serve(cfg.serve)
    self.model_config = base_model_config(cfg.model, cfg.serve.adapter_cache_size)
    self.tokenizer = build_tokenizer(cfg.model)
    self.router = TrafficRouter()
    self.controller = None
    self._tasks = []
    self.logged = self.log_failures = 0
    monkeypatch.setattr(ray.serve, "get_replica_context", lambda: types.SimpleNamespace(servable_object=self))
    return TestClient(app), self, keys


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _entry(response: Any) -> dict[str, Any]:
    return response.json()["detail"][0]


def test_predict_and_generate_share_one_path_and_log_what_they_served(ingress):
    client, self, keys = ingress
    features = [0.5] * self.config.model.n_features
    r = client.post("/v1/predict", json={"features": features, "user_id": "u"}, headers=_auth(keys["predict"]))
    assert r.status_code == 200, r.text
    assert (r.json()["label"], r.json()["model_version"], r.json()["arm"]) == (1, "base", "champion")
    assert self.replica.predict.calls == [{"text": None, "features": features, "model_version": None}]
    r = client.post("/v1/generate", json={"prompt": "hi", "max_new_tokens": 4}, headers=_auth(keys["admin"]))
    assert r.status_code == 200 and r.json()["text"] == "xyz", r.text
    assert self.replica.generate.calls[-1] == {
        "prompt": "hi",
        "max_new_tokens": 4,
        "temperature": 0.0,
        "top_p": 1.0,
        "seed": None,
        "model_version": None,
    }
    logged = [e for topic, e in self.kafka.producer.sent if topic == self.config.topics.requests]
    assert [(e.kind, e.model_version, e.arm) for e in logged] == [("predict", "base", "champion")] + [
        ("generate", "base", "champion")
    ]


def test_key_refusals_are_401_403_and_429_in_the_api_shape_and_audited(ingress):
    client, self, keys = ingress
    body = {"features": [0.5] * self.config.model.n_features}
    r = client.post("/v1/predict", json=body)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert r.json() == {
        "detail": [
            {
                "type": "missing",
                "loc": ["header", "Authorization"],
                "field": "Authorization",
                "msg": _entry(r)["msg"],
                "role": "predict",
            }
        ]
    }
    r = client.post("/v1/predict", json=body, headers=_auth(keys["feedback"]))
    assert (r.status_code, _entry(r)["type"], _entry(r)["role"]) == (403, "no_role", "predict")
    assert "www-authenticate" not in r.headers
    assert client.get("/v1/models").status_code == 401
    feedback = {"request_id": "r1", "rating": 4}
    assert client.post("/v1/feedback", json=feedback, headers=_auth(keys["feedback"])).status_code != 429
    r = client.post("/v1/feedback", json=feedback, headers=_auth(keys["feedback"]))
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert (_entry(r)["type"], _entry(r)["limit"], _entry(r)["value"]) == (
        "rate_limited",
        "auth.feedback_rate_per_s",
        0.001,
    )
    outcomes = [(r["action"], r["outcome"]) for r in AuditTrail(self.config.audit_path).read()]
    assert outcomes == [
        ("auth_failed", "401 missing"),
        ("auth_failed", "403 no_role"),
        ("auth_failed", "401 missing"),
        ("rate_limited", "429 rate_limited"),
    ]
    announced = [e for topic, e in self.kafka.producer.sent if topic == self.config.topics.events]
    assert [e.type for e in announced] == ["audit"] * 4


def test_a_body_that_does_not_parse_gets_its_422_before_the_key_is_checked(ingress):
    client, self, keys = ingress
    r = client.post("/v1/predict", json={"features": [1, "x"]})
    assert r.status_code == 422 and _entry(r)["field"] == "features[1]"
    for _ in range(3):  # bad feedback takes no rate-limit token
        r = client.post("/v1/feedback", json={"request_id": "r", "rating": 9}, headers=_auth(keys["feedback"]))
        assert r.status_code == 422 and _entry(r)["field"] == "rating"
    assert AuditTrail(self.config.audit_path).read() == []
    assert (
        client.post("/v1/feedback", json={"request_id": "r", "rating": 4}, headers=_auth(keys["feedback"])).status_code
        != 429
    )


def test_replica_errors_become_the_same_refusal_bodies(ingress):
    client, self, keys = ingress
    headers = _auth(keys["predict"])
    features = [0.5] * self.config.model.n_features
    r = client.post("/v1/predict", json={"features": features[:2]}, headers=headers)  # the ingress's own check
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "features"]
    self.replica.predict.answer = lambda p: {
        "error": {"field": "model_version", "message": "version '9' is not registered", "status": 422}
    }
    r = client.post("/v1/predict", json={"features": features, "model_version": "9"}, headers=headers)
    assert r.json() == {
        "detail": [
            {
                "type": "value_error",
                "loc": ["body", "model_version"],
                "field": "model_version",
                "msg": "version '9' is not registered",
            }
        ]
    }
    assert r.status_code == 422 and "retry-after" not in r.headers
    self.replica.predict.answer = lambda p: RuntimeError("ActorDiedError")
    r = client.post("/v1/predict", json={"features": features}, headers=headers)
    assert (r.status_code, r.headers["retry-after"], _entry(r)["field"]) == (503, "1", "")
    assert "no model replica could answer (RuntimeError)" in _entry(r)["msg"]


def test_completions_answer_refusals_in_both_shapes(ingress):
    client, self, keys = ingress
    r = client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 100_000}, headers=_auth(keys["predict"]))
    assert r.status_code == 422, r.text
    assert _entry(r)["field"] == "max_tokens" and r.json()["error"]["param"] == "max_tokens"
    r = client.post("/v1/completions", json={"prompt": "hi"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing"
    self.replica.generate.answer = lambda p: RuntimeError("gone")
    r = client.post("/v1/completions", json={"prompt": ["a", "b"]}, headers=_auth(keys["predict"]))
    assert r.status_code == 503 and r.headers["retry-after"] == "1" and r.json()["error"]["param"] is None
    self.replica.generate.answer = _generated
    r = client.post("/v1/completions", json={"prompt": ["a", "b"], "n": 2}, headers=_auth(keys["predict"]))
    assert r.status_code == 200 and len(r.json()["choices"]) == 4 and len(self.replica.generate.calls) == 6


def test_admin_without_rollouts_is_409_and_audited(ingress):
    client, self, keys = ingress
    r = client.post("/v1/admin/promote", json={"version": "3"}, headers=_auth(keys["admin"]))
    assert (r.status_code, _entry(r)["field"]) == (409, "serve.serve_new_versions")
    [record] = AuditTrail(self.config.audit_path).read()
    assert (record["action"], record["outcome"], record["details"]) == ("promote", "409 rollouts off", {"version": "3"})
    assert client.get("/v1/rollout", headers=_auth(keys["feedback"])).json()["enabled"] is False


def test_a_bad_body_is_reported_once_though_the_route_and_its_key_check_both_read_it(ingress):
    client, _, _ = ingress
    for path, body, field in (
        ("/v1/predict", {"features": [1.0], "colour": 1}, "colour"),
        ("/v1/generate", {"prompt": "hi", "top_p": 0}, "top_p"),
    ):
        r = client.post(path, json=body)
        assert r.status_code == 422 and [e["field"] for e in r.json()["detail"]] == [field], r.text


# ---- chat and streaming -----------------------------------------------------------------


def _events(response: Any) -> list[Any]:
    """The JSON chunks of a server-sent event stream, and ``"[DONE]"``."""
    assert response.headers["content-type"].startswith("text/event-stream"), response.text
    blocks = response.text.split("\n\n")
    assert blocks[-1] == "" and all(b.startswith("data: ") for b in blocks[:-1]), response.text
    return [b[6:] if b == "data: [DONE]" else json.loads(b[6:]) for b in blocks[:-1]]


def _logged(self: Any, n: int, timeout_s: float = 5.0) -> list[Any]:
    """The request log once it has ``n`` events: a stream logs from a worker thread as it ends."""
    deadline = time.monotonic() + timeout_s
    while True:
        logged = [e for topic, e in self.kafka.producer.sent if topic == self.config.topics.requests]
        if len(logged) >= n or time.monotonic() > deadline:
            return logged
        time.sleep(0.01)


def test_a_chat_is_rendered_by_the_template_and_answered_as_a_chat_completion(ingress):
    client, self, keys = ingress
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    body = {"model": "cl", "messages": messages, "max_completion_tokens": 5, "n": 2, "seed": 1, "user": "u"}
    r = client.post("/v1/chat/completions", json=body, headers=_auth(keys["predict"]))
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["object"], answer["model"], answer["arm"]) == ("chat.completion", "cl-adapter:base", "champion")
    assert [c["message"] for c in answer["choices"]] == [{"role": "assistant", "content": "xyz"}] * 2
    assert answer["id"] == answer["choices"][0]["request_id"] != answer["choices"][1]["request_id"]
    prompt = "<|system|>\nbe brief\n<|user|>\nhi\n<|assistant|>\n"
    assert [c["prompt"] for c in self.replica.generate.calls] == [prompt, prompt]
    assert [(c["max_new_tokens"], c["seed"]) for c in self.replica.generate.calls] == [(5, 1), (5, 2)]
    assert answer["usage"] == {
        "prompt_tokens": len(prompt) + 1,
        "completion_tokens": 6,
        "total_tokens": len(prompt) + 7,
    }
    logged = [e for topic, e in self.kafka.producer.sent if topic == self.config.topics.requests]
    assert [(e.request_id, e.input.text, e.output.text, e.user_id) for e in logged] == [
        (c["request_id"], prompt, "xyz", "u") for c in answer["choices"]
    ]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"messages": []}, "messages", "at least 1"),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]},
            "messages[1].role",
            "robot",
        ),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "valid string"),
        ({"messages": [{"role": "user", "content": "a" * 200}]}, "messages", "max_seq_len"),
        ({"messages": [{"role": "user", "content": "a"}], "max_tokens": 100_000}, "max_tokens", "serve.max_new_tokens"),
        (
            {"messages": [{"role": "user", "content": "a"}], "max_tokens": 3, "max_completion_tokens": 4},
            "max_tokens",
            "contradicts",
        ),
        ({"messages": [{"role": "user", "content": "a"}], "model": "gpt-4o"}, "model", "GET /v1/models"),
        ({"messages": [{"role": "user", "content": "a"}], "logprobs": True}, "logprobs", "not returned"),
    ],
)
def test_bad_chats_get_422_naming_the_field_in_both_shapes(ingress, body, field, words):
    client, self, keys = ingress
    r = client.post("/v1/chat/completions", json=body, headers=_auth(keys["predict"]))
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["detail"]] == [field] and words in _entry(r)["msg"], r.text
    assert r.json()["error"]["param"] == field and self.replica.generate.calls == []


def test_a_template_that_refuses_the_chat_is_a_422_on_messages(ingress):
    client, self, keys = ingress
    self.tokenizer.chat_template = "{{ raise_exception('roles must alternate') }}"
    try:
        r = client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "a"}]},
            headers=_auth(keys["predict"]),
        )
    finally:
        self.tokenizer.chat_template = None
    assert r.status_code == 422 and _entry(r)["field"] == "messages" and "roles must alternate" in _entry(r)["msg"]


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_streams_send_the_replicas_pieces_as_openai_chunks_then_done_and_log_what_was_sent(ingress, path):
    client, self, keys = ingress
    chat = path.endswith("chat/completions")
    body = {"messages": [{"role": "user", "content": "hi"}]} if chat else {"prompt": "hi"}
    body.update(stream=True, max_tokens=3, stream_options={"include_usage": True}, user="u")
    r = client.post(path, json=body, headers=_auth(keys["predict"]))
    assert r.status_code == 200, r.text
    *chunks, done = _events(r)
    assert done == "[DONE]" and self.replica.generate.calls == []  # the streaming method ran, not generate
    [call] = self.replica.generate_stream.calls
    assert call["max_new_tokens"] == 3 and call["model_version"] is None
    choices = [c["choices"][0] for c in chunks[:-1]]
    text = "".join(c["delta"].get("content", "") if chat else c["text"] for c in choices)
    assert text == "xyz" and choices[-1]["finish_reason"] == "length"
    assert {c["object"] for c in chunks} == {"chat.completion.chunk" if chat else "text_completion"}
    assert chunks[-1]["usage"]["completion_tokens"] == 3 and chunks[-1]["choices"] == []
    assert [(e.request_id, e.output.text, e.user_id) for e in _logged(self, 1)] == [(chunks[0]["id"], "xyz", "u")]


def test_a_stream_refused_by_the_replica_is_answered_before_it_starts(ingress):
    client, self, keys = ingress
    self.replica.generate_stream.answer = lambda p: [
        {"error": {"field": "model_version", "message": "version '9' is not registered", "status": 422}}
    ]
    body = {"prompt": ["a", "b"], "stream": True, "model": "9"}
    r = client.post("/v1/completions", json=body, headers=_auth(keys["predict"]))
    assert (r.status_code, _entry(r)["field"], r.json()["error"]["param"]) == (422, "model_version", "model_version")
    assert all(s.cancelled for s in self.replica.generate_stream.streams)
    self.replica.generate_stream.answer = lambda p: [RuntimeError("ActorDiedError")]
    r = client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "a"}], "stream": True},
        headers=_auth(keys["predict"]),
    )
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
