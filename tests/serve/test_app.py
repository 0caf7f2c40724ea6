"""The serving app on the real stack: Ray Serve over HTTP, Kafka request log and feedback, MLflow versions."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.serving.conftest import random_adapter

pytestmark = pytest.mark.integration

FEATURES = [0.5, -1.0, 2.0, 0.25, -0.75, 1.5, 0.0, -2.0]


@pytest.fixture(scope="module")
def served(stack):
    """The app deployed on the stack's Ray cluster, with its own (empty) registered model."""
    import ray
    from ray import serve

    from cl.config import Config
    from serve import deploy, shutdown

    values = stack.to_dict()
    values["app"] = "servetest"
    values["mlflow"]["model_name"] = f"servetest-{uuid.uuid4().hex[:8]}-adapter"
    values["serve"].update(replicas=1, replica_num_cpus=0.5, max_batch_size=8)
    config = Config.from_dict(values)
    was_connected = ray.is_initialized()
    url = deploy(config)
    client = httpx.Client(base_url=url, timeout=60.0)
    _wait_until(lambda: _ok(client, "/healthz"), 60, "the HTTP proxy to answer /healthz")
    try:
        yield config, client
    finally:
        client.close()
        shutdown(config)
        serve.shutdown()
        if not was_connected:
            ray.shutdown()


def _ok(client: httpx.Client, path: str) -> bool:
    try:
        return client.get(path).status_code == 200
    except httpx.HTTPError:
        return False


