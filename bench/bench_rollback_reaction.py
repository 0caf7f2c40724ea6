"""Rollback reaction on the running local stack: from a rollback decision to 100% champion traffic.

A challenger (a newly published adapter, one per trial) is given all the traffic by hand; client threads call
``/v1/predict`` without a user id in a tight loop and record, for every answer, when the
request was sent and which arm answered. The rollback is then decided in the rollout
controller actor (``RolloutController.rollback``, the same ``_act`` path an automatic
rollback takes; the decision's ``ts`` is the controller's clock, which is this machine's).

Reaction = the earliest send time after which every answer came from the champion, minus the
decision time. It covers the controller announcing the new split, the ingress's long poll
returning and the next request being routed by it. Its resolution is the client's request
interval (printed), so the client sends from several threads.

Usage: ``python -m bench.bench_rollback_reaction [--trials 10] [--threads 4]`` (``cl up`` first).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import httpx
import ray

from bench.bench_online import fresh_config
from cl.config import Config, load_config
from cl.events import LifecycleEvent
from cl.model.base_model import build_base_model
from cl.registry import AdapterRegistry
from streams import EventProducer

GOAL_S = 1.0


def _publish_challenger(config: Config) -> str:
    """Register an adapter and announce it, as the learner would: the controller starts a rollout."""
    registry = AdapterRegistry(config.mlflow.tracking_uri, config.mlflow.model_name)
    model = build_base_model(config.model)
    version = registry.publish(
        model.adapter_state(0), tags={"base_version": config.model.base_version, "events_seen": "0", "reason": "bench"}
    )
    producer = EventProducer(config.kafka.bootstrap_servers)
    payload = {"version": version, "model_name": config.mlflow.model_name, "base_version": config.model.base_version}
    producer.send_and_wait(config.topics.events, LifecycleEvent(type="version_published", payload=payload))
    producer.close()
    return version


class ArmRecorder:
    """Client threads calling predict; each answer kept as ``(sent_at, arm)``."""

    def __init__(self, url: str, n_features: int, threads: int) -> None:
        self.answers: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        body = {"features": [0.1] * n_features}
        self._threads = [threading.Thread(target=self._loop, args=(url, body), daemon=True) for _ in range(threads)]

    def _loop(self, url: str, body: dict) -> None:
        with httpx.Client(base_url=url, timeout=30.0) as client:
            while not self._stop.is_set():
                sent = time.time()
                arm = client.post("/v1/predict", json=body).raise_for_status().json()["arm"]
                with self._lock:
                    self.answers.append((sent, arm))

    def __enter__(self) -> ArmRecorder:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def since(self, t0: float) -> list[tuple[float, str]]:
        with self._lock:
            return sorted(a for a in self.answers if a[0] >= t0)


def reaction_s(answers: list[tuple[float, str]], decided_at: float) -> float | None:
    """Seconds from ``decided_at`` to the first send time after which only the champion answered.

    Negative when requests sent just before the decision, still on their way through the
    HTTP proxy, were already routed to the champion.

    >>> round(reaction_s([(0.0, "challenger"), (1.2, "challenger"), (1.3, "champion"), (1.5, "champion")], 1.0), 3)
    0.3
    >>> reaction_s([(0.0, "challenger"), (2.0, "champion")], 1.0)  # nothing sent in between: bound 1.0
    1.0
    >>> reaction_s([(0.0, "challenger"), (0.9, "champion"), (1.1, "champion")], 1.0)
    -0.09999999999999998
    >>> reaction_s([(1.1, "champion"), (1.2, "challenger")], 1.0) is None  # never all champion
    True
    """
    last_challenger = max((t for t, arm in answers if arm != "champion"), default=None)
    after = [t for t, arm in answers if arm == "champion" and (last_challenger is None or t > last_challenger)]
    if not after or answers[-1][1] != "champion":
        return None
    return after[0] - decided_at


def _wait_for(predicate, timeout_s: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)


def run(base: Config, trials: int, threads: int) -> list[float]:
    from serve.app import deploy, shutdown
    from serve.rollout_controller import get_controller

    values = fresh_config(base).to_dict()
    values["serve"]["serve_new_versions"] = False
    config = Config.from_dict(values)
    url = deploy(config)
    try:
        controller = get_controller(config)
        reactions = []
        with ArmRecorder(url, config.model.n_features, threads) as recorder:
            for trial in range(trials):
                # A rolled-back version is judged for good: every trial rolls out a new one.
                challenger = _publish_challenger(config)
                _wait_for(
                    lambda: challenger in ray.get(controller.status.remote())["challengers"],
                    60,
                    f"the rollout of version {challenger} to start",
                )
                ray.get(controller.set_traffic.remote(challenger, 1.0, "bench: all traffic to the challenger"))
                t_all = time.time()
                _wait_for(
                    lambda: any(a == "challenger" for _, a in recorder.since(t_all + 0.3)),
                    30,
                    "the challenger to answer",
                )
                time.sleep(0.5)
                decision = ray.get(controller.rollback.remote(None, "bench: rollback"))
                decided_at = next(d["ts"] for d in decision if d["action"] == "rollback")
                time.sleep(1.5)  # answers after the decision, to see the switch settle
                answers = recorder.since(decided_at - 0.5)
                r = reaction_s(answers, decided_at)
                gaps = [b[0] - a[0] for a, b in zip(answers, answers[1:])]
                print(
                    f"trial {trial + 1}/{trials}: reaction {'never' if r is None else f'{r * 1000:.0f} ms'} "
                    f"(requests {len(answers)}, mean send interval {1000 * statistics.fmean(gaps):.0f} ms)",
                    flush=True,
                )
                if r is not None:
                    reactions.append(r)
        return reactions
    finally:
        shutdown(config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_rollback_reaction", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--threads", type=int, default=4, help="client threads sending predict requests")
    args = parser.parse_args(argv)
    reactions = run(load_config(), args.trials, args.threads)
    if not reactions:
        print("no trial reached 100% champion traffic")
        return 1
    ms = sorted(r * 1000 for r in reactions)
    met = "met" if max(ms) <= GOAL_S * 1000 else "NOT met"
    print(
        f"\nrollback reaction over {len(ms)} trials (decision -> every request sent later answered by the "
        f"champion): median {statistics.median(ms):.0f} ms, max {ms[-1]:.0f} ms; "
        f"goal <= {GOAL_S * 1000:.0f} ms: {met}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
