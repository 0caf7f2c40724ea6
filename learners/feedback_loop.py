"""One learner worker's loop: consume → join → learn → snapshot → commit → announce.

The order inside a snapshot is what makes a crash harmless: the model, the learner's state
and the Kafka positions it reached are registered together as one MLflow version; only then
are the offsets committed and ``version_published`` announced. A restarted worker loads the
newest version and seeks to its positions, so every event is applied exactly once.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Callable

import torch

from cl.base_model import build_base_model
from cl.config import Config
from cl.events import EventError, FeedbackEvent, LifecycleEvent, RequestEvent, parse_event
from cl.example import Example
from cl.online_learner import OnlineLearner, StepReport
from cl.registry import AdapterRegistry
from streams import DeadLetters, EventProducer, FeedbackJoiner, JoinResult, OffsetReader, Record, position_key

__all__ = ["FeedbackLoop", "LoopLimits"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopLimits:
    """When a loop stops by itself (None: never). Tests and demos bound it; a service does not."""

    max_events: int | None = None  # stop once this many events have been applied in total
    idle_exit_s: float | None = None  # stop after this long with nothing new to read
    max_runtime_s: float | None = None


class FeedbackLoop:
    """Wires the stream, the learner core and the registry together for one worker.

    Args:
        config: the service config.
        rank, world_size: this worker's share of the partitions.
        limits: when to stop.
        say: where progress lines go (the job's log).
    """

    def __init__(
        self,
        config: Config,
        *,
        rank: int = 0,
        world_size: int = 1,
        limits: LoopLimits = LoopLimits(),
        say: Callable[[str], None] = print,
    ):
        self.config = config
        self.rank = rank
        self.world_size = world_size
        self.limits = limits
        self.say = say
        self.topics = config.topics
        self.registry = AdapterRegistry(config.mlflow.tracking_uri, config.mlflow.model_name)
        self.producer = EventProducer(config.kafka.bootstrap_servers, client_id=f"{config.app}-learner-{rank}")
        self.dead_letters = DeadLetters(self.producer, self.topics.dlq)
        self.model = build_base_model(config.model, n_adapter_slots=1)
        self.learner = OnlineLearner(self.model, config.learner, slot=0, seed=config.model.seed, branch_source=self._champion_adapter)
        lc = config.learner
        self.joiner = FeedbackJoiner(max_requests=lc.join_window_events, max_age_s=lc.join_window_s)
        self.parent_version: str | None = None
        self.published: list[str] = []
        self.duplicates = 0
        self._in_batch: dict[str, FeedbackEvent] = {}  # the feedback behind each example in the micro-batch
        positions = self._resume()
        self.reader = OffsetReader(
            config.kafka.bootstrap_servers,
            [self.topics.requests, self.topics.feedback],
            lc.consumer_group,
            rank=rank,
            world_size=world_size,
            positions=positions,
        )
        self.run_id = self.registry.start_run(
            f"online-learner-{int(time.time())}",
            params={"base_version": config.model.base_version, "resumed_from": self.parent_version or "", **lc.__dict__},
        )

    # -- resume / snapshot ----------------------------------------------------------------------

    def _champion_adapter(self) -> dict[str, torch.Tensor] | None:
        version = self.registry.alias_version("champion")
        return self.registry.load_adapter(version) if version else None

    def _resume(self) -> dict[str, int]:
        latest = self.registry.latest_version()
        if latest is None:
            return {}
        state = self.registry.load_learner_state(latest)
        if state is None or state.get("base_version") != self.config.model.base_version:
            self.say(f"learner: version {latest} has no learner state for this base; starting a fresh adapter")
            return {}
        self.learner.load_state_dict(state["learner"])
        self.joiner.load_state_dict(state["joiner"])
        self.parent_version = latest
        self.say(f"learner: resumed from version {latest} ({self.learner.events_seen} events applied so far)")
        return dict(state["positions"])

    def _snapshot_positions(self) -> tuple[dict[str, int], dict[str, int]]:
        """(positions to resume from, positions actually reached): requests resume earlier."""
        reached = self.reader.positions()
        requests = {int(k.rsplit(":", 1)[1]): v for k, v in reached.items() if k.rsplit(":", 1)[0] == self.topics.requests}
        resume = dict(reached)
        for partition, offset in self.joiner.request_resume_offsets(requests).items():
            resume[position_key(self.topics.requests, partition)] = offset
        return resume, reached

    def snapshot(self, reason: str) -> str:
        """Register the adapter and all state as a version, then commit offsets, then announce."""
        resume, reached = self._snapshot_positions()
        metrics = self.learner.metrics()
        state = {
            "base_version": self.config.model.base_version,
            "learner": self.learner.state_dict(),
            "joiner": self.joiner.state_dict(),
            "positions": resume,
        }
        version = self.registry.publish(
            self.model.adapter_state(0),
            tags={
                "base_version": self.config.model.base_version,
                "parent_version": self.parent_version or "",
                "kafka_offsets": json.dumps(resume, sort_keys=True),
                "events_seen": str(self.learner.events_seen),
                "reason": reason,
            },
            metrics=metrics,
            learner_state=state,
            run_id=self.run_id,
            step=self.learner.events_seen,
        )
        self.reader.commit(reached)
        payload = {
            "version": version,
            "model_name": self.config.mlflow.model_name,
            "base_version": self.config.model.base_version,
            "parent_version": self.parent_version or "",
            "events_seen": self.learner.events_seen,
            "reason": reason,
            "metrics": {k: float(v) for k, v in metrics.items()},
        }
        self.producer.send_and_wait(self.topics.events, LifecycleEvent(type="version_published", payload=payload))
        self.parent_version = version
        self.published.append(version)
        return version

    # -- the loop -------------------------------------------------------------------------------

    def _route(self, record: Record, now: float) -> JoinResult | None:
        if record.topic == self.topics.requests:
            try:
                request = parse_event(RequestEvent, record.value)
            except EventError:
                return None  # the request log is ours; a bad entry there is not the user's feedback
            return self.joiner.add_request(request, now=now, partition=record.partition, offset=record.offset)
        try:
            feedback = parse_event(FeedbackEvent, record.value)
        except EventError as err:
            self.dead_letters.invalid(record, err)
            return None
        return self.joiner.add_feedback(feedback, now=now)

    def _collect(self, result: JoinResult | None, batch: list[Example]) -> None:
        if result is None:
            return
        self.duplicates += len(result.duplicates)
        for feedback in result.unjoined:
            self.dead_letters.rejected(
                feedback, "unjoined", "request_id",
                f"no request {feedback.request_id!r} was seen within {self.joiner.max_age_s:g} s; "
                "send feedback only for request_ids the service returned", self.topics.feedback,
            )  # fmt: skip
        for request, feedback in result.joined:
            try:
                batch.append(Example.from_join(request, feedback))
                self._in_batch[feedback.event_id] = feedback
            except ValueError as e:
                self.dead_letters.rejected(feedback, "not_trainable", feedback.signal, str(e), self.topics.feedback)

    def _learn(self, batch: list[Example]) -> StepReport:
        report = self.learner.learn(batch)
        for event_id, reason in report.rejected:
            feedback = self._in_batch[event_id]
            self.dead_letters.rejected(feedback, "not_trainable", feedback.signal, reason, self.topics.feedback)
        if report.drift:
            payload = {"events_seen": self.learner.events_seen, "actions": list(report.actions), "lr": report.lr,
                       "detector": self.config.learner.drift_detector}  # fmt: skip
            self.producer.send(self.topics.events, LifecycleEvent(type="drift_detected", payload=payload))
            self.registry.log_metrics(self.run_id, {"drift_detected": 1.0}, step=self.learner.events_seen)
            self.say(f"learner: drift detected after {self.learner.events_seen} events; actions: {', '.join(report.actions) or 'none'}")
        return report

    def run(self) -> dict[str, float]:
        """Loop until a limit is reached; returns the final metrics."""
        lc, limits = self.config.learner, self.limits
        batch: list[Example] = []
        started = last_snapshot = last_progress = last_read = time.monotonic()
        batch_since: float | None = None
        since_snapshot = 0
        self.say(f"learner {self.rank}/{self.world_size}: reading {self.topics.feedback} joined with {self.topics.requests}")
        while True:
            records = self.reader.poll(timeout_ms=100)
            now_wall, now = time.time(), time.monotonic()
            if records:
                last_read = now
            for record in records:
                self._collect(self._route(record, now_wall), batch)
            self._collect(JoinResult([], [], self.joiner.expire(now_wall)), batch)
            if batch and batch_since is None:
                batch_since = now
            drift = False
            if batch and (len(batch) >= lc.batch_size or now - (batch_since or now) >= lc.max_wait_s):
                # A backlog is learned in micro-batches of up to max_batch_size: fewer, larger steps.
                for start in range(0, len(batch), lc.max_batch_size):
                    report = self._learn(batch[start : start + lc.max_batch_size])
                    since_snapshot += report.n_events
                    drift = drift or report.drift
                batch, batch_since = [], None
                self._in_batch.clear()
            done = limits.max_events is not None and self.learner.events_seen >= limits.max_events
            idle = limits.idle_exit_s is not None and now - last_read >= limits.idle_exit_s and not batch
            overtime = limits.max_runtime_s is not None and now - started >= limits.max_runtime_s
            due = since_snapshot >= lc.snapshot_every_events or (since_snapshot and now - last_snapshot >= lc.snapshot_every_s)
            if (due or drift or ((done or idle or overtime) and since_snapshot)) and not batch:
                reason = "drift" if drift else "final" if (done or idle or overtime) else "periodic"
                version = self.snapshot(reason)
                since_snapshot, last_snapshot = 0, now
                self.say(f"learner: published version {version} ({reason}, {self.learner.events_seen} events)")
            if now - last_progress >= 5.0:
                m = self.learner.metrics()
                self.say(
                    f"learner: {int(m.get('events_seen', 0))} events | prequential acc {m.get('prequential_accuracy', float('nan')):.3f}"
                    f" | positive {m.get('positive_rate', float('nan')):.3f} | loss {m.get('loss_ema', float('nan')):.3f}"
                    f" | lag {self.reader.lag()} | dead letters {sum(self.dead_letters.counts.values())}"
                )
                last_progress = now
            if (done or idle or overtime) and not batch:
                break
        self.close()
        return {**self.learner.metrics(), "versions_published": float(len(self.published)), "duplicates": float(self.duplicates)}

    def close(self) -> None:
        self.dead_letters.flush()
        self.producer.close()
        self.reader.close()
        self.registry.client.set_terminated(self.run_id)
