"""The service on a Hugging Face checkpoint: Ray Serve replicas built from a tiny random
checkpoint answer over HTTP what ``transformers`` computes for it, and take feedback on it."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
import torch

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def checkpoint_app(stack, tmp_path_factory):
    import ray
    from ray import serve

    from cl.config import Config
    from cl.testing.tiny_checkpoints import build_tiny_checkpoint
    from serve import deploy, shutdown

    directory = build_tiny_checkpoint("qwen3_moe", tmp_path_factory.mktemp("ckpt") / "qwen3_moe")
    values = stack.to_dict()
    values["app"] = "ckpttest"
    values["mlflow"]["model_name"] = f"ckpttest-{uuid.uuid4().hex[:8]}-adapter"
    values["model"].update(checkpoint=str(directory), n_features=0)
    values["serve"].update(replicas=1, replica_num_cpus=0.5, max_batch_size=4)
    config = Config.from_dict(values)
    was_connected = ray.is_initialized()
    url = deploy(config)
    client = httpx.Client(base_url=url, timeout=60.0)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if client.get("/healthz").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    try:
        yield config, client, directory
    finally:
        client.close()
        shutdown(config)
        serve.shutdown()
        if not was_connected:
            ray.shutdown()


def test_a_checkpoint_replica_generates_what_transformers_generates(checkpoint_app):
    from cl.model.base_model import build_tokenizer
    from cl.testing.tiny_checkpoints import load_reference

    config, client, directory = checkpoint_app
    prompt = "hello world, how are"
    r = client.post("/v1/generate", json={"prompt": prompt, "max_new_tokens": 8})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == "base"

    tok = build_tokenizer(config.model)
    ids = torch.tensor([tok.encode(prompt)])
    ref = load_reference(directory)
    import transformers

    out = ref.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        generation_config=transformers.GenerationConfig(
            max_new_tokens=8, do_sample=False, eos_token_id=tok.eos_id, pad_token_id=tok.eos_id
        ),
    )
    assert body["text"] == tok.decode(out[0, ids.shape[1] :])


def test_a_checkpoint_replica_classifies_text_and_takes_feedback(checkpoint_app):
    config, client, _ = checkpoint_app
    r = client.post("/v1/predict", json={"text": "a mixture of experts", "user_id": "u-ckpt"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["probabilities"]) == config.model.n_labels
    f = client.post("/v1/feedback", json={"request_id": body["request_id"], "label": 1, "user_id": "u-ckpt"})
    assert f.status_code == 202, f.text
    features = client.post("/v1/predict", json={"features": [0.5, 1.0]})
    assert features.status_code == 422 and "n_features=0" in features.text
