"""The typed cl.events payloads (cl.lifecycle): the same bytes on the topic as the hand-built dicts
they replaced, lenient reading, and errors that name the field."""

from __future__ import annotations

import math
import random

import pytest

from cl.events import EventError, LifecycleEvent, parse_event
from cl.learning.eval_set import EvalSet
from cl.learning.example import Example
from cl.lifecycle import (
    MESSAGES,
    DecisionRecord,
    DriftDetected,
    Promoted,
    RolledBack,
    RolloutCheckpoint,
    RolloutDecision,
    RolloutState,
    TrafficChanged,
    UserQuarantined,
    VersionPublished,
    decision_message,
    read_message,
)
from cl.rollout import CanaryPolicy, Decision

IDS = {"event_id": "e" * 32, "ts": 1700000000.25}


def same_bytes(message, type_: str, payload: dict) -> None:
    """``message`` goes on the topic byte for byte as ``LifecycleEvent(type_, payload)`` did."""
    assert message.to_event(**IDS).to_bytes() == LifecycleEvent(type=type_, payload=payload, **IDS).to_bytes()


def test_the_learners_version_published_is_the_dict_it_replaced():
    metrics = {"events_seen": 400.0, "prequential_accuracy": 0.61, "loss_ema": math.nan}
    old = {
        "version": "7",
        "model_name": "app-adapter",
        "base_version": "seed-0",
        "parent_version": "",
        "events_seen": 400,
        "reason": "periodic",
        "metrics": metrics,
    }
    new = VersionPublished(
        version="7",
        model_name="app-adapter",
        base_version="seed-0",
        parent_version="",
        events_seen=400,
        reason="periodic",
        metrics=metrics,
    )
    same_bytes(new, "version_published", old)
    # NaN goes on the topic as null, and reads back as None (the report draws it as NaN)
    back = VersionPublished.from_event(parse_event(LifecycleEvent, new.to_event().to_bytes()))
    assert back.metrics["loss_ema"] is None and back.metrics["prequential_accuracy"] == 0.61


def test_the_retrains_announcement_is_the_dict_it_replaced():
    old = {
        "version": "9",
        "model_name": "app-adapter",
        "base_version": "seed-0",
        "parent_version": "7",
        "events_seen": 1200,
        "reason": "offline retrain",
        "role": "challenger",
        "source": "retrain",
        "metrics": {"eval_accuracy": 0.8125},
    }
    same_bytes(VersionPublished(**old), "version_published", old)


def test_drift_and_quarantine_are_the_dicts_they_replaced():
    old = {"events_seen": 250, "actions": ["reset", "boost_lr"], "lr": 0.01, "detector": "adwin"}
    same_bytes(DriftDetected(**{**old, "actions": ("reset", "boost_lr")}), "drift_detected", old)
    old = {"user_id": "mallory", "events": 30, "disagreements": 29, "others_rate": 0.31, "p_value": 1.2e-12}
    same_bytes(UserQuarantined(**old), "user_quarantined", old)


@pytest.mark.parametrize(
    ("action", "type_", "cls"),
    [
        ("start", "traffic_changed", TrafficChanged),
        ("promote", "promoted", Promoted),
        ("rollback", "rolled_back", RolledBack),
        ("hold", "rollout_decision", RolloutDecision),
    ],
)
@pytest.mark.parametrize("rollout_id", [None, "r-3"])
def test_a_decision_is_announced_as_its_audit_record(action, type_, cls, rollout_id):
    decision = Decision(
        action, "8", "because", {"n": 40, "rate": 0.2, "weights": {"7": 0.9, "8": 0.1}}, 12.5, rollout_id
    )
    record = {**decision.to_dict(), "model_name": "app-adapter"}  # what the audit trail keeps
    message = decision_message(decision, "app-adapter")
    assert type(message) is cls and message.type == type_
    assert message.payload() == record
    same_bytes(message, type_, record)


