"""422 bodies: every entry names its field, FastAPI's own errors included (no Ray needed)."""

from __future__ import annotations

import warnings

import pytest
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError

from cl.events import FeedbackEvent
from serve._private.errors import Refusal, loc_of, validation_error_response
from serve.schemas import PredictRequest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

app = FastAPI()


@app.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError):
    return validation_error_response(request.url.path, exc)


@app.post("/v1/feedback")
def _feedback(body: FeedbackEvent) -> dict:
    return {}


@app.post("/v1/predict")
def _predict(body: PredictRequest) -> dict:
    return {}


client = TestClient(app)


def test_loc_of_splits_dotted_paths():
    assert loc_of("input.features[2]") == ["body", "input", "features", 2]
    assert loc_of("") == ["body"]


def test_a_refusal_is_one_entry_naming_its_field():
    r = Refusal(422, "features", "got 2 values").response()
    assert r.status_code == 422 and "retry-after" not in r.headers
    assert (
        r.body
        == b'{"detail":[{"type":"value_error","loc":["body","features"],"field":"features","msg":"got 2 values"}]}'
    )


def test_a_replica_error_is_the_same_refusal_and_a_503_says_when_to_retry():
    busy = Refusal.from_replica({"field": "model_version", "message": "registry down", "status": 503}).response()
    assert (busy.status_code, busy.headers["retry-after"]) == (503, "1")
    assert b'"loc":["body","model_version"]' in busy.body
    bad = Refusal.from_replica({"field": "features", "message": "got 2 values", "status": 422})
    assert bad.retry_after is None and bad.response().body == Refusal(422, "features", "got 2 values").response().body


@pytest.mark.parametrize(
    ("path", "kwargs", "field", "words"),
    [
        ("/v1/feedback", {"json": {"request_id": "r", "ratng": 5}}, "ratng", "did you mean 'rating'?"),
        ("/v1/feedback", {"json": {"request_id": "r", "label": -1}}, "label", "greater than or equal to 0, got -1"),
        ("/v1/feedback", {"content": b"{bad", "headers": {"content-type": "application/json"}}, "", "not valid JSON"),
        ("/v1/predict", {"json": {"features": [1, "x"]}}, "features[1]", "valid number"),
        ("/v1/predict", {"json": {}}, "text, features", "got neither"),
        ("/v1/predict", {"json": [1]}, "", "one JSON object"),
    ],
)
def test_validation_errors_name_the_field(path, kwargs, field, words):
    r = client.post(path, **kwargs)
    assert r.status_code == 422
    [entry] = r.json()["detail"]
    assert entry["field"] == field and words in entry["msg"], entry
    assert entry["loc"][0] == "body"
