"""A real single-node Apache Kafka broker in KRaft mode, run from its Maven Central jars.

The jars are resolved once with Maven (``infra/kafka/pom.xml``) into ``<cache_dir>/kafka-<version>``;
storage under ``<state_dir>/kafka/data`` is formatted once and survives restarts, so a stop and
start loses no message. With ``kafka.bootstrap`` set, nothing is started and that cluster is used.

:func:`java_command`, :func:`broker_properties` and :func:`format_storage` are the pieces of a
broker start that do not depend on this one-node layout; ``infra.local_cluster_check`` runs a
three-broker cluster with them.
"""

from __future__ import annotations

import base64
import logging
import shutil
import subprocess
import uuid
from pathlib import Path

from cl.config import Config
from infra._private.process import port_open, read_pid, require_free_port, start_detached, wait_until
from infra.component import ComponentStatus, LocalService
from infra.errors import StackError

_RESOURCES = Path(__file__).parent / "kafka"
_MAIN = "kafka.Kafka"
_STORAGE_TOOL = "kafka.tools.StorageTool"


def _require_tool(tool: str, fix: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise StackError(f"Kafka: `{tool}` was not found on PATH; the local broker needs it.", fix)
    return path


_JAVA_FIX = "install Java 17 or newer (Debian: apt-get install openjdk-17-jre-headless)"


def java_command(jar_dir: Path, heap_mb: int, *args: str) -> list[str]:
    """The ``java`` command line that runs ``args`` with the Kafka jars in ``jar_dir`` on the class path.

    Raises:
        StackError: ``java`` is not on PATH.
    """
    java = _require_tool("java", _JAVA_FIX)
    return [
        java,
        f"-Xmx{heap_mb}m",
        f"-Xms{min(heap_mb, 256)}m",
        f"-Dlog4j.configuration=file:{_RESOURCES / 'log4j.properties'}",
        "-cp",
        f"{jar_dir.resolve()}/*",
        *args,
    ]


def broker_properties(
    *,
    node_id: int,
    host: str,
    port: int,
    controller_port: int,
    voters: str,
    data_dir: Path,
    replication: int = 1,
    min_isr: int = 1,
) -> dict[str, str]:
    """``server.properties`` of one combined broker + controller node in KRaft mode.

    Args:
        node_id: This node's id (``voters`` names it).
        host, port, controller_port: Where its client and controller listeners bind.
        voters: The controller quorum, ``id@host:port`` joined by commas.
        data_dir: Its log directory.
        replication, min_isr: Replication factor and minimum in-sync replicas of Kafka's own
            topics (consumer offsets, transaction state); 1 and 1 on a single node.
    """
    return {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir.resolve()),
        "offsets.topic.replication.factor": str(replication),
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": str(replication),
        "transaction.state.log.min.isr": str(min_isr),
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
    }


def write_properties(path: Path, props: dict[str, str]) -> None:
    path.write_text("".join(f"{key}={value}\n" for key, value in props.items()))


