"""The service's one typed configuration: a TOML file plus ``CL_*`` environment variables.

Defaults give a working local setup (every service on 127.0.0.1, state under ``.state/``).
Precedence, lowest first: defaults, the TOML file, environment variables.

* The file is ``$CL_CONFIG`` if set, else ``./cl.toml`` if it exists.
* ``CL_<SECTION>_<KEY>`` sets ``[section] key`` (``CL_KAFKA_PORT=9192``); ``CL_<KEY>`` sets a
  top-level key (``CL_STATE_DIR``). ``RAY_ADDRESS`` sets ``ray.address``, as Ray itself reads it.
* ``CL_KAFKA_BOOTSTRAP``, ``CL_MLFLOW_URI`` or ``RAY_ADDRESS`` point at existing services:
  ``cl up`` then starts nothing of that kind and uses them.

Example:
    >>> cfg = load_config(env={"CL_KAFKA_PORT": "9192"}, path=None)
    >>> cfg.kafka.bootstrap_servers
    '127.0.0.1:9192'
    >>> cfg.topics.feedback
    'cl.feedback'
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

__all__ = [
    "AuthConfig",
    "Config",
    "ConfigError",
    "KafkaConfig",
    "LearnerConfig",
    "MLflowConfig",
    "ModelSection",
    "RayConfig",
    "RolloutConfig",
    "ServeConfig",
    "Topics",
    "load_config",
]


class ConfigError(ValueError):
    """A configuration with one or more problems; ``problems`` lists each, naming key and fix."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration ({len(self.problems)} problem(s)):\n{lines}")


def _port_problem(key: str, value: int) -> str | None:
    if not 1 <= value <= 65535:
        env = "CL_" + key.replace(".", "_").upper()
        return f"{key}: port {value} is out of range; use 1-65535 (set {env} or [{key.split('.')[0]}] in cl.toml)"
    return None


@dataclass
class KafkaConfig:
    """The Kafka broker: a local single-node KRaft broker unless ``bootstrap`` names a cluster."""

    bootstrap: str | None = None
    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 9093
    version: str = "3.9.1"
    heap_mb: int = 512
    topic_prefix: str = "cl"
    requests_partitions: int = 2
    feedback_partitions: int = 2
    dlq_partitions: int = 1
    events_partitions: int = 1

    @property
    def managed(self) -> bool:
        """True when ``cl up`` runs the broker itself."""
        return not self.bootstrap

    @property
    def bootstrap_servers(self) -> str:
        return self.bootstrap or f"{self.host}:{self.port}"

    def problems(self) -> list[str]:
        out = [_port_problem("kafka.port", self.port), _port_problem("kafka.controller_port", self.controller_port)]
        if self.managed and self.port == self.controller_port:
            out.append("kafka.controller_port: must differ from kafka.port; pick another free port")
        for name in ("requests", "feedback", "dlq", "events"):
            n = getattr(self, f"{name}_partitions")
            if n < 1:
                out.append(f"kafka.{name}_partitions: {n} is not a partition count; use 1 or more")
        if self.heap_mb < 128:
            out.append(f"kafka.heap_mb: {self.heap_mb} MiB is too small for a broker; use 256 or more")
        if not self.topic_prefix or any(c.isspace() for c in self.topic_prefix):
            out.append(f"kafka.topic_prefix: {self.topic_prefix!r} is not a topic prefix; use letters, digits, '.', '_' or '-'")
        return [p for p in out if p]


@dataclass
class MLflowConfig:
    """The MLflow tracking server and model registry: local unless ``uri`` names one."""

    uri: str | None = None
    host: str = "127.0.0.1"
    port: int = 5000
    model_name: str = ""  # defaults to "<app>-adapter"

    @property
    def managed(self) -> bool:
        return not self.uri

    @property
    def tracking_uri(self) -> str:
        return self.uri or f"http://{self.host}:{self.port}"

    def problems(self) -> list[str]:
        return [p for p in [_port_problem("mlflow.port", self.port)] if p]


