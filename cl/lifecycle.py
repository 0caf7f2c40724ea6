"""The typed payloads of ``cl.events``: one model per message that crosses a process.

A :class:`~cl.events.LifecycleEvent` carries its details as a JSON object (``payload``).
Producers build one of the models below and send ``message.to_event()``; consumers read
``Model.from_event(event)`` (or :func:`read_message` for whichever type came), which checks the
type, validates the payload and names a missing or malformed field. The payload on the topic is
``message.payload()``: the fields in the order declared here, with the ones a producer left
unset (None) not written, except in decision records, where a null ``rollout_id`` is part of
the record.

Reading is lenient where the producers differ: keys a model does not know are ignored (a newer
producer may add some), and a field only the service's own producers always send is optional
(tests, benchmarks and older producers announce just ``version`` and ``model_name``).

===========================  =====================  ========================================
model                        ``type``               producers -> consumers
===========================  =====================  ========================================
:class:`VersionPublished`    version_published      learner, retrain -> replicas, rollout
                                                    controller, ``cl report``, the demo
:class:`DriftDetected`       drift_detected         learner -> ``cl report``, the demo
:class:`UserQuarantined`     user_quarantined       learner -> operators (reliability tests)
:class:`TrafficChanged`      traffic_changed        rollout controller -> audit readers
:class:`Promoted`            promoted               rollout controller -> replicas, ``cl report``
:class:`RolledBack`          rolled_back            rollout controller -> replicas, ``cl report``
:class:`RolloutDecision`     rollout_decision       rollout controller -> audit readers
:class:`RolloutState`        rollout_state          rollout controller -> itself, after a restart
===========================  =====================  ========================================

``audit`` carries an audit record as it is (:mod:`cl.security.audit`).

Example:
    >>> from cl.events import EventError, LifecycleEvent
    >>> message = VersionPublished(version="7", model_name="app-adapter", base_version="seed-0", events_seen=400)
    >>> event = message.to_event()
    >>> event.type, event.payload
    ('version_published', {'version': '7', 'model_name': 'app-adapter', 'base_version': 'seed-0', 'events_seen': 400})
    >>> VersionPublished.from_event(event) == message
    True
    >>> try:
    ...     VersionPublished.from_event(LifecycleEvent(type="version_published", payload={"model_name": "m"}))
    ... except EventError as err:
    ...     print(err)
    invalid_event: payload.version: field required (a version_published event carries it)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from cl.events import EventError, LifecycleEvent, LifecycleType, _field_errors

if TYPE_CHECKING:
    from cl.rollout.decision import Decision

__all__ = [
    "MESSAGES",
    "DecisionRecord",
    "DriftDetected",
    "LifecycleMessage",
    "Promoted",
    "RolledBack",
    "RolloutCheckpoint",
    "RolloutDecision",
    "RolloutState",
    "TrafficChanged",
    "UserQuarantined",
    "VersionPublished",
    "decision_message",
    "read_message",
]

Name = Annotated[str, Field(min_length=1)]
Count = Annotated[int, Field(strict=True, ge=0)]


class LifecycleMessage(BaseModel):
    """The payload of one ``cl.events`` type. Subclasses set ``type``."""

    # model_name is a field of several messages; pydantic reserves model_* names unless told not to.
    # Numbers read as strings where a string is due: an announcement of version 7 means "7".
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=(), coerce_numbers_to_str=True)

    type: ClassVar[LifecycleType]
    writes_nulls: ClassVar[bool] = False  # whether unset (None) fields go on the topic as null

    def payload(self) -> dict[str, JsonValue]:
        """The JSON object that goes on the topic as the event's ``payload``."""
        values = self.model_dump(mode="python")
        return {k: v for k, v in values.items() if v is not None or self.writes_nulls}

    def to_event(self, **fields: Any) -> LifecycleEvent:
        """The event to produce to ``cl.events``; ``fields`` (``event_id``, ``ts``) go to the event."""
        return LifecycleEvent(type=self.type, payload=self.payload(), **fields)

    @classmethod
    def from_event(cls, event: LifecycleEvent) -> Self:
        """Read ``event``'s payload as this message.

        Raises:
            EventError: ``wrong_type`` if the event is of another type; ``invalid_event`` if the
                payload lacks a field or has one of the wrong kind (each error names it, as
                ``payload.<field>``).
        """
        if event.type != cls.type:
            reader = MESSAGES[event.type].__name__ if event.type in MESSAGES else "its payload dict"
            message = f"expected a {cls.type!r} event, got {event.type!r}; read that one with {reader}"
            raise EventError("wrong_type", [{"field": "type", "message": message}])
        known = {k: v for k, v in (event.payload or {}).items() if k in cls.model_fields}
        try:
            return cls.model_validate(known)
        except ValidationError as exc:
            errors = []
            for e in _field_errors(exc, cls):
                message = e["message"]
                if message == "field required":
                    message += f" (a {cls.type} event carries it)"
                errors.append({"field": f"payload.{e['field']}" if e["field"] else "payload", "message": message})
            raise EventError("invalid_event", errors) from None

    def is_for(self, model_name: str) -> bool:
        """Whether this concerns ``model_name``: it names that model, or none (drift, older producers).

        Several services may share ``cl.events``; each acts only on its own model's news.
        """
        return getattr(self, "model_name", None) in (None, model_name)


# ---- the learners -------------------------------------------------------------------------


