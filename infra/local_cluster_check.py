"""Scale-out rehearsal on one machine: a three-broker Kafka and a two-node Ray cluster, on loopback.

``python -m infra.local_cluster_check`` (about two minutes on a 2-core machine) checks the two
properties ``docs/scaling.md`` builds on, with the real engines:

(a) **Kafka**: three KRaft nodes (broker + controller each) from the same Maven-fetched jars
    as ``infra.kafka_broker``; a topic with replication 3 and ``min.insync.replicas=2``;
    messages produced with ``acks=all`` while a consumer reads; the leader of partition 0 is
    killed with SIGKILL, producing and consuming go on, the broker is restarted and rejoins the
    in-sync replicas. Passes when every acknowledged message was read back.
(b) **Ray**: a head and a second node joined with ``ray start --address=...`` on the same
    machine, each with one CPU and a custom resource (``node_a``, ``node_b``); a task placed
    on the head makes an array that an actor placed on the second node sums, fetching it from
    the head's object store. Passes when each ran on the node its resource names.

Everything lives under one temporary folder (removed afterwards unless ``--keep`` or a failure),
every port is picked free on 127.0.0.1, every wait is bounded, and only the processes started
here are stopped (their process groups; ``ray stop`` would stop every Ray on the machine).
Exits 0 when both parts pass, 1 otherwise. Not part of the test suite: it is too slow for it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cl.config import load_config
from infra._private.process import free_port, log_tail, port_open, read_pid, start_detached, stop_process
from infra.errors import StackError
from infra.kafka_broker import (
    KafkaBroker,
    broker_properties,
    format_storage,
    java_command,
    new_cluster_id,
    write_properties,
)
from infra.ray_head import _SIDE_PORTS

HOST = "127.0.0.1"
TOPIC = "check.replicated"
REPO_ROOT = Path(__file__).resolve().parents[1]


def _say(line: str) -> None:
    print(line, flush=True)


def _wait(ready: Callable[[], bool], what: str, timeout: float, every: float = 0.5) -> float:
    """Poll ``ready`` until true; seconds it took. Raises StackError after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if ready():
            return time.monotonic() - start
        time.sleep(every)
    raise StackError(f"{what}: not within {timeout:.0f} s")


# -- (a) Kafka -----------------------------------------------------------------------------------


@dataclass
class KafkaNode:
    node_id: int
    port: int
    controller_port: int
    dir: Path

    @property
    def pid_file(self) -> Path:
        return self.dir / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.dir / "kafka.log"


@dataclass
class KafkaCluster:
    """Three combined broker + controller nodes on loopback ports, sharing one cluster id."""

    root: Path
    jar_dir: Path
    heap_mb: int = 256
    size: int = 3
    nodes: list[KafkaNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.nodes = [KafkaNode(i, free_port(), free_port(), self.root / f"node-{i}") for i in range(1, self.size + 1)]

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{HOST}:{n.port}" for n in self.nodes)

    def start(self) -> None:
        voters = ",".join(f"{n.node_id}@{HOST}:{n.controller_port}" for n in self.nodes)
        cluster_id = new_cluster_id()
        java = java_command(self.jar_dir, self.heap_mb)
        for n in self.nodes:
            n.dir.mkdir(parents=True, exist_ok=True)
            props = broker_properties(
                node_id=n.node_id,
                host=HOST,
                port=n.port,
                controller_port=n.controller_port,
                voters=voters,
                data_dir=n.dir / "data",
                replication=self.size,
                min_isr=2,
            )
            write_properties(n.dir / "server.properties", props)
            format_storage(java, n.dir / "server.properties", n.dir / "data", cluster_id)
        for n in self.nodes:
            self.start_node(n)

    def start_node(self, n: KafkaNode) -> None:
        start_detached(
            java_command(self.jar_dir, self.heap_mb, "kafka.Kafka", str(n.dir / "server.properties")),
            n.log_file,
            n.pid_file,
        )

    def kill(self, n: KafkaNode) -> None:
        """SIGKILL the node's process group: a crash, with no controlled shutdown."""
        pid = read_pid(n.pid_file)
        if pid is not None:
            os.killpg(pid, signal.SIGKILL)
            _wait(
                lambda: read_pid(n.pid_file) is None and not port_open(HOST, n.port),
                f"Kafka node {n.node_id} to die",
                30,
            )

    def stop(self) -> None:
        for n in self.nodes:
            stop_process(n.pid_file, timeout=20)

    def node(self, node_id: int) -> KafkaNode:
        return next(n for n in self.nodes if n.node_id == node_id)


def _admin(bootstrap: str):  # noqa: ANN202
    from kafka import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000, client_id="cluster-check")


