"""``RolloutController``: the one named Ray actor that runs rollouts for an application.

It wires :mod:`cl.rollout` to the live service:

* **hears** ``version_published`` on ``cl.events`` and starts a canary rollout of the newest
  version against the champion (one rollout at a time; each judges one frozen version, and
  a version is judged once);
* **reads** ``cl.feedback`` joined with ``cl.requests`` (its own consumer group) and feeds
  each rated outcome to the policy under the version that served it; held-out labelled
  feedback (:mod:`cl.learning.eval_set`) fills the frozen evaluation set instead;
* **is told** by the ingress how many requests each version served and how many failed;
* **acts** on the policy's decisions: traffic moves at once (ingresses long-poll
  :meth:`routing`), promotion moves the MLflow alias ``champion``, a rollback takes the
  challenger's traffic to 0; each decision goes on ``cl.events`` and into the audit log;
* **checkpoints** its whole state (policy, consumer positions, evaluation set, judged
  versions) as a ``rollout_state`` event on ``cl.events``, and rebuilds from the newest one
  after a restart; the MLflow aliases stay the truth for who is champion.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import ray

from cl.config import Config
from cl.events import EventError, FeedbackEvent, LifecycleEvent, RequestEvent, parse_event
from cl.learning.eval_set import EvalSet, is_held_out, score_adapter
from cl.learning.example import Example
from cl.lifecycle import RolloutCheckpoint, RolloutState, VersionPublished, decision_message
from cl.rollout import CanaryPolicy, Decision
from cl.versions import BASE_VERSION, is_newer

__all__ = ["NAMESPACE", "RolloutController", "controller_name", "get_controller", "kill_controller"]

logger = logging.getLogger("ray.serve").getChild("rollout")

NAMESPACE = "cl"
CHECKPOINT_EVERY_S = 2.0
REPO_ROOT = Path(__file__).resolve().parents[1]


def controller_name(app: str) -> str:
    return f"{app}-rollout"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1, max_concurrency=32)
class RolloutController:
    """Holds the rollout state of one application (see the module docstring).

    Args:
        config: ``Config.to_dict()`` of the service.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        from cl.registry import AdapterRegistry
        from cl.security import AuditTrail, rollout_actor
        from streams import EventProducer, EventTail, FeedbackJoiner, OffsetReader

        self.config = cfg = Config.from_dict(config)
        self.registry = AdapterRegistry(cfg.mlflow.tracking_uri, cfg.mlflow.model_name)
        self.producer = EventProducer(cfg.kafka.bootstrap_servers, client_id=f"{cfg.app}-rollout")
        self.audit = AuditTrail(cfg.audit_path if cfg.audit_path.is_absolute() else REPO_ROOT / cfg.audit_path)
        self.audit_actor = rollout_actor(cfg.app)
        self._lock = threading.RLock()
        # The split the ingresses follow has its own lock, so a long poll is answered the moment
        # a decision changes it, not after the decision's MLflow and Kafka work.
        self._split_changed = threading.Condition()
        self._split: dict[str, Any] = {}
        self.epoch = 0
        self.evals = EvalSet()
        self.judged: list[str] = []
        self.restored_from: str | None = None
        self._observed = 0
        self.joiner = FeedbackJoiner(max_requests=cfg.learner.join_window_events, max_age_s=cfg.learner.join_window_s)
        saved = self._last_checkpoint()
        champion = self.registry.alias_version("champion") or BASE_VERSION
        positions = None
        if saved is not None:
            checkpoint, self.restored_from = saved
            self.policy = CanaryPolicy.from_dict(checkpoint.policy)
            self.evals.load_state_dict(checkpoint.evals)
            self.judged = list(checkpoint.judged)
            positions = dict(checkpoint.positions)
            if self.policy.champion != champion:  # the alias is the truth (moved by hand in MLflow?)
                logger.warning(
                    "champion alias says %s, saved rollout state %s; following the alias",
                    champion,
                    self.policy.champion,
                )
                self.policy = CanaryPolicy(champion, cfg.rollout)
        else:
            self.policy = CanaryPolicy(champion, cfg.rollout)
        topics = cfg.topics
        self.reader = OffsetReader(
            cfg.kafka.bootstrap_servers, [topics.requests, topics.feedback], f"{cfg.app}-rollout", positions=positions
        )
        self.tail = EventTail(cfg.kafka.bootstrap_servers, topics.events, LifecycleEvent)
        self._candidate = self.registry.latest_version()
        self._announce_split()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rollout", daemon=True)
        self._thread.start()

    # -- asked by the ingress ------------------------------------------------------------------

    def routing(self, known_epoch: int = -1, timeout_s: float = 10.0) -> dict[str, Any]:
        """The traffic split; waits up to ``timeout_s`` for it to differ from ``known_epoch``."""
        with self._split_changed:
            if known_epoch == self._split["epoch"]:
                self._split_changed.wait(timeout=timeout_s)
            return self._split

    def _announce_split(self) -> None:
        """Hand the policy's current split to every waiting ``routing`` call."""
        split = self._routing()
        with self._split_changed:
            self._split = split
            self._split_changed.notify_all()

    def _routing(self) -> dict[str, Any]:
        p = self.policy
        return {
            "epoch": self.epoch,
            "rollout_id": p.rollout_id if p.active else None,
            "champion": p.champion,
            "challengers": list(p.challengers),
            "weights": p.weights,
        }

    def record_requests(self, counts: dict[str, list[int]]) -> None:
        """``{version: [requests, errors]}`` served since the ingress last said."""
        with self._lock:
            for version, (requests, errors) in counts.items():
                self.policy.observe_requests(version, int(requests), int(errors))

    # -- asked by people (admin HTTP endpoints, the CLI) ---------------------------------------

    def status(self) -> dict[str, Any]:
        now = time.time()
        with self._lock:
            return {
                **self._routing(),
                "active": self.policy.active,
                "history": self.policy.history,
                "explain": [d.to_dict() for d in self.policy.explain(now)],
                "eval_set_size": len(self.evals),
                "judged": list(self.judged),
                "restored_from": self.restored_from,
                "recent_decisions": [r["details"] for r in self.audit.read(20, actor=self.audit_actor)],
            }

    def promote(self, version: str, reason: str = "promoted by hand") -> list[dict[str, Any]]:
        self._check_version(version)
        return self._manual(lambda now: self.policy.promote(version, now=now, reason=reason))

    def rollback(self, to_version: str | None = None, reason: str = "rolled back by hand") -> list[dict[str, Any]]:
        if to_version is not None:
            self._check_version(to_version)
            return self._manual(lambda now: self.policy.rollback_to(to_version, now=now, reason=reason))
        return self._manual(lambda now: self.policy.rollback(now=now, reason=reason))

    def set_traffic(self, version: str, weight: float, reason: str = "traffic set by hand") -> list[dict[str, Any]]:
        self._check_version(version)
        return self._manual(lambda now: self.policy.set_traffic(version, weight, now=now, reason=reason))

    def _check_version(self, version: str) -> None:
        if version == BASE_VERSION:
            return
        try:
            info = self.registry.get_version(version)
        except KeyError:
            raise ValueError(f"version {version!r} is not registered; `cl versions` lists them") from None
        base = info.version_tags.base_version
        if base is not None and base != self.config.model.base_version:
            raise ValueError(f"version {version} was trained on base {base!r}, not {self.config.model.base_version!r}")

    def _manual(self, decide) -> list[dict[str, Any]]:  # noqa: ANN001
        with self._lock:
            decisions = decide(time.time())  # ValueError (unknown arm, bad weight) goes to the caller
            for d in decisions:
                self._act(d)
            self._checkpoint()
        return [d.to_dict() for d in decisions]

    # -- the loop --------------------------------------------------------------------------------

    def _run(self) -> None:
        last_checkpoint = time.monotonic()
        while not self._stop.is_set():
            try:
                self._step()
                if self._observed and time.monotonic() - last_checkpoint >= CHECKPOINT_EVERY_S:
                    with self._lock:
                        self._checkpoint()
                    last_checkpoint = time.monotonic()
            except Exception:  # noqa: BLE001 - keep deciding; the error is in the replica log
                logger.exception("rollout step failed")
                self._stop.wait(1.0)

    def _step(self) -> None:
        for event in self.tail.poll(timeout_ms=0):
            if event.type != VersionPublished.type:
                continue
            try:
                published = VersionPublished.from_event(event)
            except EventError as e:
                logger.warning("ignoring version_published event %s: %s", event.event_id, e)
                continue
            ours = published.is_for(self.config.mlflow.model_name)
            if ours and published.base_version in (None, self.config.model.base_version):
                if self._candidate is None or is_newer(published.version, self._candidate):
                    self._candidate = published.version
        now_wall = time.time()
        examples = []
        for record in self.reader.poll(timeout_ms=200):
            examples += self._route(record, now_wall)
        self.joiner.expire(now_wall)
        with self._lock:
            for ex in examples:
                self._observe(ex)
            decisions = self._maybe_start(now_wall) + self.policy.decide(now_wall)
            for d in decisions:
                self._act(d)

    def _route(self, record, now: float) -> list[Example]:  # noqa: ANN001
        try:
            if record.topic == self.config.topics.requests:
                request = parse_event(RequestEvent, record.value)
                result = self.joiner.add_request(request, now=now, partition=record.partition, offset=record.offset)
            else:
                result = self.joiner.add_feedback(parse_event(FeedbackEvent, record.value), now=now)
        except EventError:
            return []  # the learner dead-letters bad feedback; here it is just not evidence
        out = []
        for request, feedback in result.joined:
            try:
                out.append(Example.from_join(request, feedback))
            except ValueError:
                pass
        return out

    def _observe(self, ex: Example) -> None:
        if is_held_out(ex.event_id, self.config.learner.holdout_fraction):
            self.evals.add(ex)  # the learner never trains on these: a fair test of forgetting
            return
        error = ex.user_error
        if error is None:  # a 3-star rating: neither good nor negative
            counted = self.policy.observe(ex.model_version, False, negative=False)
        else:
            counted = self.policy.observe(ex.model_version, error == 0)
        self._observed += int(counted)

    def _maybe_start(self, now: float) -> list[Decision]:
        version = self._candidate
        if self.policy.active or version is None or version in self.judged:
            return []
        if not is_newer(version, self.policy.champion):
            return []
        self.judged.append(version)
        return self.policy.start(version, now=now)

    # -- acting ----------------------------------------------------------------------------------

    def _act(self, d: Decision) -> None:
        if d.action in ("start", "advance", "promote", "rollback", "retire", "traffic"):
            self.epoch += 1
            self._announce_split()  # traffic moves first; the records below follow
            logger.info("rollout: %s %s: %s", d.action, d.version, d.reason)
        record = {**d.to_dict(), "model_name": self.config.mlflow.model_name}
        self.audit.append(f"rollout_{d.action}", actor=self.audit_actor, outcome="ok", details=record)
        if d.action == "needs_evaluation":
            self._evaluate(d.version)
        elif d.action in ("promote", "rollback") and self.registry.alias_version("champion") != self.policy.champion:
            if self.policy.champion == BASE_VERSION:
                self.registry.delete_alias("champion")
            else:
                self.registry.set_alias("champion", self.policy.champion)
        if d.action == "start":
            self.registry.set_alias("challenger", d.version)
        elif d.action in ("promote", "rollback", "retire") and not self.policy.active:
            self.registry.delete_alias("challenger")
        self.producer.send(
            self.config.topics.events, decision_message(d, self.config.mlflow.model_name).to_event()
        )  # its payload is the record above

    def _evaluate(self, challenger: str) -> None:
        """Score champion and challenger on the frozen evaluation set; tell the policy."""
        from cl.model.base_model import build_base_model

        examples = self.evals.examples
        model = build_base_model(self.config.model, n_adapter_slots=2)
        for slot, version in enumerate((self.policy.champion, challenger)):
            if version != BASE_VERSION:
                model.load_adapter_state(slot, self.registry.load_adapter(version))
            score = score_adapter(model, slot if version != BASE_VERSION else -1, examples)
            if score != score:  # NaN: nothing held out yet, so nothing to regress on
                score = 1.0
            self.policy.observe_eval(version, score)

    def _checkpoint(self) -> None:
        state = RolloutCheckpoint(
            policy=self.policy.to_dict(),
            positions=self.reader.positions(),
            evals=self.evals.state_dict(),
            judged=self.judged[-1000:],
        )
        message = RolloutState(model_name=self.config.mlflow.model_name, state=state)
        self.producer.send(self.config.topics.events, message.to_event())
        self._observed = 0

    def _last_checkpoint(self) -> tuple[RolloutCheckpoint, str] | None:
        """The newest checkpoint of this model on ``cl.events``, and its event id."""
        from streams import EventTail

        tail = EventTail(
            self.config.kafka.bootstrap_servers, self.config.topics.events, LifecycleEvent, from_beginning=True
        )
        last = None
        try:
            for e in tail.read_to_end():
                if e.type != RolloutState.type:
                    continue
                try:
                    saved = RolloutState.from_event(e)
                except EventError as err:  # keep the newest checkpoint that reads
                    logger.warning("skipping rollout checkpoint %s: %s", e.event_id, err)
                    continue
                if saved.model_name == self.config.mlflow.model_name:
                    last = (saved.state, e.event_id)
        finally:
            tail.close()
        return last

    def checkpoint_now(self) -> None:
        """Write the state to ``cl.events`` now (before a planned restart; tests)."""
        with self._lock:
            self._checkpoint()
        self.producer.flush()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


def get_controller(config: Config) -> Any:
    """The application's controller, created on first use; detached, so it outlives any replica."""
    return RolloutController.options(
        name=controller_name(config.app), namespace=NAMESPACE, get_if_exists=True, lifetime="detached"
    ).remote(config.to_dict())


def kill_controller(app: str) -> bool:
    """Remove the controller of ``app``; returns whether there was one."""
    try:
        actor = ray.get_actor(controller_name(app), namespace=NAMESPACE)
    except ValueError:
        return False
    ray.kill(actor)
    return True
