"""Per-arm counters and per-challenger state of a rollout (internal)."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

ACTIVE, ROLLED_BACK, RETIRED, PROMOTED = "active", "rolled_back", "retired", "promoted"


@dataclass
class ArmStats:
    """What one arm was observed to do in the current rollout."""

    rated: int = 0  # rated events (delayed user ratings, label checks)
    good: int = 0  # of them, good outcomes (1 = good)
    negative: int = 0  # of them, explicitly negative (thumbs down, 1-2 stars, a wrong label)
    requests: int = 0  # served requests
    errors: int = 0  # of them, failed

    @property
    def good_rate(self) -> float:
        return self.good / self.rated if self.rated else 0.0

    @property
    def negative_rate(self) -> float:
        return self.negative / self.rated if self.rated else 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def summary(self) -> dict[str, Any]:
        """Counts and rates, for a decision's evidence."""
        return {
            **asdict(self),
            "good_rate": self.good_rate,
            "negative_rate": self.negative_rate,
            "error_rate": self.error_rate,
        }


@dataclass
class Challenger:
    """One challenger's progress through the canary steps."""

    version: str
    slot: int  # its position among the rollout's challengers (its assignment slot)
    step: int = 0  # index into the canary steps
    weight: float = 0.0  # its traffic share now
    status: str = ACTIVE  # active, rolled_back, retired or promoted
    stats: ArmStats = field(default_factory=ArmStats)
    step_rated: int = 0  # rated events since it reached its current step
    p_value: float = 1.0  # always-valid p-value: running minimum over looks
    notice: str = ""  # the last blocked / needs_evaluation notice given, so it is given once
    extra: dict[str, Any] = field(default_factory=dict)  # the policy's own per-challenger state

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Challenger":
        values = copy.deepcopy(dict(values))  # the restored policy must not write into the caller's state
        values["stats"] = ArmStats(**values["stats"])
        return cls(**values)


def check_version(name: str, version: Any) -> None:
    """Raise naming ``name`` unless ``version`` is a non-empty string (an MLflow version)."""
    if not isinstance(version, str) or not version:
        raise ValueError(f"{name}: {version!r} is not a version; use the MLflow version string, e.g. '7'")
