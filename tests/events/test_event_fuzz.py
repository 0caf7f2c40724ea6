"""Event parsing, fuzzed: whatever arrives on a topic, the parser returns an event or raises
``EventError`` naming fields; nothing else escapes (a consumer must never crash on input)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cl.events import EVENT_MODELS, EventError, parse_event

MODELS = list(EVENT_MODELS.values())
FIELDS = [
    "request_id",
    "kind",
    "input",
    "output",
    "model_version",
    "arm",
    "user_id",
    "label",
    "thumbs",
    "rating",
    "correction",
    "event_id",
    "ts",
    "schema_version",
    "features",
    "text",
    "type",
    "payload",
    "reason",
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)
objects = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8)


def _parse_or_refuse(model, raw) -> None:  # noqa: ANN001
    try:
        parse_event(model, raw)
    except EventError as e:
        assert e.errors and all("field" in err and err["message"] for err in e.errors)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@settings(max_examples=150, deadline=None)
@given(data=objects)
def test_any_json_object_is_an_event_or_a_named_refusal(model, data) -> None:
    _parse_or_refuse(model, json.dumps(data))


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@settings(max_examples=100, deadline=None)
@given(raw=st.binary(max_size=200) | st.text(max_size=200))
def test_any_bytes_are_an_event_or_a_named_refusal(model, raw) -> None:
    _parse_or_refuse(model, raw)