def _brokers(bootstrap: str) -> int:
    from kafka.errors import KafkaError

    try:
        admin = _admin(bootstrap)
    except (KafkaError, OSError):
        return 0
    try:
        return len(admin.describe_cluster().get("brokers") or [])
    except (KafkaError, OSError):
        return 0
    finally:
        admin.close()


def _partitions(bootstrap: str, topic: str) -> dict[int, dict]:
    """partition -> {"leader": id, "isr": [ids]} as the cluster reports it now ({} if it cannot)."""
    from kafka.errors import KafkaError

    try:
        admin = _admin(bootstrap)
        try:
            described = admin.describe_topics([topic])
        finally:
            admin.close()
    except (KafkaError, OSError):
        return {}
    return {
        p["partition_index"]: {"leader": p["leader_id"], "isr": sorted(p["isr_nodes"])}
        for t in described
        for p in t.get("partitions") or []
    }


def _all_in_sync(bootstrap: str, replicas: int) -> bool:
    partitions = _partitions(bootstrap, TOPIC)
    return len(partitions) == 3 and all(len(p["isr"]) == replicas for p in partitions.values())


class _Reader(threading.Thread):
    """Reads every partition of the topic from the beginning until stopped; records the seqs."""

    def __init__(self, bootstrap: str, topic: str, partitions: int):
        super().__init__(name="cluster-check-reader", daemon=True)
        from kafka import KafkaConsumer, TopicPartition

        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=15_000)
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        self.seen: list[int] = []
        self.errors: list[str] = []
        self._halt = threading.Event()

    def run(self) -> None:
        from kafka.errors import KafkaError

        while not self._halt.is_set():
            try:
                for records in self.consumer.poll(timeout_ms=500).values():
                    self.seen += [json.loads(r.value)["seq"] for r in records]
            except (KafkaError, OSError) as e:  # a broker is gone: the client reconnects; note it
                self.errors.append(type(e).__name__)
                time.sleep(0.5)
        self.consumer.close()

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout=15)


def _produce(producer, topic: str, seqs: range, acked: list[int], failed: list[int], latencies: list[float]) -> None:  # noqa: ANN001
    from kafka.errors import KafkaError

    for seq in seqs:
        start = time.monotonic()
        try:
            producer.send(topic, json.dumps({"seq": seq}).encode(), key=str(seq).encode()).get(timeout=60)
        except KafkaError:
            failed.append(seq)
        else:
            acked.append(seq)
            latencies.append(time.monotonic() - start)


def check_kafka(root: Path, jar_dir: Path, messages: int, figures: dict) -> bool:
    """Part (a); fills ``figures``; True when no acknowledged message was lost."""
    from kafka import KafkaProducer
    from kafka.admin import NewTopic

    cluster = KafkaCluster(root / "kafka", jar_dir)
    reader = producer = None
    try:
        t0 = time.monotonic()
        cluster.start()
        ports = ", ".join(f"node {n.node_id}: {n.port} (controller {n.controller_port})" for n in cluster.nodes)
        _say(f"kafka: started 3 KRaft nodes on {HOST}: {ports}")
        _wait(lambda: _brokers(cluster.bootstrap) == 3, "3 Kafka brokers registered", 180)
        figures["kafka_start_s"] = round(time.monotonic() - t0, 1)
        _say(f"kafka: 3 brokers registered after {figures['kafka_start_s']} s")

        admin = _admin(cluster.bootstrap)
        try:
            admin.create_topics([NewTopic(TOPIC, 3, 3, topic_configs={"min.insync.replicas": "2"})])
        finally:
            admin.close()
        _wait(lambda: _all_in_sync(cluster.bootstrap, 3), "every partition with 3 in-sync replicas", 60)
        before = _partitions(cluster.bootstrap, TOPIC)
        _say(
            f"kafka: topic {TOPIC}: 3 partitions, replication 3, min.insync.replicas 2; "
            f"leaders {[before[p]['leader'] for p in sorted(before)]}"
        )

        reader = _Reader(cluster.bootstrap, TOPIC, 3)
        reader.start()
        # Idempotent by default (kafka-python 3): a retried send is written once.
        producer = KafkaProducer(
            bootstrap_servers=cluster.bootstrap, acks="all", request_timeout_ms=10_000, metadata_max_age_ms=5_000
        )
        acked: list[int] = []
        failed: list[int] = []
        lat_before: list[float] = []
        lat_after: list[float] = []
        half = messages // 2
        _produce(producer, TOPIC, range(0, half), acked, failed, lat_before)
        _say(f"kafka: produced {half} messages with acks=all, {len(acked)} acknowledged")

        victim = cluster.node(before[0]["leader"])
        killed_at = time.monotonic()
        cluster.kill(victim)
        _say(f"kafka: killed node {victim.node_id} (leader of partition 0) with SIGKILL")
        _produce(producer, TOPIC, range(half, messages), acked, failed, lat_after)
        figures["kafka_produce_after_kill_s"] = round(time.monotonic() - killed_at, 1)
        figures["kafka_max_ack_latency_after_kill_s"] = round(max(lat_after, default=0.0), 2)
        _wait(lambda: _all_in_sync(cluster.bootstrap, 2), f"node {victim.node_id} out of every ISR", 60)
        during = _partitions(cluster.bootstrap, TOPIC)
        _say(
            f"kafka: produced {messages - half} more with node {victim.node_id} down in "
            f"{figures['kafka_produce_after_kill_s']} s (slowest ack {figures['kafka_max_ack_latency_after_kill_s']} s); "
            f"leaders now {[during[p]['leader'] for p in sorted(during)]}, ISRs {[during[p]['isr'] for p in sorted(during)]}"
        )

        cluster.start_node(victim)
        rejoin_s = _wait(lambda: _all_in_sync(cluster.bootstrap, 3), f"node {victim.node_id} back in every ISR", 120)
        figures["kafka_rejoin_s"] = round(rejoin_s, 1)
        _say(f"kafka: restarted node {victim.node_id}; back in every ISR after {figures['kafka_rejoin_s']} s")

        wanted = set(acked)
        _wait(lambda: wanted <= set(reader.seen), "the concurrent consumer to read every acknowledged message", 60)
        final = _read_all(cluster.bootstrap, TOPIC, 3)
        lost = sorted(wanted - set(final))
        figures.update(
            kafka_sent=messages,
            kafka_acked=len(acked),
            kafka_failed=len(failed),
            kafka_read_back=len(final),
            kafka_lost=len(lost),
            kafka_duplicates=len(final) - len(set(final)),
            kafka_reader_errors=len(reader.errors),
        )
        _say(
            f"kafka: {len(acked)}/{messages} acknowledged, {len(failed)} refused; the concurrent consumer read "
            f"{len(set(reader.seen))} distinct; a fresh consumer read back {len(final)} "
            f"({figures['kafka_duplicates']} duplicates); acknowledged but lost: {len(lost)}"
        )
        return not lost and len(acked) > 0
    except StackError as e:
        _say(f"kafka: FAILED: {e}")
        for n in cluster.nodes:
            _say(f"--- node {n.node_id} log tail ---\n{log_tail(n.log_file, 8)}")
        return False
    finally:
        if reader is not None:
            reader.stop()
        if producer is not None:
            producer.close(timeout=10)
        cluster.stop()


