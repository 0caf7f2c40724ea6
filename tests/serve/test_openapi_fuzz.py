"""The OpenAPI document, fuzzed against the real app: no input makes any endpoint answer 5xx.

Schemathesis generates requests from the schema FastAPI publishes (valid ones, and ones that
break it: wrong types, missing fields, huge numbers), sends them to the app deployed on the
stack's Ray cluster with auth and rollouts on (every case carries an admin key, so the
admin endpoints reach the controller), and fails on any server error.
"""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from cl.security import KeyStore
from serve.ingress import app

pytestmark = pytest.mark.integration

schema = schemathesis.openapi.from_dict(app.openapi())
schema.config.generation.update(modes=list(schemathesis.GenerationMode))  # valid and schema-breaking inputs


@pytest.fixture(scope="module")
def fuzz_url(stack, tmp_path_factory):
    from cl.config import Config
    from infra.kafka_broker import KafkaBroker
    from serve import deploy, shutdown

    tag = uuid.uuid4().hex[:6]
    values = stack.to_dict()
    values["app"] = f"fuzz{tag}"
    values["mlflow"]["model_name"] = f"fuzz{tag}-adapter"
    values["kafka"]["topic_prefix"] = f"fuzz{tag}"
    values["serve"].update(serve_new_versions=False, replica_num_cpus=0.5)
    values["auth"].update(enabled=True, keys_file=str(tmp_path_factory.mktemp("fuzz") / "keys.json"))
    config = Config.from_dict(values)
    key, _ = KeyStore(config.keys_path).create("fuzzer", {"admin": None})
    KafkaBroker(config).create_topics()
    url = deploy(config)
    deadline = time.monotonic() + 60
    while httpx.get(f"{url}/healthz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "the app did not answer /healthz"
        time.sleep(0.5)
    yield url, {"Authorization": f"Bearer {key}"}
    shutdown(config)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_input_gets_a_server_error(case, fuzz_url):
    url, headers = fuzz_url
    response = case.call(base_url=url, headers=headers, timeout=60)
    case.validate_response(response, checks=[not_a_server_error])
    assert response.status_code != 404, "the request missed the app: no documented path answers 404"
    if response.status_code >= 400:
        content_type = (response.headers.get("content-type") or [""])[0]
        assert content_type.startswith("application/json"), content_type
        assert "detail" in response.json()  # every refusal says why, as JSON