@dataclass
class RayConfig:
    """The Ray cluster: a local head node unless ``address`` names one."""

    address: str | None = None
    host: str = "127.0.0.1"
    port: int = 6379
    dashboard_port: int = 8265
    metrics_port: int = 8080  # Prometheus scrapes Ray's metrics agent (ours included) here
    num_cpus: int = 4  # logical CPUs: serving, learner and jobs share the machine's cores
    object_store_mb: int = 512

    @property
    def managed(self) -> bool:
        return not self.address

    def _external_host(self) -> str:
        """The host named by ``address`` (``h:p`` or ``http://h:p``)."""
        rest = self.address.split("://", 1)[-1] if self.address else ""
        return rest.rsplit(":", 1)[0] if rest else self.host

    @property
    def gcs_address(self) -> str:
        """What ``ray.init(address=...)`` takes."""
        if self.address and "://" not in self.address:
            return self.address
        return f"{self._external_host()}:{self.port}"

    @property
    def dashboard_url(self) -> str:
        """What ``ray job submit --address`` takes."""
        if self.address and self.address.startswith("http"):
            return self.address.rstrip("/")
        return f"http://{self._external_host()}:{self.dashboard_port}"

    @property
    def metrics_url(self) -> str:
        """Where the head node's Ray metrics agent serves Prometheus text (ours included)."""
        return f"http://{self._external_host()}:{self.metrics_port}/metrics"

    def problems(self) -> list[str]:
        out = [_port_problem("ray.port", self.port), _port_problem("ray.dashboard_port", self.dashboard_port),
               _port_problem("ray.metrics_port", self.metrics_port)]
        if self.num_cpus < 1:
            out.append(f"ray.num_cpus: {self.num_cpus} is too few; use 1 or more")
        return [p for p in out if p]


@dataclass
class ServeConfig:
    """The HTTP edge (Ray Serve's proxy) and the model replicas behind it."""

    host: str = "127.0.0.1"
    port: int = 8000
    replicas: int = 1
    replica_num_cpus: float = 1.0
    max_batch_size: int = 32
    batch_wait_timeout_s: float = 0.005
    adapter_cache_size: int = 4  # adapter versions a replica holds at once (LRU)
    serve_new_versions: bool = True  # until rollout: each published version serves at once
    max_text_chars: int = 4096
    max_new_tokens: int = 256
    max_body_bytes: int = 1_048_576  # larger request bodies get 413 before they are parsed

    def problems(self) -> list[str]:
        out = [_port_problem("serve.port", self.port)]
        for name in ("replicas", "max_batch_size", "adapter_cache_size", "max_text_chars", "max_new_tokens", "max_body_bytes"):
            if getattr(self, name) < 1:
                out.append(f"serve.{name}: {getattr(self, name)} is too small; use 1 or more")
        if self.batch_wait_timeout_s < 0:
            out.append("serve.batch_wait_timeout_s: must be >= 0 seconds")
        return [p for p in out if p]


@dataclass
class ModelSection:
    """Which frozen base model the service serves and learns on top of.

    The base is built from ``preset`` and initialised from ``seed``, so learners and replicas
    build the same base without shipping its weights; ``base_version`` names it.
    """

    preset: str = "tiny"
    seed: int = 0
    n_features: int = 8
    n_labels: int = 4
    lora_rank: int = 4
    base_weights: str = ""  # a safetensors file of trained base weights (`learners.retrain --train-base`); "" = the seeded base

    @property
    def base_version(self) -> str:
        seeded = f"{self.preset}-f{self.n_features}-l{self.n_labels}-r{self.lora_rank}-seed{self.seed}"
        return f"{seeded}-w{_file_digest(self.base_weights)}" if self.base_weights else seeded

    def problems(self) -> list[str]:
        out = []
        if self.n_labels < 2:
            out.append(f"model.n_labels: {self.n_labels} is too few classes; use 2 or more")
        if self.n_features < 0:
            out.append(f"model.n_features: {self.n_features} is negative; use 0 (text only) or more")
        if self.lora_rank < 1:
            out.append(f"model.lora_rank: {self.lora_rank} leaves nothing to learn; use 1 or more")
        if self.base_weights and not Path(self.base_weights).is_file():
            out.append(f"model.base_weights: {self.base_weights} is not a file; give the path a base training printed, or \"\" for the seeded base")
        return out


