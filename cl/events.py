"""Event schemas for the Kafka topics, and the parser every consumer uses.

Every event on a topic is one JSON object carrying ``schema_version`` (currently
1), ``event_id`` (a dedupe key; a fresh uuid4 hex by default) and ``ts`` (unix
seconds; now by default). Unknown fields are rejected rather than ignored, so a
typo such as ``"ratng"`` is caught at the edge instead of silently dropping the
rating.

========================  ====================  ==========================================
model                     topic                 what it says
========================  ====================  ==========================================
:class:`RequestEvent`     ``cl.requests``       a served request: input, output, version, arm
:class:`FeedbackEvent`    ``cl.feedback``       a user's rating, thumbs, label or correction
:class:`DeadLetter`       ``cl.feedback.dlq``   a payload that could not be used, and why
:class:`LifecycleEvent`   ``cl.events``         versions published, drift, promotions, ...
========================  ====================  ==========================================

A lifecycle event's ``payload`` is a JSON object; :mod:`cl.lifecycle` has one typed model per
``type`` that crosses processes (``VersionPublished``, ``Promoted``, ...), which producers and
consumers use instead of building and reading the dict by hand.

Example:
    >>> from cl.events import EventError, FeedbackEvent, parse_event
    >>> fb = parse_event(FeedbackEvent, b'{"request_id": "r-1", "thumbs": "up"}')
    >>> fb.signal, fb.desirable, fb.schema_version
    ('thumbs', True, 1)
    >>> try:
    ...     parse_event(FeedbackEvent, '{"request_id": "r-1", "ratng": 5}')
    ... except EventError as err:
    ...     for e in err.errors:
    ...         print(f"{e['field']}: {e['message']}")  # doctest: +ELLIPSIS
    ratng: unknown field (did you mean 'rating'?); allowed fields: schema_version, event_id, ts, request_id, ...

Regenerate ``docs/feedback.schema.json`` with ``python -m cl.events > docs/feedback.schema.json``.
"""

from __future__ import annotations

import difflib
import json
import sys
import time
import typing
import uuid
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

__all__ = [
    "EVENT_MODELS",
    "LIFECYCLE_TYPES",
    "SCHEMA_VERSION",
    "DeadLetter",
    "Event",
    "EventError",
    "FeedbackEvent",
    "FieldError",
    "LifecycleEvent",
    "RequestEvent",
    "RequestInput",
    "RequestOutput",
    "feedback_json_schema",
    "parse_event",
]

SCHEMA_VERSION = 1

NonEmptyStr = Annotated[str, Field(min_length=1)]
FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Probability = Annotated[float, Field(strict=True, ge=0.0, le=1.0, allow_inf_nan=False)]
NonNegativeInt = Annotated[int, Field(strict=True, ge=0)]


