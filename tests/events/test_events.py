"""Event schemas: validation, error reporting, and the committed docs staying true."""

from __future__ import annotations

import json
import pickle
import re
import sys
import time
import types
from pathlib import Path

import pytest
from pydantic import ValidationError

from cl.events import (
    EVENT_MODELS,
    LIFECYCLE_TYPES,
    SCHEMA_VERSION,
    DeadLetter,
    EventError,
    FeedbackEvent,
    LifecycleEvent,
    RequestEvent,
    feedback_json_schema,
    parse_event,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"
SCHEMA_FILE = DOCS / "feedback.schema.json"
SCHEMA_DOC = DOCS / "feedback-schema.md"


def errors_of(model, raw) -> list[dict[str, str]]:
    with pytest.raises(EventError) as info:
        parse_event(model, raw)
    return info.value.errors


def fields_of(model, raw) -> list[str]:
    return [e["field"] for e in errors_of(model, raw)]


# ---- the envelope ---------------------------------------------------------------------


def test_envelope_defaults():
    before = time.time()
    a, b = FeedbackEvent(request_id="r", rating=4), FeedbackEvent(request_id="r", rating=4)
    assert a.schema_version == SCHEMA_VERSION == 1
    assert re.fullmatch(r"[0-9a-f]{32}", a.event_id) and a.event_id != b.event_id
    assert before <= a.ts <= time.time()


def test_round_trip_keeps_everything():
    fb = FeedbackEvent(request_id="r-9", thumbs="down", user_id="u")
    assert parse_event(FeedbackEvent, fb.to_bytes()) == fb
    assert parse_event(FeedbackEvent, fb.model_dump_json()) == fb


def test_events_are_immutable():
    fb = FeedbackEvent(request_id="r", rating=4)
    with pytest.raises(ValidationError):
        fb.rating = 1


def test_unknown_schema_version_is_rejected():
    assert errors_of(FeedbackEvent, '{"schema_version": 2, "request_id": "r", "rating": 3}') == [
        {"field": "schema_version", "message": "unsupported schema_version 2; this service reads version 1"}
    ]


@pytest.mark.parametrize("ts", ["NaN", "Infinity", "-5", '"1700000000"', "true"])
def test_bad_timestamps_are_rejected(ts):
    assert fields_of(FeedbackEvent, f'{{"request_id": "r", "rating": 3, "ts": {ts}}}') == ["ts"]


def test_topics():
    assert {m.topic: m for m in EVENT_MODELS.values()} == EVENT_MODELS
    assert RequestEvent.topic == "cl.requests" and FeedbackEvent.topic == "cl.feedback"
    assert DeadLetter.topic == "cl.feedback.dlq" and LifecycleEvent.topic == "cl.events"


# ---- feedback -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "signal", "desirable"),
    [
        ({"thumbs": "up"}, "thumbs", True),
        ({"thumbs": "down"}, "thumbs", False),
        ({"rating": 5}, "rating", True),
        ({"rating": 4}, "rating", True),
        ({"rating": 3}, "rating", None),
        ({"rating": 2}, "rating", False),
        ({"rating": 1}, "rating", False),
        ({"label": 0}, "label", None),
        ({"correction": "better text"}, "correction", None),
        ({"rating": 5, "thumbs": None, "label": None}, "rating", True),  # null counts as not set
    ],
)
def test_feedback_signal_and_desirable(fields, signal, desirable):
    fb = parse_event(FeedbackEvent, json.dumps({"request_id": "r", **fields}))
    assert fb.signal == signal
    assert fb.desirable is desirable


@pytest.mark.parametrize(
    ("fields", "named", "got"),
    [
        ({}, "rating, thumbs, label, correction", "got none"),
        ({"rating": None, "thumbs": None}, "rating, thumbs, label, correction", "got none"),
        ({"rating": 5, "thumbs": "up"}, "rating, thumbs", "got 'rating' and 'thumbs'"),
        ({"label": 1, "correction": "x", "thumbs": "down"}, "thumbs, label, correction", "'thumbs' and 'label'"),
    ],
)
def test_exactly_one_feedback_signal(fields, named, got):
    (error,) = errors_of(FeedbackEvent, json.dumps({"request_id": "r", **fields}))
    assert error["field"] == named
    assert error["message"].startswith("set exactly one of 'rating', 'thumbs', 'label', 'correction'")
    assert got in error["message"]


@pytest.mark.parametrize(
    ("fields", "field", "fragment"),
    [
        ({"rating": 0}, "rating", "greater than or equal to 1"),
        ({"rating": 6}, "rating", "less than or equal to 5"),
        ({"rating": 4.5}, "rating", "valid integer, got 4.5"),
        ({"rating": "5"}, "rating", "valid integer, got '5'"),
        ({"rating": True}, "rating", "valid integer, got True"),
        ({"thumbs": "UP"}, "thumbs", "'up' or 'down'"),
        ({"label": -1}, "label", "greater than or equal to 0"),
        ({"correction": ""}, "correction", "at least 1 character"),
    ],
)
def test_feedback_field_errors_name_the_field_and_the_value(fields, field, fragment):
    (error,) = errors_of(FeedbackEvent, json.dumps({"request_id": "r", **fields}))
    assert error["field"] == field
    assert fragment in error["message"]