def _file_digest(path: str) -> str:
    """The first 12 hex digits of the file's sha256 (cached by path, size and mtime)."""
    stat = Path(path).stat()
    return _digest(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


DRIFT_ACTIONS = ("boost_lr", "branch", "reset")


@dataclass
class LearnerConfig:
    """The online learner: micro-batches, losses, replay, drift handling and snapshots."""

    workers: int = 1  # data-parallel ranks; each reads its share of the feedback partitions
    batch_size: int = 16
    max_batch_size: int = 128  # under a backlog, micro-batches grow up to this (throughput)
    max_wait_s: float = 0.25  # learn from a partial micro-batch after this long
    lr: float = 5e-3
    preference_loss: str = "kto"  # for thumbs / ratings: "kto" or "rwl" (reward-weighted likelihood)
    kto_beta: float = 0.1
    replay: str = "reservoir"  # "reservoir", "class_balanced" or "loss_prioritised"
    replay_capacity: int = 2000
    replay_ratio: float = 1.0  # replayed examples per new example in a micro-batch
    drift_detector: str = "adwin"  # "adwin", "page_hinkley" or "none"
    drift_actions: str = "boost_lr,reset"  # comma-separated subset of boost_lr, branch, reset
    boost_factor: float = 2.0
    boost_events: int = 400
    snapshot_every_events: int = 200
    snapshot_every_s: float = 2.0
    join_window_events: int = 50_000
    join_window_s: float = 600.0
    consumer_group: str = ""  # defaults to "<app>-learner"
    holdout_fraction: float = 0.05  # labelled feedback kept out of training: the rollout's frozen evaluation set
    user_cap_events: int = 200  # at most this many events of one user are learned per user_cap_window_s
    user_cap_window_s: float = 60.0
    quarantine_alpha: float = 1e-6  # quarantine a user whose disagreement with everyone else is this unlikely by chance
    quarantine_min_events: int = 30  # judged events of a user before quarantine may apply

    @property
    def actions(self) -> tuple[str, ...]:
        return tuple(a.strip() for a in self.drift_actions.split(",") if a.strip())

    def problems(self) -> list[str]:
        out = []
        if self.max_batch_size < self.batch_size:
            out.append(f"learner.max_batch_size: {self.max_batch_size} is below batch_size {self.batch_size}; raise it")
        for name in ("workers", "batch_size", "replay_capacity", "snapshot_every_events", "join_window_events"):
            if getattr(self, name) < 1:
                out.append(f"learner.{name}: {getattr(self, name)} is too small; use 1 or more")
        if self.lr <= 0:
            out.append(f"learner.lr: {self.lr} must be positive (e.g. 5e-3)")
        if self.preference_loss not in ("kto", "rwl"):
            out.append(f"learner.preference_loss: {self.preference_loss!r} is unknown; use 'kto' or 'rwl'")
        if self.replay not in ("reservoir", "class_balanced", "loss_prioritised"):
            out.append(f"learner.replay: {self.replay!r} is unknown; use reservoir, class_balanced or loss_prioritised")
        if self.replay_ratio < 0:
            out.append("learner.replay_ratio: must be >= 0 (0 turns replay off)")
        for name in ("user_cap_events", "quarantine_min_events"):
            if getattr(self, name) < 1:
                out.append(f"learner.{name}: {getattr(self, name)} is too small; use 1 or more")
        if self.user_cap_window_s <= 0:
            out.append(f"learner.user_cap_window_s: {self.user_cap_window_s} must be positive seconds, e.g. 60")
        if not 0 < self.quarantine_alpha < 1:
            out.append(f"learner.quarantine_alpha: {self.quarantine_alpha} must be in (0, 1), e.g. 1e-6")
        if not 0 <= self.holdout_fraction < 1:
            out.append(f"learner.holdout_fraction: {self.holdout_fraction} must be in [0, 1), e.g. 0.05")
        if self.drift_detector not in ("adwin", "page_hinkley", "none"):
            out.append(f"learner.drift_detector: {self.drift_detector!r} is unknown; use adwin, page_hinkley or none")
        bad = [a for a in self.actions if a not in DRIFT_ACTIONS]
        if bad:
            out.append(f"learner.drift_actions: {bad} unknown; use a comma-separated subset of {', '.join(DRIFT_ACTIONS)}")
        if self.snapshot_every_s <= 0 or self.max_wait_s < 0:
            out.append("learner.snapshot_every_s must be > 0 and learner.max_wait_s >= 0 (seconds)")
        return out


ROLES = ("predict", "feedback", "admin")


@dataclass
class AuthConfig:
    """Who may call the HTTP API: API keys with roles (see ``docs/security.md``).

    Keys live hashed in ``keys_file``; ``cl keys create|list|revoke`` manage them. Admin
    actions and auth failures are appended to ``audit_file`` and announced on ``cl.events``.
    """

    enabled: bool = True
    keys_file: str = ""  # default <state_dir>/keys.json
    audit_file: str = ""  # default <state_dir>/audit/security.jsonl
    feedback_rate_per_s: float = 100.0  # feedback a key may post per second, sustained (429 above it)
    feedback_burst: int = 200  # feedback a key may post at once before the rate applies

    def problems(self) -> list[str]:
        out = []
        if not self.feedback_rate_per_s > 0:
            out.append(f"auth.feedback_rate_per_s: {self.feedback_rate_per_s} must be positive, e.g. 100")
        if self.feedback_burst < 1:
            out.append(f"auth.feedback_burst: {self.feedback_burst} is too small; use 1 or more")
        return out


@dataclass
class RolloutConfig:
    """Canary rollout of challenger versions: traffic steps, the sequential test and the guards.

    See ``docs/rollout.md`` for what each key does and how the decisions are taken.
    """

    canary_steps: str = "0.1,0.5,1.0"  # comma-separated challenger traffic shares, rising, ending at 1.0
    alpha: float = 0.01  # level of the always-valid (mSPRT) confidence sequence
    mixing_sd: float = 0.1  # sd of the normal mixing distribution over the rate difference
    min_events: int = 30  # rated events per arm before the sequential test may decide
    min_step_events: int = 200  # challenger rated events at a step before it may advance
    noninferiority_margin: float = 0.05  # advance when challenger >= champion - margin, with confidence
    negative_margin: float = 0.15  # roll back when the negative-rating rate exceeds the champion's by this
    negative_min_events: int = 200  # challenger rated events before negative_margin applies
    max_error_rate: float = 0.05  # roll back when the serving error rate exceeds this
    error_min_requests: int = 100  # challenger requests before max_error_rate applies
    forgetting_max_drop: float = 0.02  # largest eval-score drop below the champion a promotion accepts
    memory_users: int = 100_000  # users whose first arm is remembered within a rollout (LRU)

    @property
    def steps(self) -> tuple[float, ...]:
        """``canary_steps`` as numbers; empty if it does not parse (``problems()`` says so)."""
        try:
            return tuple(float(s) for s in self.canary_steps.split(",") if s.strip())
        except ValueError:
            return ()

    def problems(self) -> list[str]:
        out = []
        steps = self.steps
        if not steps:
            out.append(f"rollout.canary_steps: {self.canary_steps!r} is not a list of numbers; use e.g. '0.1,0.5,1.0'")
        elif any(not 0 < s <= 1 for s in steps) or any(a >= b for a, b in zip(steps, steps[1:])) or steps[-1] != 1.0:
            out.append(f"rollout.canary_steps: {self.canary_steps!r} must rise strictly within (0, 1] and end at 1.0; "
                       "use e.g. '0.1,0.5,1.0'")  # fmt: skip
        for name, example in (("alpha", 0.01), ("max_error_rate", 0.05)):
            if not 0 < getattr(self, name) < 1:
                out.append(f"rollout.{name}: {getattr(self, name)} must be in (0, 1), e.g. {example}")
        if not self.mixing_sd > 0:
            out.append(f"rollout.mixing_sd: {self.mixing_sd} must be positive (e.g. 0.1, the size of difference to detect)")
        for name in ("min_events", "min_step_events", "negative_min_events", "error_min_requests", "memory_users"):
            if getattr(self, name) < 1:
                out.append(f"rollout.{name}: {getattr(self, name)} is too small; use 1 or more")
        for name in ("noninferiority_margin", "negative_margin", "forgetting_max_drop"):
            if not 0 <= getattr(self, name) <= 1:
                out.append(f"rollout.{name}: {getattr(self, name)} must be in [0, 1] (a difference of rates or scores)")
        return out


@dataclass(frozen=True)
class Topics:
    """Kafka topic names, derived from the configured prefix."""

    prefix: str

    @property
    def requests(self) -> str:
        return f"{self.prefix}.requests"

    @property
    def feedback(self) -> str:
        return f"{self.prefix}.feedback"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}.feedback.dlq"

    @property
    def events(self) -> str:
        return f"{self.prefix}.events"


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
        for section in (self.kafka, self.mlflow, self.ray, self.serve, self.model, self.learner, self.rollout, self.auth):
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