class VersionPublished(LifecycleMessage):
    """A new adapter version is registered (and, from the learner, its offsets committed)."""

    type: ClassVar[LifecycleType] = "version_published"

    version: Name = Field(description="The registered version, e.g. '7'.")
    model_name: str | None = Field(None, description="The registered model it belongs to.")
    base_version: str | None = Field(None, description="The base it was trained on; replicas refuse other bases.")
    parent_version: str | None = Field(None, description="The version it continued from; '' for a fresh adapter.")
    events_seen: Count | None = Field(None, description="Events (a retrain: examples) it has learned from.")
    reason: str | None = Field(None, description="'periodic', 'drift', 'final' or 'offline retrain'.")
    role: str | None = Field(None, description="'challenger' when it asks to be canaried (a retrain).")
    source: str | None = Field(None, description="'retrain' for a retrain's version; unset from the learner.")
    metrics: dict[str, float | None] | None = Field(
        None, description="The learner's metrics at the snapshot; NaN goes on the topic as null."
    )


class DriftDetected(LifecycleMessage):
    """The learner's drift detector fired; names no model (every service's report keeps it)."""

    type: ClassVar[LifecycleType] = "drift_detected"

    events_seen: Count = Field(description="Events applied by all ranks when it fired.")
    actions: list[str] | None = Field(None, description="What the learner did: 'reset', 'boost_lr', 'branch', ...")
    lr: float | None = Field(None, description="Learning rate of the step that detected it.")
    detector: str | None = Field(None, description="learner.drift_detector, e.g. 'adwin'.")


class UserQuarantined(LifecycleMessage):
    """A user's feedback is held back from now on (:class:`cl.learning.feedback_guard.FeedbackGuard`)."""

    type: ClassVar[LifecycleType] = "user_quarantined"

    user_id: Name
    events: Count = Field(description="Judged events of the user.")
    disagreements: Count = Field(description="Of those, how many said the served output was wrong.")
    others_rate: float = Field(description="How often everyone else said so.")
    p_value: float = Field(description="Chance of that many disagreements from an honest user.")


# ---- the rollout controller --------------------------------------------------------------


class DecisionRecord(LifecycleMessage):
    """A rollout decision as the audit trail keeps it (``Decision.to_dict()`` and the model).

    One record shape, announced as one of four types: :class:`TrafficChanged`,
    :class:`Promoted`, :class:`RolledBack`, or :class:`RolloutDecision` for the rest.
    """

    writes_nulls: ClassVar[bool] = True  # rollout_id null (outside a rollout) is part of the record

    action: str | None = Field(None, description="The policy's action: 'start', 'promote', 'rollback', ...")
    version: Name = Field(description="The version it concerns.")
    reason: str | None = Field(None, description="One human-readable sentence.")
    evidence: dict[str, JsonValue] | None = Field(None, description="Counts, rates and thresholds behind it.")
    ts: float | None = Field(None, description="When it was taken, unix seconds.")
    rollout_id: str | None = Field(None, description="The rollout it belongs to; null outside one.")
    model_name: str | None = Field(None, description="The registered model whose rollout it is.")


class TrafficChanged(DecisionRecord):
    """A challenger's share of traffic moved (start, advance, retire, or set by hand)."""

    type: ClassVar[LifecycleType] = "traffic_changed"


class Promoted(DecisionRecord):
    """A version became the champion; replicas that serve the champion alias reload it."""

    type: ClassVar[LifecycleType] = "promoted"


class RolledBack(DecisionRecord):
    """A challenger lost its traffic, or the champion went back to an earlier version."""

    type: ClassVar[LifecycleType] = "rolled_back"


class RolloutDecision(DecisionRecord):
    """Any other decision: hold, blocked, needs_evaluation."""

    type: ClassVar[LifecycleType] = "rollout_decision"


class RolloutCheckpoint(BaseModel):
    """The rollout controller's whole state; it rebuilds from the newest one after a restart."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: dict[str, JsonValue] = Field(description="CanaryPolicy.to_dict().")
    positions: dict[str, int] = Field(description="Its consumer positions, '<topic>:<partition>' -> offset.")
    evals: dict[str, JsonValue] = Field(description="The frozen evaluation set (EvalSet.state_dict()).")
    judged: list[str] = Field(description="Versions already judged (the newest 1000).")


class RolloutState(LifecycleMessage):
    """A checkpoint of the rollout controller."""

    type: ClassVar[LifecycleType] = "rollout_state"

    model_name: str | None = None
    state: RolloutCheckpoint


_DECISIONS: dict[str, type[DecisionRecord]] = {
    cls.type: cls for cls in (TrafficChanged, Promoted, RolledBack, RolloutDecision)
}

MESSAGES: dict[str, type[LifecycleMessage]] = {
    cls.type: cls for cls in (VersionPublished, DriftDetected, UserQuarantined, RolloutState, *_DECISIONS.values())
}
"""The model of each ``cl.events`` type that has one."""


def decision_message(decision: Decision, model_name: str) -> DecisionRecord:
    """The announcement of a rollout decision, as the type its action maps to (``Decision.lifecycle_type``).

    Its payload is the audit record: ``{**decision.to_dict(), "model_name": model_name}``.
    """
    cls = _DECISIONS[decision.lifecycle_type or RolloutDecision.type]
    return cls(**decision.to_dict(), model_name=model_name)


def read_message(event: LifecycleEvent) -> LifecycleMessage | None:
    """``event``'s payload as the model of its type, or None for a type without one (``audit``).

    Raises:
        EventError: The payload is not a valid message of its type (see ``from_event``).
    """
    cls = MESSAGES.get(event.type)
    return None if cls is None else cls.from_event(event)