def test_a_rollout_checkpoint_is_the_dict_it_replaced_and_reads_back():
    policy = CanaryPolicy("7", rng=random.Random(1))
    policy.start("8", now=0.0)
    evals = EvalSet()
    evals.add(Example("e1", "r1", "predict", "label", features=(0.5, -1.0), served_label=1, target=2))
    state = {
        "policy": policy.to_dict(),
        "positions": {"cl.requests:0": 12, "cl.feedback:0": 7},
        "evals": evals.state_dict(),
        "judged": ["8"],
    }
    old = {"model_name": "app-adapter", "state": state}
    new = RolloutState(model_name="app-adapter", state=RolloutCheckpoint(**state))
    same_bytes(new, "rollout_state", old)
    back = RolloutState.from_event(parse_event(LifecycleEvent, new.to_event().to_bytes()))
    assert CanaryPolicy.from_dict(back.state.policy).to_dict() == policy.to_dict()
    assert back.state.positions == state["positions"] and back.state.judged == ["8"]


def test_unset_fields_are_not_written_and_minimal_announcements_read():
    # what tests, benchmarks and older producers announce: just the version and the model
    event = LifecycleEvent(type="version_published", payload={"version": "3", "model_name": "m"})
    message = VersionPublished.from_event(event)
    assert (message.version, message.base_version, message.events_seen) == ("3", None, None)
    assert message.payload() == {"version": "3", "model_name": "m"}
    # a decision record keeps its nulls: rollout_id null is part of the record
    assert Promoted(version="3").payload()["rollout_id"] is None


def test_reading_ignores_unknown_keys_and_reads_a_numeric_version_as_text():
    event = LifecycleEvent(type="version_published", payload={"version": 12, "added_later": True})
    assert VersionPublished.from_event(event).version == "12"


def test_a_missing_or_malformed_field_is_named():
    with pytest.raises(EventError) as info:
        DriftDetected.from_event(LifecycleEvent(type="drift_detected", payload={"actions": ["reset"]}))
    assert info.value.reason == "invalid_event"
    assert info.value.errors == [
        {"field": "payload.events_seen", "message": "field required (a drift_detected event carries it)"}
    ]
    with pytest.raises(EventError) as info:
        VersionPublished.from_event(
            LifecycleEvent(type="version_published", payload={"version": "1", "events_seen": -4})
        )
    (error,) = info.value.errors
    assert error["field"] == "payload.events_seen" and "greater than or equal to 0" in error["message"]
    with pytest.raises(EventError) as info:
        RolloutState.from_event(LifecycleEvent(type="rollout_state", payload={"model_name": "m", "state": {}}))
    assert {e["field"] for e in info.value.errors} == {f"payload.state.{k}" for k in RolloutCheckpoint.model_fields}


def test_the_wrong_type_is_refused_and_says_what_reads_it():
    with pytest.raises(EventError) as info:
        VersionPublished.from_event(LifecycleEvent(type="promoted", payload={"version": "2"}))
    (error,) = info.value.errors
    assert info.value.reason == "wrong_type" and error["field"] == "type" and "Promoted" in error["message"]


def test_a_producer_typo_is_caught_when_the_message_is_built():
    with pytest.raises(ValueError, match="verison"):
        VersionPublished(version="1", verison="1")


def test_read_message_dispatches_on_the_type():
    assert isinstance(read_message(Promoted(version="4").to_event()), Promoted)
    assert read_message(LifecycleEvent(type="audit", payload={"seq": 1})) is None
    assert all(cls.type == name for name, cls in MESSAGES.items())
    assert {"version_published", "drift_detected", "promoted", "rolled_back", "rollout_state"} <= set(MESSAGES)


def test_is_for_keeps_this_models_news_and_news_that_names_no_model():
    assert VersionPublished(version="1", model_name="a").is_for("a")
    assert not VersionPublished(version="1", model_name="b").is_for("a")
    assert VersionPublished(version="1").is_for("a") and DriftDetected(events_seen=3).is_for("a")
    assert issubclass(RolledBack, DecisionRecord)