def test_integral_float_rating_is_accepted_like_json_schema_does():
    assert parse_event(FeedbackEvent, '{"request_id": "r", "rating": 5.0}').rating == 5


def test_request_id_is_required():
    assert errors_of(FeedbackEvent, '{"rating": 5}') == [{"field": "request_id", "message": "field required"}]
    assert fields_of(FeedbackEvent, '{"request_id": "", "rating": 5}') == ["request_id"]


def test_unknown_fields_are_rejected_with_a_suggestion():
    (error,) = errors_of(FeedbackEvent, '{"request_id": "r", "rating": 5, "userid": "u"}')
    assert error["field"] == "userid"
    assert "unknown field (did you mean 'user_id'?)" in error["message"]
    assert "allowed fields: schema_version, event_id, ts, request_id, rating" in error["message"]


def test_every_problem_is_reported_at_once():
    fields = fields_of(FeedbackEvent, '{"rating": 9, "thumbs": "meh", "extra": 1}')
    assert sorted(fields) == ["extra", "rating", "request_id", "thumbs"]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe{}", "not_utf8"),
        ('{"request_id": "r", "rating": 5', "invalid_json"),
        ("", "invalid_json"),
        ('[{"request_id": "r"}]', "not_an_object"),
        ('"just a string"', "not_an_object"),
        ('{"request_id": 7, "rating": 5}', "invalid_event"),
    ],
)
def test_parse_errors_carry_a_reason_and_field_list(raw, reason):
    with pytest.raises(EventError) as info:
        parse_event(FeedbackEvent, raw)
    err = info.value
    assert err.reason == reason and str(err).startswith(reason)
    assert err.errors and all(set(e) == {"field", "message"} for e in err.errors)
    assert isinstance(err, ValueError)
    clone = pickle.loads(pickle.dumps(err))  # errors cross process boundaries (Ray)
    assert (clone.reason, clone.errors) == (err.reason, err.errors)


def test_parse_event_rejects_non_text():
    with pytest.raises(TypeError, match="bytes or str"):
        parse_event(FeedbackEvent, {"request_id": "r", "rating": 5})


# ---- requests -------------------------------------------------------------------------

PREDICT = {
    "request_id": "q1",
    "kind": "predict",
    "input": {"features": [0.5, -1.0, 3.0]},
    "output": {"label": 1, "probabilities": [0.2, 0.7, 0.1]},
    "model_version": "7",
    "arm": "champion",
}
GENERATE = {
    "request_id": "q2",
    "kind": "generate",
    "input": {"text": "hello"},
    "output": {"text": "hello to you"},
    "model_version": "7",
    "arm": "challenger",
    "user_id": "alice",
}


@pytest.mark.parametrize("payload", [PREDICT, GENERATE, {**PREDICT, "output": {"label": 0}}])
def test_valid_requests_round_trip(payload):
    event = parse_event(RequestEvent, json.dumps(payload))
    assert parse_event(RequestEvent, event.to_bytes()) == event


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        ({"input": {}}, "input", "exactly one of 'text' or 'features'; got neither"),
        ({"input": {"text": "a", "features": [1.0]}}, "input", "got both"),
        ({"input": {"features": []}}, "input.features", "at least 1 item"),
        ({"input": {"features": [1.0, "x"]}}, "input.features[1]", "valid number"),
        ({"input": {"txt": "a"}}, "input.txt", "did you mean 'text'?"),
        ({"output": {"label": 3, "probabilities": [0.5, 0.5]}}, "output", "out of range"),
        ({"output": {"label": 0, "probabilities": [1.5]}}, "output.probabilities[0]", "less than or equal to 1"),
        ({"output": {"label": 0, "text": "x"}}, "output", "not both"),
        ({"output": {"text": "x"}}, "output.label", "kind 'predict' needs output.label"),
        ({"kind": "score"}, "kind", "'predict' or 'generate'"),
        ({"model_version": ""}, "model_version", "at least 1 character"),
    ],
)
def test_invalid_requests_name_the_field(change, field, fragment):
    errors = errors_of(RequestEvent, json.dumps({**PREDICT, **change}))
    assert [e["field"] for e in errors] == [field]
    assert fragment in errors[0]["message"]


def test_generate_request_needs_output_text():
    errors = errors_of(RequestEvent, json.dumps({**GENERATE, "output": {"label": 1}}))
    assert errors == [{"field": "output.text", "message": "kind 'generate' needs output.text"}]


# ---- dead letters and lifecycle events ------------------------------------------------------


