"""What the service answers, as small frozen dataclasses parsed from its JSON.

Each type has ``from_json(data)``; fields the service adds later are ignored, so an older
client keeps working against a newer service. Lists become tuples; mappings stay dicts
(read them, do not change them).

Example:
    >>> p = Prediction.from_json({"request_id": "3f2c", "label": 2, "probabilities": [0.1, 0.2, 0.7],
    ...                           "model_version": "7", "arm": "champion", "new_field": 1})
    >>> p.label, p.probabilities, p.model_version
    (2, (0.1, 0.2, 0.7), '7')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Decision",
    "FeedbackReceipt",
    "Generation",
    "Health",
    "ModelVersions",
    "Prediction",
    "ReplicaInfo",
    "Rollout",
    "RolloutDecisions",
    "VersionInfo",
]


class ResponseShapeError(ValueError):
    """An answer that lacks a field this client needs (raised as ``ServiceError`` by the clients)."""


def _get(data: Mapping[str, Any], name: str, kind: str) -> Any:
    if not isinstance(data, Mapping):
        raise ResponseShapeError(f"expected a JSON object for {kind}, got {type(data).__name__}")
    try:
        return data[name]
    except KeyError:
        raise ResponseShapeError(f"the answer has no {name!r} for {kind}; is base_url a cl service?") from None


@dataclass(frozen=True)
class Prediction:
    """The answer to ``predict``.

    Attributes:
        request_id: Refer to it in ``feedback``.
        label: The predicted class.
        probabilities: Probability of each class, indexed by label.
        model_version: The version that answered (``"base"`` or a registered version).
        arm: ``"champion"``, ``"challenger"`` or ``"pinned"``.
    """

    request_id: str
    label: int
    probabilities: tuple[float, ...]
    model_version: str
    arm: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Prediction:
        k = "a prediction"
        return cls(
            _get(data, "request_id", k),
            int(_get(data, "label", k)),
            tuple(float(p) for p in _get(data, "probabilities", k)),
            str(_get(data, "model_version", k)),
            _get(data, "arm", k),
        )


@dataclass(frozen=True)
class Generation:
    """The answer to ``generate``: the continuation, without the prompt."""

    request_id: str
    text: str
    model_version: str
    arm: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Generation:
        k = "a generation"
        return cls(
            _get(data, "request_id", k),
            _get(data, "text", k),
            str(_get(data, "model_version", k)),
            _get(data, "arm", k),
        )


@dataclass(frozen=True)
class FeedbackReceipt:
    """Feedback the service accepted: it is on the feedback topic, acknowledged by Kafka.

    Attributes:
        event_id: The event's dedupe key (the one the client sent on every attempt).
        request_id: The request the feedback is about.
    """

    event_id: str
    request_id: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeedbackReceipt:
        return cls(_get(data, "event_id", "a feedback receipt"), _get(data, "request_id", "a feedback receipt"))


@dataclass(frozen=True)
class VersionInfo:
    """One registered adapter version: its aliases (e.g. ``champion``), tags and creation time (ms)."""

    version: str
    aliases: tuple[str, ...]
    tags: dict[str, str]
    created_ms: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VersionInfo:
        k = "a version"
        return cls(
            str(_get(data, "version", k)),
            tuple(data.get("aliases", ())),
            dict(data.get("tags", {})),
            int(data.get("created_ms", 0)),
        )


@dataclass(frozen=True)
class ReplicaInfo:
    """What one model replica serves (``current_version``) and holds, as it last reported."""

    replica_id: str
    current_version: str
    loaded_versions: tuple[str, ...]
    reported_s_ago: float

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReplicaInfo:
        k = "a replica"
        return cls(
            _get(data, "replica_id", k),
            str(_get(data, "current_version", k)),
            tuple(data.get("loaded_versions", ())),
            float(data.get("reported_s_ago", 0.0)),
        )


@dataclass(frozen=True)
class Decision:
    """One rollout decision: ``action`` (promote, rollback, step, hold, ...) on ``version``, and why."""

    action: str
    version: str
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)
    ts: float = 0.0
    rollout_id: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Decision:
        k = "a decision"
        return cls(
            _get(data, "action", k),
            str(_get(data, "version", k)),
            _get(data, "reason", k),
            dict(data.get("evidence") or {}),
            float(data.get("ts") or 0.0),
            data.get("rollout_id"),
        )


@dataclass(frozen=True)
class RolloutDecisions:
    """What ``promote``, ``rollback`` or ``traffic`` did: the decisions taken, oldest first."""

    decisions: tuple[Decision, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RolloutDecisions:
        return cls(tuple(Decision.from_json(d) for d in _get(data, "decisions", "rollout decisions")))


@dataclass(frozen=True)
class Rollout:
    """The rollout's state (``GET /v1/rollout``).

    Attributes:
        enabled: False when each new version serves at once (``serve.serve_new_versions = true``);
            the other fields are then empty and ``reason`` says why.
        active: Whether a canary rollout is running.
        champion: The version serving everyone outside the rollout.
        challengers: The versions being canaried.
        weights: Each challenger's share of the traffic.
        rollout_id: The running rollout's id, or None.
        explain: What each challenger waits for.
        reason: Why rollouts are off, when they are.
        raw: The whole answer (history, evaluation set size, recent decisions, ...).
    """

    enabled: bool
    active: bool = False
    champion: str | None = None
    challengers: tuple[str, ...] = ()
    weights: dict[str, float] = field(default_factory=dict)
    rollout_id: str | None = None
    explain: tuple[Decision, ...] = ()
    reason: str = ""
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Rollout:
        enabled = bool(_get(data, "enabled", "the rollout"))
        return cls(
            enabled=enabled,
            active=bool(data.get("active", False)),
            champion=data.get("champion"),
            challengers=tuple(data.get("challengers") or ()),
            weights={str(k): float(v) for k, v in (data.get("weights") or {}).items()},
            rollout_id=data.get("rollout_id"),
            explain=tuple(Decision.from_json(d) for d in data.get("explain") or ()),
            reason=data.get("reason", ""),
            raw=dict(data),
        )


@dataclass(frozen=True)
class ModelVersions:
    """Registered versions, what the replicas serve, and the rollout (``GET /v1/models`` + ``/v1/rollout``).

    Attributes:
        model_name: The registered model in MLflow.
        base_version: The frozen base every adapter was trained on.
        versions: Registered versions, oldest first.
        aliases: Alias -> version, e.g. ``{"champion": "7"}``.
        serving: The versions the replicas currently serve.
        replicas: Each model replica's report.
        rollout: The rollout's state.
    """

    model_name: str
    base_version: str
    versions: tuple[VersionInfo, ...]
    aliases: dict[str, str]
    serving: tuple[str, ...]
    replicas: tuple[ReplicaInfo, ...]
    rollout: Rollout

    @classmethod
    def from_json(cls, models: Mapping[str, Any], rollout: Mapping[str, Any]) -> ModelVersions:
        k = "the model listing"
        return cls(
            model_name=_get(models, "model_name", k),
            base_version=str(_get(models, "base_version", k)),
            versions=tuple(VersionInfo.from_json(v) for v in _get(models, "versions", k)),
            aliases={str(a): str(v) for a, v in (models.get("aliases") or {}).items()},
            serving=tuple(str(v) for v in models.get("serving") or ()),
            replicas=tuple(ReplicaInfo.from_json(r) for r in models.get("replicas") or ()),
            rollout=Rollout.from_json(rollout),
        )


@dataclass(frozen=True)
class Health:
    """Liveness of the HTTP edge, as the ingress replica that answered sees it."""

    status: str
    app: str
    kafka_connected: bool
    requests_logged: int
    request_log_failures: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Health:
        k = "health"
        return cls(
            _get(data, "status", k),
            _get(data, "app", k),
            bool(data.get("kafka_connected", False)),
            int(data.get("requests_logged", 0)),
            int(data.get("request_log_failures", 0)),
        )
