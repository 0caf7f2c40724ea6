"""The client against the real app on the real stack (auth on): the calls a user makes, and the refusals."""

from __future__ import annotations

import asyncio

import pytest

from cl.client import AsyncClient, AuthError, Client, InvalidInput, RateLimited, ServiceError
from cl.security import AuditTrail, KeyStore
from tests.client.conftest import FEEDBACK_BURST

pytestmark = pytest.mark.integration


def test_predict_feedback_and_versions(live):
    n_labels = live.config.model.n_labels
    with Client(live.url, api_key=live.keys["user"]) as client:
        health = client.health()
        p = client.predict(features=live.features(), user_id="u1")
        receipt = client.feedback(p.request_id, label=1, user_id="u1")
        versions = client.versions()
    assert health.status == "ok" and health.app == live.config.app
    assert p.model_version == "base" and p.arm == "champion" and len(p.request_id) == 32
    assert len(p.probabilities) == n_labels and p.label == max(range(n_labels), key=p.probabilities.__getitem__)
    assert receipt.request_id == p.request_id and len(receipt.event_id) == 32
    assert versions.model_name == live.config.mlflow.model_name and versions.versions == ()  # nothing published
    assert versions.base_version == live.config.model.base_version and set(versions.serving) <= {"base"}
    assert not versions.rollout.enabled and "serve_new_versions" in versions.rollout.reason


def test_async_predict_and_generate(live):
    async def main():
        async with AsyncClient(live.url, api_key=live.keys["user"]) as client:
            by_text, by_features = await asyncio.gather(
                client.predict(text="great service"), client.predict(features=live.features())
            )
            first = await client.generate("hello", max_new_tokens=5)
            again = await client.generate("hello", max_new_tokens=5)
        return by_text, by_features, first, again

    by_text, by_features, first, again = asyncio.run(main())
    assert by_text.request_id != by_features.request_id and by_text.model_version == "base"
    assert isinstance(first.text, str) and first.model_version == "base" and first.request_id != again.request_id
    assert again.text == first.text  # greedy by default: the same text


def test_bad_input_is_invalid_input_naming_the_field(live):
    with Client(live.url, api_key=live.keys["user"]) as client:
        with pytest.raises(InvalidInput) as short:
            client.predict(features=[1.0, 2.0])
        with pytest.raises(InvalidInput) as no_signal:
            client.feedback("r-1")
    n = live.config.model.n_features
    assert (short.value.status, short.value.field) == (422, "features")
    assert f"features: got 2 values, but the model reads n_features={n}" in str(short.value)
    assert no_signal.value.status == 422 and "set exactly one of 'rating', 'thumbs'" in str(no_signal.value)


def test_keys_are_sent_and_refusals_are_auth_errors(live):
    for key, reason in ((None, "missing"), ("cl_00000000_" + "q" * 43, "unknown")):
        with Client(live.url, api_key=key or "") as client, pytest.raises(AuthError) as caught:
            client.predict(text="hi")
        err = caught.value
        assert (err.status, err.field, err.detail[0]["type"]) == (401, "Authorization", reason)
        assert "CL_API_KEY" in str(err)
    with Client(live.url, api_key=live.keys["predict_only"]) as client:
        served = client.predict(text="hi")
        with pytest.raises(AuthError) as caught:
            client.feedback(served.request_id, thumbs="up")
    assert caught.value.status == 403 and "--role feedback" in str(caught.value)
    with Client(live.url, api_key=live.keys["admin"]) as client, pytest.raises(ServiceError) as caught:
        client.promote("1")  # rollouts are off in this deployment
    err = caught.value
    assert (type(err), err.status, err.field) == (ServiceError, 409, "serve.serve_new_versions")


def test_feedback_over_the_rate_is_waited_out_then_raised_without_retries(live):
    key = live.keys["burst"]
    key_id = KeyStore(live.config.keys_path).authenticate(key).key_id
    with Client(live.url, api_key=key) as client:
        served = client.predict(features=live.features())
        receipts = [client.feedback(served.request_id, rating=4) for _ in range(FEEDBACK_BURST + 1)]
    assert len({r.event_id for r in receipts}) == FEEDBACK_BURST + 1
    refused = [
        r
        for r in AuditTrail(live.config.audit_path).read()
        if r["action"] == "rate_limited" and r["actor"].startswith(f"key:{key_id}")
    ]
    assert refused, "the last feedback should have been refused once (429) and retried"
    with Client(live.url, api_key=key, retries=0) as client, pytest.raises(RateLimited) as caught:
        for _ in range(4 * FEEDBACK_BURST):
            client.feedback(served.request_id, rating=4)
    assert caught.value.retry_after >= 1 and caught.value.field == "Authorization"
