"""Where the stack's services are: the Kafka broker, the MLflow server, the Ray cluster, topic names."""

from __future__ import annotations

from dataclasses import dataclass

from cl.config.errors import port_problem

__all__ = ["KafkaConfig", "MLflowConfig", "RayConfig", "Topics"]


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
        out = [port_problem("kafka.port", self.port), port_problem("kafka.controller_port", self.controller_port)]
        if self.managed and self.port == self.controller_port:
            out.append("kafka.controller_port: must differ from kafka.port; pick another free port")
        for name in ("requests", "feedback", "dlq", "events"):
            n = getattr(self, f"{name}_partitions")
            if n < 1:
                out.append(f"kafka.{name}_partitions: {n} is not a partition count; use 1 or more")
        if self.heap_mb < 128:
            out.append(f"kafka.heap_mb: {self.heap_mb} MiB is too small for a broker; use 256 or more")
        if not self.topic_prefix or any(c.isspace() for c in self.topic_prefix):
            out.append(
                f"kafka.topic_prefix: {self.topic_prefix!r} is not a topic prefix; use letters, digits, '.', '_' or '-'"
            )
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
        return [p for p in [port_problem("mlflow.port", self.port)] if p]


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
        out = [
            port_problem("ray.port", self.port),
            port_problem("ray.dashboard_port", self.dashboard_port),
            port_problem("ray.metrics_port", self.metrics_port),
        ]
        if self.num_cpus < 1:
            out.append(f"ray.num_cpus: {self.num_cpus} is too few; use 1 or more")
        return [p for p in out if p]


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
