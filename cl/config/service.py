"""The service's whole configuration: the top-level keys and one section per part."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from cl.config.errors import ConfigError
from cl.config.learner import LearnerConfig
from cl.config.model import ModelSection
from cl.config.rollout import RolloutConfig
from cl.config.serving import AuthConfig, ServeConfig
from cl.config.stack import KafkaConfig, MLflowConfig, RayConfig, Topics

__all__ = ["SECTIONS", "Config"]


@dataclass
class Config:
    """Everything the service needs to find its parts; see the module docstring for sources."""

    app: str = "cl"
    state_dir: Path = Path(".state")
    cache_dir: Path = Path(".cache")
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    mlflow: MLflowConfig = field(default_factory=MLflowConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    model: ModelSection = field(default_factory=ModelSection)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)
        self.cache_dir = Path(self.cache_dir)
        problems: list[str] = []
        if not self.app or not self.app.replace("-", "").replace("_", "").isalnum():
            problems.append(f"app: {self.app!r} is not a name; use letters, digits, '-' or '_' (CL_APP)")
        for section in (
            self.kafka,
            self.mlflow,
            self.ray,
            self.serve,
            self.model,
            self.learner,
            self.rollout,
            self.auth,
        ):
            problems += section.problems()
        if problems:
            raise ConfigError(problems)
        if not self.mlflow.model_name:
            self.mlflow.model_name = f"{self.app}-adapter"
        if not self.learner.consumer_group:
            self.learner.consumer_group = f"{self.app}-learner"

    @property
    def topics(self) -> Topics:
        return Topics(self.kafka.topic_prefix)

    @property
    def keys_path(self) -> Path:
        """The API key file (hashes only)."""
        return Path(self.auth.keys_file) if self.auth.keys_file else self.state_dir / "keys.json"

    @property
    def audit_path(self) -> Path:
        """The security audit log (admin actions, key changes, auth failures)."""
        return Path(self.auth.audit_file) if self.auth.audit_file else self.state_dir / "audit" / "security.jsonl"

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Config":
        """Rebuild a config from ``to_dict()`` output (how it travels to Ray workers and jobs)."""
        from cl.config.loading import load_config_values

        return load_config_values(values)

    def to_toml(self) -> str:
        """The config as a loadable ``cl.toml``; unset keys appear as comments (TOML has no null)."""
        import json

        def line(key: str, value: Any) -> str:
            return f"# {key} is unset" if value is None else f"{key} = {json.dumps(value)}"

        values = self.to_dict()
        out = [line(k, v) for k, v in values.items() if not isinstance(v, dict)]
        for section, table in values.items():
            if isinstance(table, dict):
                out += ["", f"[{section}]", *(line(k, v) for k, v in table.items())]
        return "\n".join(out) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """Plain values (paths as strings), in the shape of the TOML file."""

        def plain(v: Any) -> Any:
            if isinstance(v, Path):
                return str(v)
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            return v

        return plain(dataclasses.asdict(self))


# The ``[section]`` tables of cl.toml and the dataclass each one fills.
SECTIONS: dict[str, type] = {
    "kafka": KafkaConfig,
    "mlflow": MLflowConfig,
    "ray": RayConfig,
    "serve": ServeConfig,
    "model": ModelSection,
    "learner": LearnerConfig,
    "rollout": RolloutConfig,
    "auth": AuthConfig,
}