_SECTIONS: dict[str, type] = {
    "kafka": KafkaConfig,
    "mlflow": MLflowConfig,
    "ray": RayConfig,
    "serve": ServeConfig,
    "model": ModelSection,
    "learner": LearnerConfig,
    "rollout": RolloutConfig,
    "auth": AuthConfig,
}
_ALIASES = {"RAY_ADDRESS": ("ray", "address")}
# CL_* variables read elsewhere, not configuration keys.
_OTHER_ENV = {"CL_CONFIG", "CL_KERNELS", "CL_API_KEY", "CL_FAILPOINTS"}


def _coerce(key: str, raw: Any, typ: Any, problems: list[str], env_name: str | None) -> Any:
    """Convert ``raw`` (a TOML value or an environment string) to ``typ``; record a problem if it can't."""
    where = f"environment variable {env_name}" if env_name else "cl.toml"
    args = typing.get_args(typ)
    optional = typing.get_origin(typ) in (typing.Union, types.UnionType) and type(None) in args
    base = next((a for a in args if a is not type(None)), typ) if optional else typ
    if optional and (raw is None or raw == ""):
        return None
    try:
        if base is bool:
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("1", "true", "yes", "on"):
                return True
            if str(raw).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if base is int:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            return int(raw)
        if base is float:
            return float(raw)
        if base is Path:
            return Path(str(raw))
        if base is str:
            if not isinstance(raw, (str, int, float)):
                raise ValueError
            return str(raw)
    except (TypeError, ValueError):
        pass
    else:
        return raw
    problems.append(f"{key}: expected {getattr(base, '__name__', base)}, got {raw!r} (from {where}); fix the value")
    return None


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _apply(target: dict, cls: type, values: Mapping[str, Any], prefix: str, problems: list[str], env: bool) -> None:
    hints = _hints(cls)
    for key, raw in values.items():
        dotted = f"{prefix}{key}"
        env_name = ("CL_" + dotted.replace(".", "_").upper()) if env else None
        if key not in hints or key in _SECTIONS and not prefix:
            valid = ", ".join(k for k in hints if k not in _SECTIONS or prefix)
            problems.append(f"{dotted}: unknown key; valid keys here are: {valid}")
            continue
        value = _coerce(dotted, raw, hints[key], problems, env_name)
        if value is not None or raw in (None, ""):
            target[key] = value