def _wait_until(check: Callable[[], object], timeout_s: float, what: str, every_s: float = 0.5) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def _find_on_topic(bootstrap: str, topic: str, match: Callable[[dict], bool], timeout_s: float = 30.0) -> dict:
    """The first JSON event on ``topic`` (read from the beginning, no group) that ``match``es."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    value = json.loads(record.value)
                    if match(value):
                        value["_key"] = record.key.decode() if record.key else None
                        return value
    finally:
        consumer.close()
    raise AssertionError(f"no matching event on {topic} within {timeout_s:g} s")


def _detail(response: httpx.Response) -> list[dict]:
    body = response.json()
    assert isinstance(body.get("detail"), list), body
    return body["detail"]


# ---- the HTTP surface ---------------------------------------------------------------------


def test_health_and_openapi(served):
    config, client = served
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["app"] == "servetest"
    doc = client.get("/openapi.json").json()
    paths = {"/v1/predict", "/v1/generate", "/v1/completions", "/v1/chat/completions", "/v1/feedback", "/v1/models"}
    assert paths | {"/healthz"} <= set(doc["paths"])
    assert "202" in doc["paths"]["/v1/feedback"]["post"]["responses"]


def test_predict_serves_base_and_logs_the_request(served):
    config, client = served
    r = client.post("/v1/predict", json={"features": FEATURES, "user_id": "u-1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == "base" and body["arm"] == "champion"
    assert len(body["request_id"]) == 32 and len(body["probabilities"]) == config.model.n_labels
    assert body["label"] == max(range(config.model.n_labels), key=body["probabilities"].__getitem__)

    event = _find_on_topic(
        config.kafka.bootstrap_servers, config.topics.requests, lambda e: e.get("request_id") == body["request_id"]
    )
    assert event["_key"] == body["request_id"]
    assert event["kind"] == "predict" and event["model_version"] == "base" and event["user_id"] == "u-1"
    assert event["input"]["features"] == FEATURES and event["output"]["label"] == body["label"]


def test_predict_text_and_generate(served):
    config, client = served
    r = client.post("/v1/predict", json={"text": "great service"})
    assert r.status_code == 200, r.text
    g = client.post("/v1/generate", json={"prompt": "hello", "max_new_tokens": 5})
    assert g.status_code == 200, g.text
    gen = g.json()
    assert isinstance(gen["text"], str) and gen["model_version"] == "base" and len(gen["request_id"]) == 32
    again = client.post("/v1/generate", json={"prompt": "hello", "max_new_tokens": 5}).json()
    assert again["text"] == gen["text"]  # greedy is deterministic
    event = _find_on_topic(
        config.kafka.bootstrap_servers, config.topics.requests, lambda e: e.get("request_id") == gen["request_id"]
    )
    assert event["kind"] == "generate" and event["output"]["text"] == gen["text"]


def test_an_openai_client_gets_completions_that_feedback_can_rate(served):
    import openai

    config, client = served
    oa = openai.OpenAI(base_url=str(client.base_url).rstrip("/") + "/v1", api_key="unused", max_retries=0)
    done = oa.completions.create(model=config.mlflow.model_name, prompt="hello", max_tokens=5, temperature=0)
    greedy = client.post("/v1/generate", json={"prompt": "hello", "max_new_tokens": 5}).json()["text"]
    assert done.object == "text_completion" and done.model == f"{config.mlflow.model_name}:base"
    assert done.choices[0].text == greedy and len(greedy) >= 2  # the same model, decoded the same way
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (6, len(greedy.encode()))
    assert done.choices[0].finish_reason == ("length" if len(greedy.encode()) == 5 else "stop")

    stop = greedy[-2:]
    cut = oa.completions.create(model="cl", prompt="hello", max_tokens=5, temperature=0, stop=[stop])
    assert (cut.choices[0].text, cut.choices[0].finish_reason) == (greedy[: greedy.find(stop)], "stop")

    kwargs = {"model": "base", "prompt": ["ab", "cd"], "n": 2, "max_tokens": 4, "temperature": 1.0, "seed": 3}
    many = oa.completions.create(**kwargs)
    assert [c.index for c in many.choices] == [0, 1, 2, 3] and len({c.request_id for c in many.choices}) == 4
    assert [c.text for c in oa.completions.create(**kwargs).choices] == [c.text for c in many.choices]  # seeded

    r = client.post("/v1/feedback", json={"request_id": done.id, "thumbs": "up"})
    assert r.status_code == 202, r.text
    event = _find_on_topic(
        config.kafka.bootstrap_servers, config.topics.requests, lambda e: e.get("request_id") == done.id
    )
    assert event["kind"] == "generate" and event["output"]["text"] == done.choices[0].text

    with pytest.raises(openai.UnprocessableEntityError) as refused:
        oa.completions.create(model="gpt-4", prompt="hi")
    assert refused.value.body["param"] == "model" and "GET /v1/models" in refused.value.body["message"]
    for body, field in (
        ({"prompt": "hi", "echo": True}, "echo"),
        ({"prompt": "hi", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "hi", "max_tokens": 100_000}, "max_tokens"),
    ):
        r = client.post("/v1/completions", json=body)
        assert r.status_code == 422 and r.json()["error"]["param"] == field and _detail(r)[0]["field"] == field, r.text


def test_an_openai_client_chats_and_streams_and_feedback_rates_a_chat(served):
    import openai

    config, client = served
    oa = openai.OpenAI(base_url=str(client.base_url).rstrip("/") + "/v1", api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": "hello"}]
    prompt = "<|user|>\nhello\n<|assistant|>\n"  # the byte model's built-in chat template
    done = oa.chat.completions.create(model=config.mlflow.model_name, messages=messages, max_tokens=8, temperature=0)
    reply = done.choices[0]
    assert done.object == "chat.completion" and done.model == f"{config.mlflow.model_name}:base"
    assert reply.message.role == "assistant" and len(reply.message.content) >= 2
    greedy = client.post("/v1/generate", json={"prompt": prompt, "max_new_tokens": 8}).json()["text"]
    assert reply.message.content == greedy  # the chat is a completion of the rendered prompt
    assert done.usage.prompt_tokens == len(prompt) + 1

    stream = oa.chat.completions.create(
        model="cl", messages=messages, max_tokens=8, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert {(c.object, c.id) for c in chunks} == {("chat.completion.chunk", chunks[0].id)}
    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [c.choices[0].delta.content for c in chunks[1:] if c.choices and c.choices[0].delta.content]
    assert "".join(deltas) == reply.message.content and len(deltas) > 1  # it came in pieces
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == reply.finish_reason
    assert chunks[-1].usage.completion_tokens == done.usage.completion_tokens

    for kwargs in (  # greedy, and sampled with a seed
        {"model": "cl", "prompt": "hello", "max_tokens": 10, "temperature": 0},
        {"model": "base", "prompt": "héllo", "max_tokens": 12, "temperature": 1.0, "seed": 5},
    ):
        whole = oa.completions.create(**kwargs).choices[0]
        pieces = list(oa.completions.create(stream=True, **kwargs))
        assert {c.object for c in pieces} == {"text_completion"}
        assert "".join(c.choices[0].text for c in pieces) == whole.text
        assert pieces[-1].choices[0].finish_reason == whole.finish_reason

    for request_id, text in ((done.id, reply.message.content), (chunks[0].id, "".join(deltas))):
        r = client.post("/v1/feedback", json={"request_id": request_id, "thumbs": "up"})
        assert r.status_code == 202, r.text
        event = _find_on_topic(
            config.kafka.bootstrap_servers, config.topics.requests, lambda e: e.get("request_id") == request_id
        )
        assert (event["kind"], event["input"]["text"], event["output"]["text"]) == ("generate", prompt, text)

    with pytest.raises(openai.UnprocessableEntityError) as refused:
        oa.chat.completions.create(model="cl", messages=[{"role": "robot", "content": "hi"}])
    assert refused.value.body["param"] == "messages[0].role" and "robot" in refused.value.body["message"]
    with pytest.raises(openai.UnprocessableEntityError) as refused:  # refused before the stream starts
        oa.chat.completions.create(model="cl", messages=messages, max_tokens=100_000, stream=True)
    assert refused.value.body["param"] == "max_tokens"


@pytest.mark.parametrize(
    ("path", "body", "field", "words"),
    [
        ("/v1/predict", {"features": [1.0, 2.0]}, "features", "n_features=8"),
        ("/v1/predict", {"text": "a", "features": FEATURES}, "text, features", "exactly one of 'text' or 'features'"),
        ("/v1/predict", {"features": FEATURES, "colour": 1}, "colour", "unknown field"),
        ("/v1/predict", {"text": "x" * 5000}, "text", "serve.max_text_chars"),
        ("/v1/predict", {"features": FEATURES, "model_version": "999"}, "model_version", "not registered"),
        ("/v1/generate", {"prompt": "hi", "max_new_tokens": 100_000}, "max_new_tokens", "serve.max_new_tokens"),
        ("/v1/generate", {"prompt": "hi", "top_p": 0}, "top_p", "greater than 0"),
        ("/v1/generate", {"prompt": "hi" * 60, "max_new_tokens": 32}, "prompt", "max_seq_len=128"),
    ],
)
def test_bad_requests_get_422_naming_the_field(served, path, body, field, words):
    _, client = served
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    [entry] = _detail(r)
    assert entry["field"] == field and words in entry["msg"], entry
    assert entry["loc"][0] == "body"


# ---- feedback ------------------------------------------------------------------------------


def test_feedback_is_on_the_topic_before_202(served):
    config, client = served
    request_id = client.post("/v1/predict", json={"features": FEATURES}).json()["request_id"]
    r = client.post("/v1/feedback", json={"request_id": request_id, "rating": 5, "user_id": "u-1"})
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["request_id"] == request_id and accepted["event_id"]
    event = _find_on_topic(
        config.kafka.bootstrap_servers,
        config.topics.feedback,
        lambda e: e.get("event_id") == accepted["event_id"],
        timeout_s=10.0,
    )
    assert event["_key"] == request_id and event["rating"] == 5 and event["schema_version"] == 1


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"request_id": "r-1"}, "rating, thumbs, label, correction", "set exactly one of"),
        ({"request_id": "r-1", "ratng": 5}, "ratng", "did you mean 'rating'?"),
        ({"request_id": "r-1", "rating": 9}, "rating", "less than or equal to 5"),
        ({"request_id": "r-1", "thumbs": "sideways"}, "thumbs", "'up' or 'down'"),
        ({"rating": 4}, "request_id", "field required"),
    ],
)
def test_invalid_feedback_gets_422_naming_the_field(served, body, field, words):
    _, client = served
    r = client.post("/v1/feedback", json=body)
    assert r.status_code == 422, r.text
    detail = _detail(r)
    assert any(e["field"] == field and words in e["msg"] for e in detail), detail


# ---- new versions ----------------------------------------------------------------------------


def test_a_published_version_is_served_within_seconds(served):
    from cl.events import LifecycleEvent
    from cl.model.base_model import build_base_model
    from cl.registry import AdapterRegistry
    from streams import EventProducer

    config, client = served
    base = client.post("/v1/predict", json={"features": FEATURES}).json()
    assert base["model_version"] == "base"

    registry = AdapterRegistry(config.mlflow.tracking_uri, config.mlflow.model_name)
    template = build_base_model(config.model, 1).adapter_state(0)
    version = registry.publish(random_adapter(template, seed=11), tags={"base_version": config.model.base_version})
    producer = EventProducer(config.kafka.bootstrap_servers, client_id="servetest")
    try:
        announcement = LifecycleEvent(
            type="version_published", payload={"version": version, "model_name": config.mlflow.model_name}
        )
        producer.send_and_wait(config.topics.events, announcement)
    finally:
        producer.close()

    def served_new() -> dict | None:
        body = client.post("/v1/predict", json={"features": FEATURES}).json()
        return body if body.get("model_version") == version else None

    new = _wait_until(served_new, 30, f"version {version} to be served")
    assert new["probabilities"] != pytest.approx(base["probabilities"], abs=1e-4)

    pinned = client.post("/v1/predict", json={"features": FEATURES, "model_version": "base"}).json()
    assert pinned["model_version"] == "base" and pinned["arm"] == "pinned"
    assert pinned["probabilities"] == pytest.approx(base["probabilities"], abs=1e-5)

    def listed() -> dict | None:
        models = client.get("/v1/models").json()
        replicas = models["replicas"]
        ok = replicas and all(r["current_version"] == version and version in r["loaded_versions"] for r in replicas)
        return models if ok else None

    models = _wait_until(listed, 15, "the replicas to report the new version")
    assert [v["version"] for v in models["versions"]] == [version]
    assert models["versions"][0]["tags"]["base_version"] == config.model.base_version
    assert models["serving"] == [version] and models["base_version"] == config.model.base_version
    assert models["model_name"] == config.mlflow.model_name

    # Concurrent requests for both versions share batches and get what each asked for.
    bodies = [{"features": FEATURES, **({"model_version": "base"} if i % 2 else {})} for i in range(12)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda b: client.post("/v1/predict", json=b).json(), bodies))
    for i, answer in enumerate(answers):
        expected = base if i % 2 else new
        assert answer["model_version"] == expected["model_version"]
        assert answer["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-5)


def test_replica_methods_and_the_unbatched_path(served):
    from ray import serve

    config, _ = served
    handle = serve.get_deployment_handle("ModelReplica", app_name=config.app)
    current = handle.current_version.remote().result(timeout_s=30)
    assert current in handle.loaded_versions.remote().result(timeout_s=30)
    request = {"features": FEATURES, "model_version": None}
    batched = handle.predict.remote(request).result(timeout_s=30)
    alone = handle.predict_unbatched.remote(request).result(timeout_s=30)
    assert batched["model_version"] == alone["model_version"] == current
    assert batched["probabilities"] == pytest.approx(alone["probabilities"], abs=1e-5)
    prompt = {"prompt": "abc", "max_new_tokens": 4}
    assert handle.generate.remote(prompt).result(timeout_s=30) == handle.generate_unbatched.remote(prompt).result(
        timeout_s=30
    )


def test_prometheus_metrics_count_requests_batches_feedback_and_expert_load(served):
    """Ray's metrics agent exports our series: what the tests above sent must show up, by
    endpoint, version and arm, with the replica's batch sizes, adapter loads and expert load."""
    from tests.prometheus import total, wait_for

    config, client = served
    bad = client.post("/v1/feedback", json={"request_id": "r-1", "rating": 9})
    assert bad.status_code == 422
    app = {"application": config.app}

    def ready(samples) -> bool:
        return (
            total(samples, "ray_cl_requests_total", endpoint="predict", status="200", **app) > 0
            and total(samples, "ray_cl_feedback_total", outcome="invalid", **app) > 0
            and total(samples, "ray_cl_expert_load_share", **app) > 0
            and total(samples, "ray_cl_adapter_loads_total", **app) >= 1  # exported some seconds after the load
        )

    samples = wait_for(config.ray.metrics_url, ready)
    versions = {
        labels["version"]
        for name, labels, _ in samples
        if name == "ray_cl_requests_total" and labels.get("application") == config.app
    }
    assert "base" in versions and len(versions) >= 2, versions  # base and the published version
    assert total(samples, "ray_cl_requests_total", endpoint="generate", arm="champion", **app) > 0
    assert total(samples, "ray_cl_requests_total", endpoint="completions", **app) > 0
    assert total(samples, "ray_cl_request_latency_ms_count", endpoint="predict", version="base", **app) > 0
    assert total(samples, "ray_cl_feedback_total", outcome="accepted", **app) > 0
    assert total(samples, "ray_cl_batch_size_count", method="predict", **app) > 0
    assert (
        total(samples, "ray_cl_batch_size_sum", method="predict", **app) > 0
    )  # sum and count are exported apart: no ratio
    assert total(samples, "ray_cl_adapter_loads_total", **app) >= 1
    shares: dict[str, float] = {}
    for name, labels, value in samples:
        if name == "ray_cl_expert_load_share" and labels.get("application") == config.app:
            shares[labels["layer"]] = shares.get(labels["layer"], 0.0) + value
    assert shares and all(v == pytest.approx(1.0, abs=1e-6) for v in shares.values()), shares  # one replica