def format_storage(
    java: list[str], properties_file: Path, data_dir: Path, cluster_id: str | None = None, fix: str = ""
) -> None:
    """Format a node's KRaft storage once (a formatted ``data_dir`` is left as it is).

    Args:
        java: :func:`java_command`'s prefix (no arguments after the class path).
        properties_file: The node's ``server.properties``.
        data_dir: Its log directory.
        cluster_id: The cluster's id; every node of one cluster needs the same. None: a new one.
        fix: What the user should do when formatting fails.

    Raises:
        StackError: the storage tool failed (its output is in the message).
    """
    if (data_dir / "meta.properties").exists():
        return
    cluster_id = cluster_id or new_cluster_id()
    cmd = [
        *java,
        _STORAGE_TOOL,
        "format",
        f"--cluster-id={cluster_id}",
        "-c",
        str(properties_file),
        "--ignore-formatted",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise StackError(f"Kafka: formatting KRaft storage in {data_dir} failed:\n{result.stdout}{result.stderr}", fix)


def new_cluster_id() -> str:
    """A random KRaft cluster id (22 characters of URL-safe base64)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


class KafkaBroker(LocalService):
    """Manages the local broker, or checks the external cluster named by ``kafka.bootstrap``."""

    name = "kafka"
    external_fix = "the cluster in CL_KAFKA_BOOTSTRAP does not answer; check host:port[,host:port] or unset it to run a local broker"

    def __init__(self, config: Config):
        super().__init__(config, managed=config.kafka.managed, address=config.kafka.bootstrap_servers)
        self.kafka = config.kafka
        self.data_dir = self.dir / "data"
        self.properties_file = self.dir / "server.properties"
        self.jar_dir = config.cache_dir / f"kafka-{self.kafka.version}"

    # -- installation -------------------------------------------------------------------------

    def ensure_jars(self) -> Path:
        """Fetch the broker's jars with Maven unless they are cached already."""
        marker = self.jar_dir / ".complete"
        if marker.exists():
            return self.jar_dir
        _require_tool("java", _JAVA_FIX)
        mvn = _require_tool("mvn", "install Maven (Debian: apt-get install maven)")
        self.jar_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(_RESOURCES / "pom.xml"),
            f"-Dkafka.version={self.kafka.version}",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={self.jar_dir.resolve()}",
        ]
        logging.getLogger(__name__).info("fetching Kafka %s jars with Maven", self.kafka.version)
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0 or not any(self.jar_dir.glob("kafka_2.13-*.jar")):
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
            raise StackError(
                f"Kafka: Maven could not fetch org.apache.kafka:kafka_2.13:{self.kafka.version}.\n{tail}",
                "check that Maven Central is reachable (proxy settings in ~/.m2/settings.xml) "
                "and that kafka.version names a published release",
            )
        marker.touch()
        return self.jar_dir

    def _java(self, *args: str) -> list[str]:
        return java_command(self.jar_dir, self.kafka.heap_mb, *args)

    def _write_properties(self) -> None:
        k = self.kafka
        props = broker_properties(
            node_id=1,
            host=k.host,
            port=k.port,
            controller_port=k.controller_port,
            voters=f"1@{k.host}:{k.controller_port}",
            data_dir=self.data_dir,
        )
        write_properties(self.properties_file, props)

    def _format_storage(self) -> None:
        fix = f"remove {self.data_dir} if it holds nothing you need, then run `cl up` again"
        format_storage(self._java(), self.properties_file, self.data_dir, fix=fix)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if not self.managed or read_pid(self.pid_file) is not None:
            return
        require_free_port(self.kafka.host, self.kafka.port, "Kafka", "CL_KAFKA_PORT")
        require_free_port(self.kafka.host, self.kafka.controller_port, "Kafka controller", "CL_KAFKA_CONTROLLER_PORT")
        self.ensure_jars()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._write_properties()
        self._format_storage()
        start_detached(self._java(_MAIN, str(self.properties_file)), self.log_file, self.pid_file)

    def wait_ready(self, timeout: float = 90.0) -> None:
        wait_until(
            self._answers,
            what=f"Kafka at {self.kafka.bootstrap_servers}",
            timeout=timeout,
            pid_file=self.pid_file if self.managed else None,
            log_file=self.log_file if self.managed else None,
            fix=self.wait_fix(),
        )

    def _answers(self) -> bool:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaConfigurationError, KafkaError

        # Anything the client raises means "not answering", except a mistake in our own settings.
        unreachable = (KafkaError, OSError)
        if self.managed and not port_open(self.kafka.host, self.kafka.port):
            return False
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.kafka.bootstrap_servers,
                request_timeout_ms=5000,
                client_id="cl-health",
            )
        except KafkaConfigurationError:
            raise
        except unreachable:
            return False
        try:
            admin.list_topics()
            return True
        except unreachable:
            return False
        finally:
            admin.close()

    def create_topics(self) -> list[str]:
        """Create the service's topics if missing; returns the names created now."""
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError

        t, k = self.config.topics, self.kafka
        wanted = {
            t.requests: k.requests_partitions,
            t.feedback: k.feedback_partitions,
            t.dlq: k.dlq_partitions,
            t.events: k.events_partitions,
        }
        admin = KafkaAdminClient(bootstrap_servers=k.bootstrap_servers, client_id="cl-setup")
        try:
            existing = set(admin.list_topics())
            replicas = 1 if self.managed else min(3, len(admin.describe_cluster().get("brokers") or [1]))
            missing = [NewTopic(name, n, replicas) for name, n in wanted.items() if name not in existing]
            if missing:
                try:
                    admin.create_topics(missing)
                except TopicAlreadyExistsError:
                    pass
            return [m.name for m in missing]
        finally:
            admin.close()

    def status(self) -> ComponentStatus:
        return self.make_status(self.running() and self._answers(), self.kafka.version if self.managed else "")