def _read_all(bootstrap: str, topic: str, partitions: int) -> list[int]:
    """Every seq on the topic, read by a fresh consumer up to the end offsets."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    ends = consumer.end_offsets(tps)
    out: list[int] = []
    deadline = time.monotonic() + 60
    try:
        while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=1000).values():
                out += [json.loads(r.value)["seq"] for r in records]
    finally:
        consumer.close()
    return out


# -- (b) Ray -------------------------------------------------------------------------------------


def _ray_argv(*args: str, head: bool) -> list[str]:
    side = [f for f in _SIDE_PORTS if head or f != "ray-client-server-port"]  # the client server is the head's
    return [
        str(Path(sys.executable).with_name("ray")),
        "start",
        "--block",
        f"--node-ip-address={HOST}",
        "--num-cpus=1",
        f"--object-store-memory={100 * 1024 * 1024}",
        "--disable-usage-stats",
        *(f"--{flag}={free_port()}" for flag in side),
        *args,
    ]


def check_ray(root: Path, figures: dict) -> bool:
    """Part (b); fills ``figures``; True when each task ran on the node its resource names."""
    import ray

    env = {
        "RAY_USAGE_STATS_ENABLED": "0",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p),
    }
    gcs_port = free_port()
    head_pid, worker_pid = root / "ray-head.pid", root / "ray-node-b.pid"
    head_log, worker_log = root / "ray-head.log", root / "ray-node-b.log"
    try:
        t0 = time.monotonic()
        start_detached(
            _ray_argv(
                "--head",
                f"--port={gcs_port}",
                "--include-dashboard=false",
                f"--temp-dir={root / 'ray'}",
                '--resources={"node_a": 1}',
                head=True,
            ),
            head_log,
            head_pid,
            env=env,
        )
        _wait(lambda: port_open(HOST, gcs_port), "the Ray head's GCS port", 120)
        start_detached(
            _ray_argv(f"--address={HOST}:{gcs_port}", '--resources={"node_b": 1}', head=False),
            worker_log,
            worker_pid,
            env=env,
        )
        _say(f"ray: started a head (GCS {HOST}:{gcs_port}, resource node_a) and a second node (resource node_b)")
        # Ray rewrites 127.0.0.1 in a bootstrap address to this machine's own address (it logs
        # "Connecting to ... <that address>"): the same host either way.
        ray.init(
            address=f"{HOST}:{gcs_port}", log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}}
        )
        alive = lambda: [n for n in ray.nodes() if n["Alive"]]  # noqa: E731
        _wait(lambda: len(alive()) == 2, "two live Ray nodes", 120)
        figures["ray_start_s"] = round(time.monotonic() - t0, 1)
        by_resource = {tag: n["NodeID"] for n in alive() for tag in ("node_a", "node_b") if tag in n["Resources"]}
        _say(
            f"ray: 2 nodes alive after {figures['ray_start_s']} s: "
            + ", ".join(f"{tag} on {node[:8]}" for tag, node in sorted(by_resource.items()))
        )

        @ray.remote(num_cpus=0, resources={"node_a": 0.01}, num_returns=2)
        def make(size: int):  # noqa: ANN202
            import numpy as np

            return (ray.get_runtime_context().get_node_id(), os.getpid()), np.arange(size, dtype=np.int64)

        @ray.remote(num_cpus=0, resources={"node_b": 0.01})
        class Summer:
            def total(self, values) -> tuple[str, int, int]:  # noqa: ANN001 - the array, fetched from node_a's object store
                return ray.get_runtime_context().get_node_id(), os.getpid(), int(values.sum())

        t1 = time.monotonic()
        where_a, array = make.remote(1_000_000)  # 8 MB: kept in node_a's object store, not inlined
        summer = Summer.remote()
        node_b, pid_b, total = ray.get(summer.total.remote(array), timeout=120)  # the ref goes straight to node_b
        node_a, pid_a = ray.get(where_a, timeout=120)
        figures["ray_roundtrip_s"] = round(time.monotonic() - t1, 1)
        ok = node_a == by_resource.get("node_a") and node_b == by_resource.get("node_b") and node_a != node_b
        ok = ok and total == 1_000_000 * 999_999 // 2
        figures.update(ray_nodes=2, ray_task_node=node_a[:8], ray_actor_node=node_b[:8], ray_placed_right=ok)
        _say(
            f"ray: task (node_a) ran on node {node_a[:8]} pid {pid_a}; actor (node_b) ran on node {node_b[:8]} pid {pid_b} "
            f"and summed the task's 1,000,000-element array: {total} ({'right' if ok else 'WRONG'}) "
            f"in {figures['ray_roundtrip_s']} s"
        )
        return ok
    except (StackError, ray.exceptions.RayError, TimeoutError) as e:
        _say(f"ray: FAILED: {e}")
        for log in (head_log, worker_log):
            _say(f"--- {log.name} tail ---\n{log_tail(log, 8)}")
        return False
    finally:
        if ray.is_initialized():
            ray.shutdown()
        stop_process(worker_pid, timeout=20)
        stop_process(head_pid, timeout=20)
        stragglers = _processes_under(root)
        for pid in stragglers:  # ours by construction: their command lines name our temp folder
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        figures["ray_stragglers_killed"] = len(stragglers)


def _processes_under(root: Path) -> list[int]:
    """Pids whose command line names ``root`` (Ray processes left behind by a stopped node)."""
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if str(root) in proc.joinpath("cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    out.append(int(proc.name))
            except OSError:
                continue
    return out


# -- entry ---------------------------------------------------------------------------------------


def _part(name: str, run: Callable[[], bool]) -> bool:
    """Run one part; an unexpected error fails it (with its traceback) instead of ending the check."""
    try:
        return run()
    except Exception:  # noqa: BLE001 - report and go on to the next part; each part cleans up after itself
        import traceback

        _say(f"{name}: FAILED with an unexpected error:\n{traceback.format_exc()}")
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local_cluster_check", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=600, help="messages to produce, half before the broker dies")
    parser.add_argument("--only", choices=("kafka", "ray"), help="run one part")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, data)")
    args = parser.parse_args(argv)
    os.environ.pop("RAY_ADDRESS", None)  # ours is started here; never join another cluster
    # Short: Ray's socket paths under it must stay below the OS's 107-character limit.
    root = Path(tempfile.mkdtemp(prefix="clcc-"))
    _say(f"cluster check: working under {root}")
    figures: dict = {}
    results: dict[str, bool] = {}
    t0 = time.monotonic()
    try:
        if args.only in (None, "kafka"):
            results["kafka"] = _part(
                "kafka", lambda: check_kafka(root, KafkaBroker(load_config()).ensure_jars(), args.messages, figures)
            )
        if args.only in (None, "ray"):
            results["ray"] = _part("ray", lambda: check_ray(root, figures))
    finally:
        figures["total_s"] = round(time.monotonic() - t0, 1)
        passed = bool(results) and all(results.values())
        _say(
            "cluster check: "
            + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in results.items())
            + f" in {figures['total_s']} s"
        )
        _say("figures: " + json.dumps(figures, sort_keys=True))
        if passed and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            _say(f"cluster check: logs and data kept under {root}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
