"""A registry version without MLflow: how version names order, and what a version's tags say.

MLflow numbers the versions of a registered model 1, 2, 3, ...; ``"base"`` names the frozen base
with no adapter. Serving, the rollout controller and the learners compare versions and read
their tags, and a replica should not load MLflow for that, so this lives apart from
:mod:`cl.registry` (which re-exports it).

Example:
    >>> sorted(["10", "base", "9"], key=version_order)
    ['base', '9', '10']
    >>> is_newer("10", "9"), is_newer("9", "10"), is_newer("1", "base"), is_newer("base", "1")
    (True, False, True, False)
    >>> tags = VersionTags(base_version="seed-0", parent_version="", source="online", events_seen=40)
    >>> tags.to_tags()
    {'base_version': 'seed-0', 'parent_version': '', 'source': 'online', 'events_seen': '40'}
    >>> VersionTags.from_tags(tags.to_tags()) == tags
    True
    >>> VersionTags.from_tags({"events_seen": "forty"}, version="7")
    Traceback (most recent call last):
    ...
    cl.versions.VersionTagError: version 7: tag 'events_seen' is 'forty', not a whole number >= 0; set it to the number of events the version learned, or delete the tag
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BASE_VERSION", "VersionTagError", "VersionTags", "is_newer", "version_order"]

BASE_VERSION = "base"
"""The version name of the frozen base without any adapter (adapter id ``-1``)."""


def version_order(version: str) -> tuple[int, int]:
    """Sort key of a version name: ``"base"`` first, then registered versions by number, then
    any other name (none is registered; it sorts last rather than failing)."""
    if version == BASE_VERSION:
        return (-1, 0)
    return (0, int(version)) if _is_number(version) else (1, 0)


def is_newer(a: str, b: str) -> bool:
    """Whether version ``a`` came after ``b``: every version comes after base, and registered
    versions by number. A name that is neither is newer than base only, never than a number,
    so a stray announcement cannot displace a registered version."""
    if b == BASE_VERSION:
        return a != BASE_VERSION
    return _is_number(a) and _is_number(b) and version_order(a) > version_order(b)


def _is_number(version: str) -> bool:
    return version.isascii() and version.isdigit()


class VersionTagError(ValueError):
    """A version's tag cannot be read as what it should hold; the message names the tag and the fix."""


@dataclass(frozen=True)
class VersionTags:
    """The MLflow tags of one adapter version: lineage, what it learned from, and its checksum.

    Every tag is optional (None: not set), because versions are registered by the online
    learner, by a retrain and by hand. ``to_tags`` writes the set ones as strings;
    ``from_tags`` reads them back and keeps the tags it does not know in ``other``.

    Attributes:
        base_version: The base model the adapter was trained on; a replica refuses other bases.
        parent_version: The version it continued from; ``""`` for a fresh adapter.
        source: Who registered it: ``"online"`` (the learner) or ``"retrain"``.
        reason: Why it was registered: ``"periodic"``, ``"drift"``, ``"final"``, ``"offline retrain"``.
        events_seen: Events (or, for a retrain, examples) it has learned from.
        kafka_offsets: The Kafka positions it learned up to, ``{"<topic>:<partition>": offset}``
            (online only; for people: a learner resumes from the positions in its learner state).
        learner_workers: How many learner ranks wrote it (online only).
        since: Start of a retrain's replayed time range, ISO 8601 UTC; ``""`` for the beginning.
        until: End of that range; ``""`` for "up to the retrain".
        eval_accuracy: A retrain's held-out accuracy (written with 4 decimals).
        adapter_sha256: Checksum of the adapter file, set by :meth:`AdapterRegistry.publish`.
        other: Tags this class does not know, as they are.
    """

    base_version: str | None = None
    parent_version: str | None = None
    source: str | None = None
    reason: str | None = None
    events_seen: int | None = None
    kafka_offsets: dict[str, int] | None = None
    learner_workers: int | None = None
    since: str | None = None
    until: str | None = None
    eval_accuracy: float | None = None
    adapter_sha256: str | None = None
    other: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("events_seen", "learner_workers"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise VersionTagError(f"VersionTags.{name} must be a whole number >= 0 or None, got {value!r}")
        if self.kafka_offsets is not None and not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in self.kafka_offsets.items()
        ):
            raise VersionTagError(
                f"VersionTags.kafka_offsets must map '<topic>:<partition>' to an offset, got {self.kafka_offsets!r}"
            )
        clash = sorted(set(self.other) & set(_FIELDS))
        if clash:
            raise VersionTagError(f"VersionTags.other holds {clash}; set those as fields instead")

    @property
    def line(self) -> str:
        """The learner line the version belongs to: its ``source``, and untagged ones count as ``"online"``."""
        return self.source or "online"

    def to_tags(self) -> dict[str, str]:
        """The tags as MLflow stores them: strings, unset ones left out."""
        out: dict[str, str] = {}
        for name in _FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if name == "kafka_offsets":
                out[name] = json.dumps(value, sort_keys=True)
            elif name == "eval_accuracy":
                out[name] = f"{value:.4f}"
            else:
                out[name] = str(value)
        return {**out, **self.other}

    @classmethod
    def from_tags(cls, tags: Mapping[str, Any] | None, *, version: str | None = None) -> VersionTags:
        """Read a version's tags (``VersionInfo.tags``, an MLflow ``ModelVersion.tags``).

        Args:
            tags: Tag name to value; values are read as strings. None reads as no tags.
            version: The version they belong to, for error messages.

        Raises:
            VersionTagError: A numeric or JSON tag does not parse; the message names it.
        """
        where = f"version {version}: " if version is not None else ""
        values: dict[str, Any] = {}
        other: dict[str, str] = {}
        for name, raw in (tags or {}).items():
            text = str(raw)
            if name not in _FIELDS:
                other[name] = text
            elif name in ("events_seen", "learner_workers"):
                values[name] = _whole_number(text, name, where)
            elif name == "kafka_offsets":
                values[name] = _offsets(text, where)
            elif name == "eval_accuracy":
                try:
                    values[name] = float(text)
                except ValueError:
                    raise VersionTagError(
                        f"{where}tag 'eval_accuracy' is {text!r}, not a number; set it to the held-out accuracy "
                        "(0 to 1), or delete the tag"
                    ) from None
            else:
                values[name] = text
        return cls(**values, other=other)


_FIELDS = tuple(f.name for f in dataclasses.fields(VersionTags) if f.name != "other")

_WHAT = {"events_seen": "the number of events the version learned", "learner_workers": "the learner's worker count"}


def _whole_number(text: str, name: str, where: str) -> int:
    if text.isascii() and text.isdigit():
        return int(text)
    raise VersionTagError(
        f"{where}tag {name!r} is {text!r}, not a whole number >= 0; set it to {_WHAT[name]}, or delete the tag"
    )


def _offsets(text: str, where: str) -> dict[str, int]:
    try:
        offsets = json.loads(text)
    except json.JSONDecodeError:
        offsets = None
    if not isinstance(offsets, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in offsets.values()
    ):
        raise VersionTagError(
            f"{where}tag 'kafka_offsets' is {text[:80]!r}, not a JSON object of offsets like "
            '{"cl.feedback:0": 12}; fix or delete the tag (it is for people: a learner resumes from its learner state)'
        )
    return offsets
