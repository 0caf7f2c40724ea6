"""Access control and input limits on the real app (auth on, as the local default has it).

Keys are made with the real ``cl keys`` command where the CLI is what a user would use; the
app runs on the stack's Ray cluster with rollouts on, so admin actions reach the controller.
"""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

from cl.security import AuditTrail, KeyStore

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def secured(stack, stack_environ, tmp_path_factory):
    """The app with auth on, small limits, and keys for each role: (config, url, keys, env)."""
    from cl.config import Config
    from infra.kafka_broker import KafkaBroker
    from serve import deploy, shutdown

    tag = uuid.uuid4().hex[:6]
    folder = tmp_path_factory.mktemp("access")
    values = stack.to_dict()
    values["app"] = f"acc{tag}"
    values["mlflow"]["model_name"] = f"acc{tag}-adapter"
    values["kafka"]["topic_prefix"] = f"acc{tag}"
    values["serve"].update(
        serve_new_versions=False, replica_num_cpus=0.5, max_text_chars=64, max_new_tokens=8, max_body_bytes=2048
    )
    values["auth"].update(
        enabled=True,
        keys_file=str(folder / "keys.json"),
        audit_file=str(folder / "audit.jsonl"),
        feedback_rate_per_s=0.5,
        feedback_burst=3,
    )
    config = Config.from_dict(values)
    KafkaBroker(config).create_topics()
    store = KeyStore(config.keys_path)
    keys = {
        name: store.create(name, roles)[0]
        for name, roles in {
            "predictor": {"predict": None},
            "rater": {"feedback": None},
            "ops": {"admin": None},
            "rater2": {"feedback": None},
        }.items()
    }
    env = {
        **stack_environ,
        "CL_AUTH_ENABLED": "true",
        "CL_AUTH_KEYS_FILE": str(config.keys_path),
        "CL_AUTH_AUDIT_FILE": str(config.audit_path),
        "CL_KAFKA_TOPIC_PREFIX": config.kafka.topic_prefix,
        "CL_APP": config.app,
    }
    url = deploy(config)
    deadline = time.monotonic() + 60
    while httpx.get(f"{url}/healthz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "the app did not answer /healthz"
        time.sleep(0.5)
    yield config, url, keys, env
    shutdown(config)


def _call(url: str, path: str, key: str | None = None, body: dict | None = None, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if body is None and not kw:
        return httpx.get(url + path, headers=headers, timeout=30)
    return httpx.post(url + path, json=body, headers={**headers, **kw.pop("headers", {})}, timeout=30, **kw)


def _entry(response: httpx.Response) -> dict:
    assert response.headers["content-type"].startswith("application/json")
    return response.json()["detail"][0]


def _features(config) -> list[float]:
    return [0.5] * config.model.n_features


def test_no_key_a_wrong_key_and_a_revoked_key_get_401(secured, cl_command):
    config, url, keys, env = secured
    body = {"features": _features(config)}
    for key, reason in ((None, "missing"), ("not-a-key", "malformed"), (keys["predictor"][:-3] + "zzz", "unknown")):
        r = _call(url, "/v1/predict", key, body)
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert (_entry(r)["type"], _entry(r)["field"]) == (reason, "Authorization")
    assert _call(url, "/v1/predict", keys["predictor"], body).status_code == 200

    made = json.loads(cl_command(["keys", "create", "--name", "temp", "--role", "predict", "--json"], env).stdout)
    assert _call(url, "/v1/predict", made["key"], body).status_code == 200
    revoked = cl_command(["keys", "revoke", made["key_id"]], env)
    assert revoked.returncode == 0, revoked.stderr
    r = _call(url, "/v1/predict", made["key"], body)
    assert (r.status_code, _entry(r)["type"]) == (401, "revoked")
    listed = json.loads(cl_command(["keys", "list", "--json"], env).stdout)
    assert {k["name"]: k["status"] for k in listed}["temp"] == "revoked"
    assert made["key"] not in config.keys_path.read_text()


def test_a_key_without_the_role_gets_403_and_admin_may_do_everything(secured):
    config, url, keys, _ = secured
    served = _call(url, "/v1/predict", keys["ops"], {"features": _features(config)})
    assert served.status_code == 200
    feedback = {"request_id": served.json()["request_id"], "thumbs": "up"}
    r = _call(url, "/v1/feedback", keys["predictor"], feedback)
    assert (r.status_code, _entry(r)["type"], _entry(r)["role"]) == (403, "no_role", "feedback")
    assert "--role feedback" in _entry(r)["msg"]
    for path, body in (("/v1/admin/traffic", {"version": "1", "weight": 0.5}), ("/v1/admin/rollback", {})):
        assert _call(url, path, keys["rater"], body).status_code == 403
    assert _call(url, "/v1/feedback", keys["ops"], feedback).status_code == 202
    assert _call(url, "/v1/models", keys["rater"]).status_code == 200  # any valid key may read
    assert _call(url, "/v1/models").status_code == 401
    assert httpx.get(f"{url}/healthz").status_code == 200  # liveness stays open


def test_an_expired_grant_gets_403_naming_when_it_ended(secured):
    config, url, _, _ = secured
    key, _ = KeyStore(config.keys_path).create("lapsed", {"predict": 10.0, "feedback": None}, now=time.time() - 60)
    r = _call(url, "/v1/predict", key, {"features": _features(config)})
    assert (r.status_code, _entry(r)["type"]) == (403, "expired")
    assert "until" in _entry(r)["msg"]


def test_feedback_over_the_rate_gets_429_per_key(secured):
    config, url, keys, _ = secured
    served = _call(url, "/v1/predict", keys["predictor"], {"features": _features(config)}).json()
    feedback = {"request_id": served["request_id"], "rating": 4}
    codes = [_call(url, "/v1/feedback", keys["rater"], feedback).status_code for _ in range(6)]
    assert codes[:3] == [202, 202, 202] and 429 in codes[3:], codes
    r = _call(url, "/v1/feedback", keys["rater"], feedback)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert (_entry(r)["limit"], _entry(r)["value"]) == ("auth.feedback_rate_per_s", 0.5)
    assert _call(url, "/v1/feedback", keys["rater2"], feedback).status_code == 202  # another key is not slowed


def test_every_limit_is_a_4xx_naming_it(secured):
    config, url, keys, _ = secured
    key = keys["ops"]
    r = _call(url, "/v1/predict", key, {"text": "x" * 3000})
    assert (r.status_code, _entry(r)["type"], _entry(r)["limit"]) == (413, "body_too_large", "serve.max_body_bytes")

    def chunks():
        yield b'{"text": "'
        for _ in range(10):
            yield b"y" * 500
        yield b'"}'

    r = httpx.post(
        f"{url}/v1/predict",
        content=chunks(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert (r.status_code, _entry(r)["type"]) == (413, "body_too_large")  # no Content-Length: counted as it came
    cases = [
        ("/v1/predict", {"text": "x" * 65}, "text", "serve.max_text_chars"),
        ("/v1/predict", {"features": [1.0] * (config.model.n_features + 1)}, "features", "n_features"),
        ("/v1/generate", {"prompt": "hi", "max_new_tokens": 9}, "max_new_tokens", "serve.max_new_tokens"),
        ("/v1/feedback", {"request_id": "r", "rating": 6}, "rating", "5"),
        ("/v1/feedback", {"request_id": "r", "rating": 0}, "rating", "1"),
    ]
    for path, body, field, limit in cases:
        r = _call(url, path, key, body)
        assert r.status_code == 422, (path, body, r.text)
        assert _entry(r)["field"] == field and limit in _entry(r)["msg"], r.text
    assert _call(url, "/v1/predict", key, {"text": "x" * 64}).status_code == 200


def test_admin_actions_and_refusals_are_in_the_audit_trail_and_on_cl_events(secured, cl_command):
    from cl.events import LifecycleEvent
    from streams import EventTail

    config, url, keys, env = secured
    ops_id = KeyStore(config.keys_path).authenticate(keys["ops"]).key_id
    assert cl_command(["keys", "create", "--name", "auditor", "--role", "predict:1h"], env).returncode == 0
    r = _call(url, "/v1/admin/traffic", keys["ops"], {"version": "999", "weight": 0.5})
    assert r.status_code == 422  # no such challenger; refused, and still audited
    assert _call(url, "/v1/admin/promote", keys["predictor"], {"version": "base"}).status_code == 403
    bogus = _call(url, "/v1/admin/rollback", "cl_00000000_" + "q" * 43, {})
    assert bogus.status_code == 401

    records = AuditTrail(config.audit_path).read()
    traffic = [r for r in records if r["action"] == "traffic"]
    assert traffic and traffic[-1]["actor"] == f"key:{ops_id} (ops)" and traffic[-1]["outcome"] == "422 refused"
    assert traffic[-1]["details"]["version"] == "999"
    failures = [r for r in records if r["action"] == "auth_failed"]
    assert {"403 no_role", "401 unknown"} <= {r["outcome"] for r in failures}
    assert any(r["details"]["path"] == "/v1/admin/promote" for r in failures)
    assert any(r["action"] == "key_created" and r["details"]["name"] == "auditor" for r in records)  # made by cl keys

    shown = cl_command(["audit", "--json", "--limit", "0"], env)
    assert shown.returncode == 0, shown.stderr
    assert [r["seq"] for r in json.loads(shown.stdout)] == [r["seq"] for r in AuditTrail(config.audit_path).read()]
    verified = cl_command(["audit", "--verify"], env)
    assert verified.returncode == 0 and "chain intact" in verified.stdout

    tail = EventTail(config.kafka.bootstrap_servers, config.topics.events, LifecycleEvent, from_beginning=True)
    seen: list[dict] = []
    deadline = time.monotonic() + 30
    while not any(e["action"] == "traffic" for e in seen) and time.monotonic() < deadline:
        seen += [e.payload for e in tail.poll(1000) if e.type == "audit"]
    tail.close()
    assert any(e["action"] == "traffic" and e["actor"] == f"key:{ops_id} (ops)" for e in seen)
    assert any(e["action"] == "auth_failed" for e in seen)
