"""The ingress's routes without Ray: its access dependency, its one refusal handler, its one inference path.

The app is the real one (``serve.ingress.app``); Serve's replica context, which gives each route
its ``self``, is replaced by an ``Ingress`` built by hand around a fake replica handle, so every
answer can be checked in a second. The live app is tested in ``test_app.py`` and ``test_access.py``.
"""

from __future__ import annotations

import types
import warnings
from collections.abc import Callable
from typing import Any

import pytest

from cl.config import Config
from cl.model.base_model import base_model_config
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
    self.replica = types.SimpleNamespace(
        predict=_Method(_predicted),
        predict_unbatched=_Method(_predicted),
        generate=_Method(_generated),
        generate_unbatched=_Method(_generated),
    )
    self.batching = True
    self.limits = Limits.from_serve(cfg.serve)
    self.model_config = base_model_config(cfg.model, cfg.serve.adapter_cache_size)
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
