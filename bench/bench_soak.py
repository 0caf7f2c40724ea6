"""Bounded soak on the running local stack: steady predict + feedback load, a learner, memory sampled.

Client threads call ``/v1/predict`` at a fixed total rate over loopback and post label feedback
on a share of the answers (default: 20 predicts/s, each followed by its feedback), with the
documented client retry (:class:`RetryingClient`). An online learner consumes the feedback in
its own process. Every ``--sample-every`` seconds the resident memory (RSS, with children) of
every process involved is read: the Ingress and ModelReplica actors, Serve's proxy and
controller, the learner, the Kafka broker's JVM and the MLflow server.

Once the learner is up, and ``--warmup`` seconds more, the steady phase is judged: predict and feedback latency
percentiles, requests sent and failed (before and after retry), each process's RSS at its
start and end, and the least-squares RSS slope over its second half (a leak shows as a slope;
start-up growth and caches filling up fall in the warm-up and first half). Once the load
stops, the learner drains the stream and exits; its ``events_seen`` is compared with the
feedback the service accepted.

``tests/faults/test_soak.py`` runs the same code for about a minute and asserts on it; the
fault tests use :class:`RetryingClient` and :class:`SteadyLoad`.

Usage: ``python -m bench.bench_soak [--seconds 180] [--warmup 20] [--rate 20]`` against a
running stack (``cl up``).
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx
import numpy as np
import psutil

from bench.bench_online import fresh_config
from cl.client import Client, ServiceError
from cl.config import Config, load_config
from cl.testing.simulated_users import SimulatedUsers

__all__ = [
    "Call",
    "LearnerProcess",
    "RetryingClient",
    "RssSampler",
    "SoakReport",
    "SteadyLoad",
    "alive_actors",
    "run_soak",
    "summarize",
]

MAX_RETRIES = 5
FIRST_BACKOFF_S = 0.2
MB = 1024 * 1024


# -- the documented client ---------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One request as the client saw it, retries included.

    Attributes:
        kind: ``"predict"`` or ``"feedback"``.
        started: ``time.monotonic()`` when the first attempt was sent.
        seconds: Until the final answer, backoff included.
        status: The final HTTP status; None when the last attempt got no answer.
        raw_failures: Attempts that got a 5xx or a connection error (each one retried but the last).
        body: The final answer's JSON (``{}`` when there was none).
    """

    kind: str
    started: float
    seconds: float
    status: int | None
    raw_failures: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class _CountingTransport(httpx.BaseTransport):
    """Counts the attempts that got a 5xx or no answer: what the client's retries hid."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.failures = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = self.inner.handle_request(request)
        except httpx.TransportError:
            self.failures += 1
            raise
        if response.status_code >= 500:
            self.failures += 1
        return response

    def close(self) -> None:
        self.inner.close()


class RetryingClient:
    """The SDK (:class:`cl.client.Client`) retrying as the service documents, each call timed.

    On 503, a connection error, 502 or 504 it resends the same request up to ``MAX_RETRIES``
    times, waiting 0.2 s, 0.4 s, ... or the server's ``Retry-After``; a counting transport
    records the attempts the retries hid. One per thread: the count is per client.

    Args:
        url: The service's base URL.
        timeout_s: Per attempt.
    """

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self._transport = _CountingTransport()
        self.client = Client(url, api_key="", timeout=timeout_s, retries=MAX_RETRIES, backoff_s=FIRST_BACKOFF_S,
                             transport=self._transport)  # fmt: skip

    def predict(self, features: list[float]) -> Call:
        """``POST /v1/predict``; never raises for HTTP or transport errors."""
        return self._call("predict", 200, lambda: self.client.predict(features=features))

    def feedback(self, request_id: str, label: int, event_id: str) -> Call:
        """``POST /v1/feedback`` with a corrected label; never raises for HTTP or transport errors."""
        return self._call("feedback", 202, lambda: self.client.feedback(request_id, label=label, event_id=event_id))

    def _call(self, kind: str, ok_status: int, send: Callable[[], Any]) -> Call:
        started, before = time.monotonic(), self._transport.failures
        try:
            status, body = ok_status, dataclasses.asdict(send())
        except ServiceError as e:  # Unreachable too: its status is None
            status, body = e.status, {"detail": e.detail, "text": str(e)}
        failures = self._transport.failures - before
        return Call(kind, started, time.monotonic() - started, status, failures, body)

    def close(self) -> None:
        self.client.close()


# -- steady load --------------------------------------------------------------------------------


class SteadyLoad:
    """Client threads that predict at a fixed total rate and post label feedback on a share of
    the answers (the simulated users' true label, with a fixed ``event_id`` so a retried post
    is deduplicated by the learner).

    A thread that falls behind its schedule does not burst to catch up: the rate is an upper
    bound, and :func:`summarize` reports the rate reached.

    Args:
        url: The service's base URL.
        config: The service config (``model.n_features`` and ``n_labels`` shape the inputs).
        rate: Predicts per second, all threads together.
        feedback_share: Fraction of answered predicts that get feedback.
        threads: Client threads.
        seed: Seeds the simulated users.
    """

    def __init__(
        self, url: str, config: Config, *, rate: float, feedback_share: float = 1.0, threads: int = 4, seed: int = 0
    ) -> None:
        self.url = url
        self.config = config
        self.rate = rate
        self.feedback_share = feedback_share
        self.threads = threads
        self.seed = seed
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def start(self) -> None:
        self._workers = [
            threading.Thread(target=self._run, args=(i,), name=f"soak-client-{i}", daemon=True)
            for i in range(self.threads)
        ]
        for worker in self._workers:
            worker.start()

    def stop(self, timeout_s: float = 60.0) -> list[Call]:
        """Stop sending, wait for requests in flight; returns every call made."""
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout_s)
        with self._lock:
            return list(self.calls)

    def _run(self, index: int) -> None:
        users = SimulatedUsers(self.config.model.n_features, self.config.model.n_labels, seed=self.seed * 1000 + index)
        rng = np.random.default_rng(self.seed * 1000 + index)
        client = RetryingClient(self.url)
        interval = self.threads / self.rate
        next_at = time.monotonic() + rng.uniform(0, interval)  # spread the threads' phases
        try:
            while not self._stop.wait(max(0.0, next_at - time.monotonic())):
                next_at = max(next_at + interval, time.monotonic())
                x = users.query()
                served = client.predict([float(v) for v in x])
                self._record(served)
                if served.ok and rng.random() < self.feedback_share:
                    self._record(client.feedback(served.body["request_id"], int(users.truth(x)), uuid.uuid4().hex))
        finally:
            client.close()

    def _record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)


def _percentile_ms(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1e3 if values else float("nan")


def summarize(
    calls: list[Call], kind: str, since: float = float("-inf"), until: float = float("inf")
) -> dict[str, Any]:
    """Counts and latency percentiles of the ``kind`` calls started in ``[since, until)``.

    Returns:
        ``sent``, ``ok``, ``failed`` (after retry), ``raw_failures`` (attempts before retry),
        ``failed_statuses`` (final status -> count, None for no answer), ``rate_per_s``,
        ``p50_ms``, ``p95_ms``, ``p99_ms`` (of answered calls, retries included),
        ``versions`` (model_version -> count, predicts).
    """
    chosen = [c for c in calls if c.kind == kind and since <= c.started < until]
    seconds = [c.seconds for c in chosen if c.ok]
    span = (max(c.started for c in chosen) - min(c.started for c in chosen)) if len(chosen) > 1 else 0.0
    return {
        "sent": len(chosen),
        "ok": sum(c.ok for c in chosen),
        "failed": sum(not c.ok for c in chosen),
        "raw_failures": sum(c.raw_failures for c in chosen),
        "failed_statuses": dict(Counter(c.status for c in chosen if not c.ok)),
        "rate_per_s": (len(chosen) - 1) / span if span else float("nan"),
        "p50_ms": _percentile_ms(seconds, 50),
        "p95_ms": _percentile_ms(seconds, 95),
        "p99_ms": _percentile_ms(seconds, 99),
        "versions": dict(Counter(c.body.get("model_version") for c in chosen if c.ok and kind == "predict")),
    }


# -- memory ------------------------------------------------------------------------------------


def alive_actors(config: Config, class_name: str | None = None) -> list[Any]:
    """Live actors of the Ray cluster ``config`` names (``ray.util.state`` records), optionally of one class.

    The cluster is named explicitly: left to itself, the state API picks the newest Ray
    instance on the machine, which on a shared machine may be someone else's.
    """
    from ray.util.state import list_actors

    filters = [("state", "=", "ALIVE")] + ([("class_name", "=", class_name)] if class_name else [])
    return list_actors(address=config.ray.dashboard_url, filters=filters, limit=10_000)


def serving_processes(config: Config) -> dict[str, int]:
    """Pid of every Ray actor that serves ``config.app``: ``ingress``, ``model_replica[-i]``,
    ``serve_proxy``, ``serve_controller`` (this machine only)."""
    wanted = {
        f"ServeReplica:{config.app}:Ingress": "ingress",
        f"ServeReplica:{config.app}:ModelReplica": "model_replica",
        "ProxyActor": "serve_proxy",
        "ServeController": "serve_controller",
    }
    found: dict[str, int] = {}
    actors = sorted(alive_actors(config), key=lambda a: a.actor_id)
    for actor in actors:
        name = wanted.get(actor.class_name)
        if name is not None and actor.pid:
            found[name if name not in found else f"{name}-{sum(k.startswith(name) for k in found)}"] = actor.pid
    missing = sorted(set(wanted.values()) - {k.split("-")[0] for k in found})
    if missing:
        raise RuntimeError(
            f"no live Ray actor for {', '.join(missing)} of app {config.app!r}; is it deployed (serve.app.deploy)?"
        )
    return found


def service_processes(config: Config) -> dict[str, int]:
    """Pid of the local Kafka broker and MLflow server (absent when they are external)."""
    from infra._private.process import read_pid
    from infra.kafka_broker import KafkaBroker
    from infra.mlflow_server import MLflowServer

    found = {}
    for name, service in (("kafka", KafkaBroker(config)), ("mlflow", MLflowServer(config))):
        pid = read_pid(service.pid_file) if service.managed else None
        if pid is not None:
            found[name] = pid
    return found


def tree_rss(pid: int) -> int:
    """RSS in bytes of ``pid`` and all its descendants (MLflow's server runs its app in a child)."""
    root = psutil.Process(pid)
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


class RssSampler:
    """Reads the RSS of named processes every ``every_s`` seconds in a background thread.

    Args:
        processes: Name -> pid.
        every_s: Sampling period.
    """

    def __init__(self, processes: dict[str, int], every_s: float = 2.0) -> None:
        self.processes = dict(processes)
        self.every_s = every_s
        self.samples: dict[str, list[tuple[float, int]]] = {name: [] for name in processes}
        self.gone: dict[str, float] = {}  # name -> when it was found dead
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            now = time.monotonic()
            for name, pid in self.processes.items():
                if name in self.gone:
                    continue
                try:
                    self.samples[name].append((now, tree_rss(pid)))
                except psutil.NoSuchProcess:
                    self.gone[name] = now
            if self._stop.wait(self.every_s):
                return

    def steady(self, name: str, since: float, until: float) -> dict[str, float]:
        """RSS of ``name`` over ``[since, until]``: start and end (MB), and the least-squares
        slope over the second half (MB/s) times the whole window (MB): the growth that slope
        would add in one steady phase."""
        points = [(t, rss) for t, rss in self.samples[name] if since <= t <= until]
        half = [(t, rss) for t, rss in points if t >= (since + until) / 2]
        slope = (
            float(np.polyfit([t for t, _ in half], [r for _, r in half], 1)[0]) / MB if len(half) >= 3 else float("nan")
        )
        return {
            "start_mb": points[0][1] / MB if points else float("nan"),
            "end_mb": points[-1][1] / MB if points else float("nan"),
            "max_mb": max(r for _, r in points) / MB if points else float("nan"),
            "samples": float(len(points)),
            "slope_mb_per_s": slope,
            "projected_growth_mb": slope * (until - since),
        }


# -- the learner in its own process ------------------------------------------------------------


def _learner_main(values: dict[str, Any], limits: dict[str, Any], conn: Any) -> None:
    """Entry of the learner process: run the feedback loop until its limits, send back its metrics."""
    import torch

    from learners.feedback_loop import FeedbackLoop, LoopLimits

    torch.set_num_threads(1)
    try:
        loop = FeedbackLoop(Config.from_dict(values), limits=LoopLimits(**limits), say=lambda line: None)
        conn.send({"ready": True})
        conn.send({"metrics": loop.run()})
    except BaseException as e:  # noqa: BLE001 - the parent reports it
        conn.send({"error": f"{type(e).__name__}: {e}"})
        raise


class LearnerProcess:
    """An online learner (:class:`learners.feedback_loop.FeedbackLoop`) in a process of its own,
    so that its memory can be told apart from the load generator's.

    Args:
        config: The service config.
        idle_exit_s: The learner stops after this long with nothing to read.
    """

    def __init__(self, config: Config, idle_exit_s: float) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe(duplex=False)
        limits = {"max_events": None, "idle_exit_s": idle_exit_s, "max_runtime_s": None}
        self.process = context.Process(
            target=_learner_main, args=(config.to_dict(), limits, child), name="soak-learner"
        )
        self.process.start()
        child.close()

    @property
    def pid(self) -> int:
        return int(self.process.pid)  # type: ignore[arg-type]

    def wait_ready(self, timeout_s: float) -> None:
        """Wait until the learner has started (imports, resume, Kafka and MLflow connected): its
        start-up must not fall in the measured phase.

        Raises:
            RuntimeError: It failed, or was not ready within ``timeout_s``.
        """
        self._receive("ready", timeout_s, f"the learner was not ready within {timeout_s:g} s")

    def result(self, timeout_s: float) -> dict[str, float]:
        """Wait for the learner to stop by itself; its final metrics.

        Raises:
            RuntimeError: It failed, or did not stop within ``timeout_s``.
        """
        metrics = self._receive(
            "metrics", timeout_s, f"the learner did not stop within {timeout_s:g} s of the load's end"
        )
        self.process.join(30)
        return metrics

    def _receive(self, key: str, timeout_s: float, late: str) -> Any:
        if not self._conn.poll(timeout_s):
            self.process.kill()
            raise RuntimeError(late)
        answer = self._conn.recv()
        if "error" in answer:
            raise RuntimeError(f"the learner failed: {answer['error']}")
        return answer[key]


# -- the soak -----------------------------------------------------------------------------------


@dataclass
class SoakReport:
    """What a soak measured; ``predict`` and ``feedback`` as :func:`summarize` returns them."""

    seconds: float
    warmup_s: float
    rate: float
    predict: dict[str, Any]
    feedback: dict[str, Any]
    whole_run: dict[str, dict[str, Any]]  # warm-up included: every failure counts
    rss: dict[str, dict[str, float]]
    accepted_feedback: int
    learned_events: int
    versions_published: int
    notes: list[str] = field(default_factory=list)

    def table(self) -> str:
        lines = [
            f"steady phase {self.seconds:.0f} s after {self.warmup_s:.0f} s warm-up, target {self.rate:g} predicts/s + feedback",
            "| endpoint | sent | rate/s | failed before retry | failed after retry | p50 ms | p95 ms | p99 ms |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for kind in ("predict", "feedback"):
            s, whole = getattr(self, kind), self.whole_run[kind]
            lines.append(
                f"| {kind} | {s['sent']} | {s['rate_per_s']:.1f} | {whole['raw_failures']} | {whole['failed']} | "
                f"{s['p50_ms']:.0f} | {s['p95_ms']:.0f} | {s['p99_ms']:.0f} |"
            )
        lines += [
            "",
            "| process | RSS start MB | RSS end MB | max MB | slope of 2nd half MB/s | x duration MB |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in self.rss.items():
            lines.append(
                f"| {name} | {r['start_mb']:.0f} | {r['end_mb']:.0f} | {r['max_mb']:.0f} | "
                f"{r['slope_mb_per_s']:+.3f} | {r['projected_growth_mb']:+.1f} |"
            )
        lines.append(
            f"\nfeedback accepted {self.accepted_feedback}, learned {self.learned_events}, "
            f"versions published {self.versions_published}"
        )
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def run_soak(
    base: Config,
    *,
    seconds: float,
    warmup_s: float,
    rate: float,
    threads: int = 4,
    sample_every_s: float = 2.0,
    snapshot_every_s: float = 5.0,
) -> SoakReport:
    """Deploy a fresh app, start a learner, run steady load, sample memory; take it all down.

    Args:
        base: The stack's config; the run gets its own app, topics and registered model.
        seconds: Length of the judged steady phase.
        warmup_s: Load before it (not judged, except that no request may fail).
        rate: Predicts per second; each answered predict gets its feedback.
        threads: Client threads.
        sample_every_s: RSS sampling period.
        snapshot_every_s: The learner's timed snapshot period (a version published and
            loaded by the replica each time; the learner's first snapshot comes after
            ``learner.snapshot_every_events``).
    """
    from serve.app import deploy, shutdown

    config = fresh_config(base, snapshot_every_s=snapshot_every_s)
    url = deploy(config)
    learner = None
    load = SteadyLoad(url, config, rate=rate, threads=threads)
    try:
        # Load first: a learner idle for idle_exit_s before the first record would stop. Its
        # start-up (imports, MLflow run, Kafka) then falls in the warm-up, not the steady phase.
        load.start()
        learner = LearnerProcess(config, idle_exit_s=8.0)
        learner.wait_ready(timeout_s=300.0)
        processes = {**serving_processes(config), "learner": learner.pid, **service_processes(config)}
        sampler = RssSampler(processes, every_s=sample_every_s)
        sampler.start()
        steady_from = time.monotonic() + warmup_s
        time.sleep(warmup_s + seconds)
        steady_until = time.monotonic()
        calls = load.stop()
        sampler.stop()
        whole = {kind: summarize(calls, kind) for kind in ("predict", "feedback")}
        accepted = whole["feedback"]["ok"]
        metrics = learner.result(timeout_s=120.0)
    finally:
        load.stop()
        if learner is not None and learner.process.is_alive():
            learner.process.kill()
        shutdown(config)
    notes = [f"{name} exited during the steady phase" for name, at in sampler.gone.items() if at <= steady_until]
    return SoakReport(
        seconds=steady_until - steady_from,
        warmup_s=warmup_s,
        rate=rate,
        predict=summarize(calls, "predict", steady_from, steady_until),
        feedback=summarize(calls, "feedback", steady_from, steady_until),
        whole_run=whole,
        rss={name: sampler.steady(name, steady_from, steady_until) for name in processes},
        accepted_feedback=accepted,
        learned_events=int(metrics["events_seen"]),
        versions_published=int(metrics["versions_published"]),
        notes=notes,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="length of the judged steady phase")
    parser.add_argument("--warmup", type=float, default=20.0, help="load before the steady phase")
    parser.add_argument("--rate", type=float, default=20.0, help="predicts/s (each gets its feedback)")
    parser.add_argument(
        "--threads", type=int, default=8, help="client threads (each sends a predict, then its feedback)"
    )
    args = parser.parse_args(argv)
    print(f"== soak: {args.rate:g} predicts/s + {args.rate:g} feedbacks/s for {args.warmup:g} + {args.seconds:g} s")
    report = run_soak(load_config(), seconds=args.seconds, warmup_s=args.warmup, rate=args.rate, threads=args.threads)
    print(report.table())


if __name__ == "__main__":
    main()