def test_dead_letter_from_a_parse_error():
    raw = b'{"request_id": "r", "ratng": 5, "bad": "\xff"}'
    with pytest.raises(EventError) as info:
        parse_event(FeedbackEvent, raw)
    letter = DeadLetter.from_error(raw, info.value, topic="cl.feedback", partition=2, offset=41)
    assert letter.reason == "not_utf8"
    assert "\\xff" in letter.raw  # undecodable bytes kept visible
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == ("cl.feedback", 2, 41)
    assert parse_event(DeadLetter, letter.to_bytes()) == letter

    raw = '{"request_id": "r", "ratng": 5}'
    with pytest.raises(EventError) as info:
        parse_event(FeedbackEvent, raw)
    letter = DeadLetter.from_error(raw, info.value)
    assert letter.raw == raw and letter.reason == "invalid_event"
    assert [e.model_dump() for e in letter.errors] == info.value.errors


def test_lifecycle_events():
    event = LifecycleEvent(type="promoted", payload={"version": "8", "previous": "7", "metrics": {"err": 0.1}})
    assert parse_event(LifecycleEvent, event.to_bytes()) == event
    assert LifecycleEvent(type="drift_detected").payload == {}
    assert {"version_published", "drift_detected", "promoted", "rolled_back", "traffic_changed"} <= set(LIFECYCLE_TYPES)
    (error,) = errors_of(LifecycleEvent, '{"type": "promotd"}')
    assert error["field"] == "type" and "'promoted'" in error["message"]
    with pytest.raises(ValidationError):
        LifecycleEvent(type="promoted", payload={"when": object()})  # payload must be JSON


# ---- the committed schema and docs ------------------------------------------------------


def test_committed_json_schema_matches_the_model():
    committed = json.loads(SCHEMA_FILE.read_text())
    assert committed == FeedbackEvent.model_json_schema(), (
        "docs/feedback.schema.json is stale; regenerate it: python -m cl.events > docs/feedback.schema.json"
    )
    assert SCHEMA_FILE.read_text() == feedback_json_schema()


def doc_blocks(tag: str) -> list[str]:
    return re.findall(rf"```{tag}\n(.*?)```", SCHEMA_DOC.read_text(), flags=re.S)


def test_doc_examples_are_valid_feedback():
    valid = doc_blocks("json")
    assert len(valid) >= 4
    for block in valid:
        parse_event(FeedbackEvent, block)


def test_doc_counter_examples_are_rejected():
    invalid = doc_blocks("json invalid")
    assert len(invalid) >= 3
    for block in invalid:
        with pytest.raises(EventError):
            parse_event(FeedbackEvent, block)


def test_doc_dead_letter_example_is_what_the_parser_produces():
    (block,) = doc_blocks("json dlq")
    letter = parse_event(DeadLetter, block)
    with pytest.raises(EventError) as info:
        parse_event(FeedbackEvent, letter.raw)
    assert letter.reason == info.value.reason
    assert [e.model_dump() for e in letter.errors] == info.value.errors


def test_doc_kafka_python_snippet_produces_valid_feedback(monkeypatch):
    sent = []

    class FakeProducer:
        def __init__(self, **config):
            assert config["acks"] == "all"
            self.key_serializer = config.get("key_serializer", lambda k: k)
            self.value_serializer = config.get("value_serializer", lambda v: v)

        def send(self, topic, key=None, value=None):
            sent.append((topic, self.key_serializer(key), self.value_serializer(value)))

        def flush(self):
            pass

    monkeypatch.setitem(sys.modules, "kafka", types.SimpleNamespace(KafkaProducer=FakeProducer))
    first, second = doc_blocks("python")
    namespace: dict = {}
    exec(compile(first, str(SCHEMA_DOC), "exec"), namespace)
    exec(compile(second, str(SCHEMA_DOC), "exec"), {"producer": FakeProducer(acks="all")})
    assert [topic for topic, _, _ in sent] == ["cl.feedback", "cl.feedback"]
    for _, key, value in sent:
        event = parse_event(FeedbackEvent, value)
        assert event.rating == 5 and key in (b"9f1c2e4a7b", "9f1c2e4a7b")


def test_doc_kcat_one_liner_sends_valid_feedback():
    (line,) = [ln for ln in SCHEMA_DOC.read_text().splitlines() if "kcat -P" in ln]
    payload = re.search(r"echo '(.*?)' \|", line).group(1)
    assert "-t cl.feedback" in line
    assert parse_event(FeedbackEvent, payload).rating == 5


def test_committed_schema_agrees_with_the_model_on_examples():
    import jsonschema

    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    payloads = [
        *doc_blocks("json"),
        *doc_blocks("json invalid"),
        '{"request_id": "r"}',
        '{"request_id": "r", "rating": null, "thumbs": "up"}',
        '{"request_id": "r", "rating": null, "thumbs": null}',
        '{"request_id": "r", "label": 2, "correction": "x"}',
        '{"request_id": "r", "label": -2}',
        '{"request_id": "r", "thumbs": "sideways"}',
        '{"request_id": "r", "rating": "5"}',
        '{"request_id": "r", "rating": 5.0}',
        '{"request_id": "r", "rating": 2, "schema_version": 2}',
        '{"request_id": "", "rating": 2}',
    ]
    for raw in payloads:
        by_schema = validator.is_valid(json.loads(raw))
        try:
            parse_event(FeedbackEvent, raw)
            by_model = True
        except EventError:
            by_model = False
        assert by_schema == by_model, raw