def _env_values(env: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Group ``CL_*`` variables by section: {"": top-level, "kafka": {...}, ...}."""
    out: dict[str, dict[str, str]] = {"": {}}
    for name, value in env.items():
        if name in _ALIASES:
            section, key = _ALIASES[name]
            out.setdefault(section, {})[key] = value
            continue
        if not name.startswith("CL_") or name in _OTHER_ENV:
            continue
        rest = name[3:].lower()
        section = next((s for s in _SECTIONS if rest.startswith(s + "_")), "")
        key = rest[len(section) + 1 :] if section else rest
        if not section and key not in _hints(Config):
            continue  # CL_* variables of other tools are not ours to judge
        out.setdefault(section, {})[key] = value
    return out


def load_config(path: str | Path | None = "auto", env: Mapping[str, str] | None = None) -> Config:
    """Build the config from defaults, a TOML file and the environment.

    Args:
        path: TOML file; ``"auto"`` means ``$CL_CONFIG`` or ``./cl.toml`` if present; None: no file.
        env: environment mapping (default ``os.environ``).

    Returns:
        A validated ``Config``.

    Raises:
        ConfigError: listing every problem at once, each with its key and fix.
    """
    env = os.environ if env is None else env
    problems: list[str] = []
    file_values: dict[str, Any] = {}
    if path == "auto":
        path = env.get("CL_CONFIG") or ("cl.toml" if Path("cl.toml").exists() else None)
    if path is not None:
        try:
            file_values = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            problems.append(f"config file {path}: not found; create it or unset CL_CONFIG")
        except tomllib.TOMLDecodeError as e:
            problems.append(f"config file {path}: not valid TOML ({e}); fix the syntax")

    return _build(file_values, env, problems)


def load_config_values(values: Mapping[str, Any]) -> Config:
    """A config from a mapping shaped like ``cl.toml`` (no environment); see ``Config.from_dict``."""
    return _build(dict(values), {}, [])


def _build(file_values: Mapping[str, Any], env: Mapping[str, str], problems: list[str]) -> Config:
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {s: {} for s in _SECTIONS}
    file_top = {k: v for k, v in file_values.items() if k not in _SECTIONS}
    _apply(top, Config, file_top, "", problems, env=False)
    for s, cls in _SECTIONS.items():
        raw = file_values.get(s, {})
        if not isinstance(raw, dict):
            problems.append(f"{s}: expected a [{s}] table in cl.toml, got {raw!r}")
            continue
        _apply(sections[s], cls, raw, f"{s}.", problems, env=False)
    env_values = _env_values(env)
    _apply(top, Config, env_values.pop(""), "", problems, env=True)
    for s, values in env_values.items():
        _apply(sections[s], _SECTIONS[s], values, f"{s}.", problems, env=True)

    built = {s: cls(**sections[s]) for s, cls in _SECTIONS.items()}
    if problems:
        # Still validate ranges so the user sees every problem at once.
        try:
            Config(**top, **built)
        except ConfigError as e:
            problems += e.problems
        raise ConfigError(problems)
    return Config(**top, **built)