class Event(BaseModel):
    """Fields every event carries. Subclasses set ``topic``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: ClassVar[str] = ""

    schema_version: Annotated[int, Field(strict=True)] = Field(
        SCHEMA_VERSION,
        description=f"Version of the event schema; this service reads version {SCHEMA_VERSION}.",
        json_schema_extra={"const": SCHEMA_VERSION},
    )
    event_id: str = Field(
        default_factory=lambda: uuid.uuid4().hex,
        min_length=1,
        max_length=128,
        description="Unique id of this event, the dedupe key; defaults to a fresh uuid4 hex.",
    )
    ts: float = Field(
        default_factory=time.time,
        ge=0.0,
        strict=True,
        allow_inf_nan=False,
        description="When the event happened, unix seconds; defaults to now.",
    )

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, version: int) -> int:
        if version != SCHEMA_VERSION:
            raise PydanticCustomError(
                "schema_version",
                "unsupported schema_version {version}; this service reads version {expected}",
                {"version": version, "expected": SCHEMA_VERSION},
            )
        return version

    def to_bytes(self) -> bytes:
        """The event as UTF-8 JSON, ready to produce to ``self.topic``."""
        return self.model_dump_json().encode("utf-8")


# ---- cl.requests --------------------------------------------------------------------


class RequestInput(BaseModel):
    """What the client sent: exactly one of ``text`` or ``features``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str | None = Field(None, description="Text input (byte-level tokens).")
    features: Annotated[list[FiniteFloat], Field(min_length=1)] | None = Field(
        None, description="Numeric feature vector; each feature becomes a token."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> RequestInput:
        if (self.text is None) == (self.features is None):
            raise PydanticCustomError(
                "one_input",
                "set exactly one of 'text' or 'features'; got {got}",
                {"got": "both" if self.text is not None else "neither"},
            )
        return self


class RequestOutput(BaseModel):
    """What the model answered: a ``label`` (with optional ``probabilities``) or generated ``text``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: NonNegativeInt | None = Field(None, description="Predicted class (kind 'predict').")
    probabilities: Annotated[list[Probability], Field(min_length=1)] | None = Field(
        None, description="Per-class probabilities, indexed by label (kind 'predict', optional)."
    )
    text: str | None = Field(None, description="Generated text (kind 'generate').")

    @model_validator(mode="after")
    def _consistent(self) -> RequestOutput:
        if self.text is not None and (self.label is not None or self.probabilities is not None):
            raise PydanticCustomError(
                "output_shape", "an output has either 'text' or 'label'/'probabilities', not both"
            )
        if self.text is None and self.label is None:
            raise PydanticCustomError("output_shape", "an output needs 'label' (predict) or 'text' (generate)")
        if self.probabilities is not None and self.label is not None and self.label >= len(self.probabilities):
            raise PydanticCustomError(
                "output_shape",
                "label {label} is out of range for {n} probabilities",
                {"label": self.label, "n": len(self.probabilities)},
            )
        return self


class RequestEvent(Event):
    """A request the service answered, logged to ``cl.requests`` so feedback can be joined to it."""

    topic: ClassVar[str] = "cl.requests"

    request_id: NonEmptyStr = Field(description="Id returned to the client; feedback refers to it.")
    kind: Literal["predict", "generate"] = Field(description="'predict' (classify) or 'generate' (lm).")
    input: RequestInput
    output: RequestOutput
    model_version: NonEmptyStr = Field(description="Model version that answered.")
    arm: NonEmptyStr = Field(description="Traffic arm that answered, e.g. 'champion' or 'challenger'.")
    user_id: str | None = Field(None, description="Who asked, if known; arms are sticky per user.")

    @model_validator(mode="after")
    def _output_matches_kind(self) -> RequestEvent:
        if self.kind == "predict" and self.output.label is None:
            raise PydanticCustomError("kind_mismatch", "kind 'predict' needs output.label", {"field": "output.label"})
        if self.kind == "generate" and self.output.text is None:
            raise PydanticCustomError("kind_mismatch", "kind 'generate' needs output.text", {"field": "output.text"})
        return self


# ---- cl.feedback --------------------------------------------------------------------

FEEDBACK_SIGNALS = ("rating", "thumbs", "label", "correction")


class FeedbackEvent(Event):
    """A user's feedback on one served request: exactly one of rating, thumbs, label or correction."""

    model_config = ConfigDict(
        json_schema_extra={
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            # "exactly one of the four is present and not null", as the validator enforces
            "oneOf": [
                {"required": [name], "properties": {name: {"not": {"type": "null"}}}} for name in FEEDBACK_SIGNALS
            ],
        }
    )

    topic: ClassVar[str] = "cl.feedback"

    request_id: NonEmptyStr = Field(description="The request_id the service returned with the output.")
    rating: Annotated[int, Field(strict=True, ge=1, le=5)] | None = Field(
        None, description="Star rating of the output, an integer from 1 (bad) to 5 (good)."
    )
    thumbs: Literal["up", "down"] | None = Field(None, description="Thumbs up or down on the output.")
    label: NonNegativeInt | None = Field(None, description="The correct class for the input (classification).")
    correction: Annotated[str, Field(min_length=1)] | None = Field(
        None, description="The output the user wanted instead (generation)."
    )
    user_id: str | None = Field(None, description="Who gave the feedback, if known.")

    @field_validator("rating", "label", mode="before")
    @classmethod
    def _integral_float(cls, value: Any) -> Any:
        # JSON Schema counts 5.0 as an integer, so accept it too; "5" and true stay errors.
        return int(value) if isinstance(value, float) and value.is_integer() else value

    @model_validator(mode="after")
    def _exactly_one_signal(self) -> FeedbackEvent:
        given = [name for name in FEEDBACK_SIGNALS if getattr(self, name) is not None]
        if len(given) != 1:
            raise PydanticCustomError(
                "feedback_signal",
                "set exactly one of 'rating', 'thumbs', 'label', 'correction'; got {got}",
                {
                    "got": "none" if not given else " and ".join(map(repr, given)),
                    "field": ", ".join(given or FEEDBACK_SIGNALS),
                },
            )
        return self

    @property
    def signal(self) -> Literal["rating", "thumbs", "label", "correction"]:
        """Which of the four feedback fields is set."""
        return next(name for name in FEEDBACK_SIGNALS if getattr(self, name) is not None)  # type: ignore[return-value]

    @property
    def desirable(self) -> bool | None:
        """Whether the user liked the output: ``True`` for thumbs up or 4-5 stars,
        ``False`` for thumbs down or 1-2 stars, ``None`` for 3 stars and for labels
        and corrections (those are supervised targets, not preferences)."""
        if self.thumbs is not None:
            return self.thumbs == "up"
        if self.rating is not None:
            return True if self.rating >= 4 else False if self.rating <= 2 else None
        return None


# ---- cl.feedback.dlq ----------------------------------------------------------------


class FieldError(BaseModel):
    """One problem with a payload: the field's dotted path (empty for the whole payload) and what is wrong."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str
    message: str


class EventError(ValueError):
    """A payload that is not a valid event.

    Attributes:
        reason: ``"not_utf8"``, ``"invalid_json"``, ``"not_an_object"`` or ``"invalid_event"``.
        errors: One ``{"field": ..., "message": ...}`` dict per problem, ready for a
            :class:`DeadLetter`; ``field`` is a dotted path such as
            ``"input.features[2]"``, or empty when the problem is the whole payload.
    """

    def __init__(self, reason: str, errors: list[dict[str, str]]) -> None:
        self.reason = reason
        self.errors = errors
        details = "; ".join(f"{e['field']}: {e['message']}" if e["field"] else e["message"] for e in errors)
        super().__init__(f"{reason}: {details}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason, self.errors))


class DeadLetter(Event):
    """A payload from a source topic that could not be used, with the reason, for ``cl.feedback.dlq``."""

    topic: ClassVar[str] = "cl.feedback.dlq"

    raw: str = Field(description="The original payload as text (undecodable bytes as backslash escapes).")
    reason: NonEmptyStr = Field(
        description="Short code: not_utf8, invalid_json, not_an_object, invalid_event, or e.g. "
        "unjoined for feedback whose request never arrived."
    )
    errors: list[FieldError] = Field(default_factory=list, description="Problems, one per field.")
    source_topic: str | None = Field(None, description="Topic the payload was read from.")
    source_partition: NonNegativeInt | None = Field(None, description="Partition it was read from.")
    source_offset: NonNegativeInt | None = Field(None, description="Offset it was read at.")

    @classmethod
    def from_error(
        cls,
        raw: bytes | str,
        error: EventError,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> DeadLetter:
        """The dead letter for a payload that ``parse_event`` rejected.

        Args:
            raw: The payload as read from Kafka.
            error: What ``parse_event`` raised.
            topic: Source topic.
            partition: Source partition.
            offset: Source offset.

        Returns:
            A ``DeadLetter`` with a fresh ``event_id`` and ``ts``.
        """
        text = raw if isinstance(raw, str) else bytes(raw).decode("utf-8", errors="backslashreplace")
        return cls(
            raw=text,
            reason=error.reason,
            errors=[FieldError(**e) for e in error.errors],
            source_topic=topic,
            source_partition=partition,
            source_offset=offset,
        )


# ---- cl.events ----------------------------------------------------------------------

LifecycleType = Literal[
    "version_published",
    "drift_detected",
    "detector_reset",
    "learning_rate_changed",
    "challenger_branched",
    "traffic_changed",
    "promoted",
    "rolled_back",
    "rollout_decision",
    "rollout_state",
    "retrain_started",
    "retrain_finished",
    "audit",
    "user_quarantined",
]
LIFECYCLE_TYPES: tuple[str, ...] = typing.get_args(LifecycleType)


class LifecycleEvent(Event):
    """Something that happened to a model or the rollout, announced on ``cl.events`` and kept in the audit log.

    Build and read ``payload`` through its type's model in :mod:`cl.lifecycle`.
    """

    topic: ClassVar[str] = "cl.events"

    type: LifecycleType = Field(description="What happened.")
    payload: dict[str, JsonValue] = Field(
        default_factory=dict, description="Details, e.g. {'version': '7', 'reason': '...'}; any JSON object."
    )


EVENT_MODELS: dict[str, type[Event]] = {
    model.topic: model for model in (RequestEvent, FeedbackEvent, DeadLetter, LifecycleEvent)
}


# ---- parsing ------------------------------------------------------------------------


def parse_event(model_cls: type[Event], raw: bytes | str) -> Event:
    """Parse one Kafka message value into ``model_cls``.

    Args:
        model_cls: The event model expected on the topic, e.g. ``FeedbackEvent``.
        raw: The message value: UTF-8 JSON bytes, or text.

    Returns:
        The validated event.

    Raises:
        EventError: If the payload is not UTF-8, not JSON, not an object, or not a
            valid ``model_cls``; ``errors`` lists every problem with its field.
        TypeError: If ``raw`` is neither bytes nor str.
    """
    if isinstance(raw, (bytes, bytearray, memoryview)):
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EventError("not_utf8", [{"field": "", "message": f"payload is not UTF-8 text: {exc}"}]) from None
    elif isinstance(raw, str):
        text = raw
    else:
        raise TypeError(f"raw must be bytes or str (a Kafka message value), got {type(raw).__name__}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        message = f"payload is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        raise EventError("invalid_json", [{"field": "", "message": message}]) from None
    if not isinstance(data, dict):
        message = f"payload must be a JSON object, got {type(data).__name__}"
        raise EventError("not_an_object", [{"field": "", "message": message}])
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise EventError("invalid_event", _field_errors(exc, model_cls)) from None


def feedback_json_schema() -> str:
    """The JSON Schema of :class:`FeedbackEvent`, as committed in ``docs/feedback.schema.json``."""
    return json.dumps(FeedbackEvent.model_json_schema(), indent=2) + "\n"


def _field_errors(exc: ValidationError, model_cls: type[BaseModel]) -> list[dict[str, str]]:
    errors = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        ctx = err.get("ctx") or {}
        if err["type"] == "extra_forbidden":
            allowed = _fields_at(model_cls, loc[:-1])
            hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            message = "unknown field"
            if hint:
                message += f" (did you mean {hint[0]!r}?)"
            if allowed:
                message += f"; allowed fields: {', '.join(allowed)}"
        elif err["type"] == "missing":
            message = "field required"
        elif "field" in ctx:  # our model-level checks name the field(s) they are about
            message = err["msg"]
            loc = loc + (ctx["field"],)
        else:
            message = err["msg"]
            if err["type"] not in ("feedback_signal", "one_input", "output_shape", "schema_version"):
                shown = repr(err["input"])
                message += f", got {shown if len(shown) <= 80 else shown[:77] + '...'}"
        errors.append({"field": _path(loc), "message": message})
    return errors


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _fields_at(model_cls: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the (nested) model at ``loc``, or [] if it cannot be told."""
    cls: Any = model_cls
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            return []
        candidates = [field.annotation, *typing.get_args(field.annotation)]
        cls = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if cls is None:
            return []
    return list(getattr(cls, "model_fields", {}))


if __name__ == "__main__":
    sys.stdout.write(feedback_json_schema())
