"""One learner worker's loop: consume → join → learn → snapshot → commit → announce.

The order inside a snapshot is what makes a crash harmless: the model, the learner's state
and the Kafka positions it reached are registered together as one MLflow version; only then
are the offsets committed and ``version_published`` announced. A restarted worker loads the
newest version and seeks to its positions, so every event is applied exactly once.

With several workers (``learner.workers``), each reads its share of the feedback partitions
and every request partition (so feedback joins whichever partition a client posted it to).
The workers move in lockstep: once per poll they exchange a small status, and from it all
take the same decisions (:class:`cl.learning.schedule.LoopSchedule`): step (together,
averaging gradients, see :mod:`cl.learning.data_parallel`), snapshot or stop. A snapshot is one
version holding every rank's part (:mod:`learners.rank_state`), registered by rank 0 before
any rank commits.

If MLflow is down, the snapshot is not published: no rank commits, the events stay
unpublished (a crash now would re-read them from the last version), learning goes on, and
the snapshot is retried with backoff (``SNAPSHOT_RETRY_MAX_S`` at most between tries).
Failpoints (:mod:`cl.testing.failpoints`) mark the steps whose interruption the fault tests prove
harmless: ``snapshot.before_publish``, ``snapshot.after_publish`` (registered, offsets not
committed) and ``snapshot.after_commit`` (committed, not announced).

Every joined event passes :class:`cl.learning.feedback_guard.FeedbackGuard` first: events over a
user's cap, and every event of a quarantined user, go to the dead-letter topic instead
(``user_capped``, ``user_quarantined``), and a quarantine is announced on ``cl.events``.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Callable

import torch
from mlflow.exceptions import MlflowException

from cl.config import Config
from cl.events import EventError, FeedbackEvent, RequestEvent, parse_event
from cl.learning.data_parallel import RankGroup, current_group
from cl.learning.example import Example
from cl.learning.feedback_guard import FeedbackGuard
from cl.learning.online_learner import OnlineLearner, StepReport
from cl.learning.schedule import LoopLimits, LoopSchedule
from cl.lifecycle import DriftDetected, UserQuarantined, VersionPublished
from cl.model.base_model import build_base_model
from cl.registry import AdapterRegistry, VersionTags
from cl.serving.placement import place_for_training
from cl.testing.failpoints import failpoint
from learners.metrics import LearnerMetrics
from learners.rank_state import merge_metrics, merge_positions, rank_parts, share_for_rank
from streams import DeadLetters, EventProducer, FeedbackJoiner, JoinResult, OffsetReader, Record, position_key

__all__ = ["FeedbackLoop", "LoopLimits"]

log = logging.getLogger(__name__)

SNAPSHOT_RETRY_MAX_S = 30.0  # longest wait between tries of a snapshot MLflow refused
# The loop retries a failed snapshot itself, with backoff, and learns meanwhile; MLflow's own
# client retries (7, with exponential backoff: minutes) would stall learning for the outage.
MLFLOW_CLIENT_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


class SnapshotNotPublished(RuntimeError):
    """The registry did not take a snapshot; no rank committed its offsets."""


class FeedbackLoop:
    """Wires the stream, the learner core and the registry together for one worker.

    Args:
        config: the service config.
        rank, world_size: this worker's share of the partitions.
        limits: when to stop.
        say: where progress lines go (the job's log).
        group: the ranks to move in lockstep with (default: from ``torch.distributed``).
        device: where the model learns; on CUDA a bfloat16 base under autocast, float32 adapters.
    """

    def __init__(
        self,
        config: Config,
        *,
        rank: int = 0,
        world_size: int = 1,
        limits: LoopLimits = LoopLimits(),
        say: Callable[[str], None] = print,
        group: RankGroup | None = None,
        device: torch.device | str = "cpu",
    ):
        self.group = group or current_group()
        if self.group.world_size != world_size:
            raise ValueError(f"world_size={world_size} but the process group has {self.group.world_size} ranks")
        for name, value in MLFLOW_CLIENT_RETRIES.items():
            os.environ.setdefault(name, value)  # an operator's own setting wins
        self.config = config
        self.rank = rank
        self.world_size = world_size
        self.limits = limits
        self.say = say
        self.topics = config.topics
        self.registry = AdapterRegistry(config.mlflow.tracking_uri, config.mlflow.model_name)
        self.producer = EventProducer(config.kafka.bootstrap_servers, client_id=f"{config.app}-learner-{rank}")
        self.dead_letters = DeadLetters(self.producer, self.topics.dlq)
        self.metrics = LearnerMetrics(config.app, rank)
        self.model = place_for_training(build_base_model(config.model, n_adapter_slots=1), torch.device(device))
        self.learner = OnlineLearner(
            self.model,
            config.learner,
            slot=0,
            seed=config.model.seed + rank,
            branch_source=self._champion_adapter,
            group=self.group,
        )
        lc = config.learner
        self.joiner = FeedbackJoiner(max_requests=lc.join_window_events, max_age_s=lc.join_window_s)
        self.guard = FeedbackGuard.from_config(lc, workers=world_size)
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
            every_partition=[self.topics.requests],
        )
        self.events_applied = self.learner.events_seen  # by every rank; refreshed once per poll
        self.run_id = (
            None
            if rank
            else self.registry.start_run(
                f"online-learner-{int(time.time())}",
                params={
                    "base_version": config.model.base_version,
                    "resumed_from": self.parent_version or "",
                    **lc.__dict__,
                },
            )
        )

    # -- resume / snapshot ----------------------------------------------------------------------

    def _champion_adapter(self) -> dict[str, torch.Tensor] | None:
        try:
            version = self.registry.alias_version("champion")
            return self.registry.load_adapter(version) if version else None
        except (MlflowException, OSError) as e:
            self.say(
                f"learner {self.rank}: the champion cannot be loaded from MLflow ({e}); branching from a fresh adapter"
            )
            return None

    def _resume(self) -> dict[str, int]:
        latest = self.registry.latest_version(source="online")  # not an offline retrain's version
        if latest is None:
            return {}
        state = self.registry.load_learner_state(latest)
        if state is None or state.get("base_version") != self.config.model.base_version:
            self.say(f"learner: version {latest} has no learner state for this base; starting a fresh adapter")
            return {}
        parts = rank_parts(state)
        share = share_for_rank(parts, self.rank, self.world_size)
        self.learner.load_state_dict(share["learner"])
        self.joiner.load_state_dict(share["joiner"])
        self.guard.load_state_dict(share.get("guard"))  # None: a snapshot from before the guard
        self.parent_version = latest
        resized = f", written by {len(parts)} worker(s)" if len(parts) != self.world_size else ""
        self.say(
            f"learner {self.rank}: resumed from version {latest}{resized} "
            f"({self.learner.events_seen} events applied so far by this worker)"
        )
        return share["positions"]

    def _snapshot_positions(self) -> tuple[dict[str, int], dict[str, int]]:
        """(positions to resume from, positions actually reached): requests resume earlier."""
        reached = self.reader.positions()
        requests = {
            int(k.rsplit(":", 1)[1]): v for k, v in reached.items() if k.rsplit(":", 1)[0] == self.topics.requests
        }
        resume = dict(reached)
        for partition, offset in self.joiner.request_resume_offsets(requests).items():
            resume[position_key(self.topics.requests, partition)] = offset
        return resume, reached

    def snapshot(self, reason: str) -> str:
        """Register the adapter and all state as a version, then commit offsets, then announce.

        A collective: every rank calls it; rank 0 registers the version with every rank's part.

        Raises:
            SnapshotNotPublished: the registry failed (on rank 0); every rank raises it, and
                none has committed anything.
        """
        resume, reached = self._snapshot_positions()
        part = {
            "learner": self.learner.state_dict(),
            "joiner": self.joiner.state_dict(),
            "positions": resume,
            "guard": self.guard.state_dict(),
        }
        parts = self.group.all_gather(part)
        metrics = merge_metrics(self.group.all_gather(self.learner.metrics()), [p["learner"]["stats"] for p in parts])
        metrics.update(_guard_totals([p["guard"]["counts"] for p in parts]))
        events_seen = int(metrics["events_seen"])
        version, error = None, None
        if self.rank == 0:
            failpoint("snapshot.before_publish")
            try:
                version = self._publish(parts, metrics, events_seen, reason)
            except (MlflowException, OSError) as e:
                error = f"{type(e).__name__}: {str(e)[:300]}"
        version, error = self.group.all_gather((version, error))[0]  # nobody commits before the version exists
        if version is None:
            raise SnapshotNotPublished(
                f"MLflow at {self.config.mlflow.tracking_uri} did not register the snapshot ({error})"
            )
        failpoint("snapshot.after_publish")
        self.reader.commit(reached)
        failpoint("snapshot.after_commit")
        if self.rank == 0:
            published = VersionPublished(
                version=version,
                model_name=self.config.mlflow.model_name,
                base_version=self.config.model.base_version,
                parent_version=self.parent_version or "",
                events_seen=events_seen,
                reason=reason,
                metrics={k: float(v) for k, v in metrics.items()},
            )
            self.producer.send_and_wait(self.topics.events, published.to_event())
        self.parent_version = version
        self.published.append(version)
        self.events_applied = events_seen
        return version

    def _publish(self, parts: list[dict], metrics: dict[str, float], events_seen: int, reason: str) -> str:
        """Rank 0: register the adapter with every rank's part as one version."""
        positions = merge_positions([p["positions"] for p in parts])
        state = {"base_version": self.config.model.base_version, "world_size": self.world_size, "ranks": parts}
        return self.registry.publish(
            self.model.adapter_state(0),
            tags=VersionTags(
                base_version=self.config.model.base_version,
                parent_version=self.parent_version or "",
                kafka_offsets=positions,
                events_seen=events_seen,
                learner_workers=self.world_size,
                source="online",
                reason=reason,
            ),
            metrics=metrics,
            learner_state=state,
            run_id=self.run_id,
            step=events_seen,
        )

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

    def _collect(self, result: JoinResult | None, batch: list[Example], now: float) -> None:
        if result is None:
            return
        self.duplicates += len(result.duplicates)
        for feedback in result.unjoined:
            self.dead_letters.rejected(
                feedback,
                "unjoined",
                "request_id",
                f"no request {feedback.request_id!r} was seen within {self.joiner.max_age_s:g} s; "
                "send feedback only for request_ids the service returned",
                self.topics.feedback,
            )
        for request, feedback in result.joined:
            verdict = self.guard.check(request, feedback, now=now)
            if verdict.action != "learn":
                self.dead_letters.rejected(
                    feedback, f"user_{verdict.action}", "user_id", verdict.reason, self.topics.feedback
                )
                if verdict.announce is not None:
                    self.producer.send(self.topics.events, UserQuarantined(**verdict.announce).to_event())
                    self.say(f"learner {self.rank}: {verdict.reason}")
                continue
            try:
                batch.append(Example.from_join(request, feedback))
                self._in_batch[feedback.event_id] = feedback
            except ValueError as e:
                self.dead_letters.rejected(feedback, "not_trainable", feedback.signal, str(e), self.topics.feedback)

    def _learn(self, batch: list[Example]) -> StepReport:
        report = self.learner.learn(batch)
        self.events_applied += report.n_events_all_ranks
        self.metrics.step(report.n_events, report.loss, report.drift)
        for event_id, reason in report.rejected:
            feedback = self._in_batch[event_id]
            self.dead_letters.rejected(feedback, "not_trainable", feedback.signal, reason, self.topics.feedback)
        if report.drift and self.rank == 0:  # every rank detects it alike; rank 0 says so
            drift = DriftDetected(
                events_seen=self.events_applied,
                actions=list(report.actions),
                lr=report.lr,
                detector=self.config.learner.drift_detector,
            )
            self.producer.send(self.topics.events, drift.to_event())
            try:
                self.registry.log_metrics(self.run_id, {"drift_detected": 1.0}, step=self.events_applied)
            except (MlflowException, OSError) as e:
                self.say(f"learner: drift not logged to MLflow ({type(e).__name__}); the drift_detected event has it")
            self.say(
                f"learner: drift detected after {self.events_applied} events; actions: {', '.join(report.actions) or 'none'}"
            )
        return report

    def run(self) -> dict[str, float]:
        """Loop until a limit is reached; returns the final metrics (of all ranks).

        When to step, snapshot and stop is :class:`cl.learning.schedule.LoopSchedule`'s call;
        this reads, learns, publishes and reports.
        """
        lc = self.config.learner
        batch: list[Example] = []
        last_progress = time.monotonic()
        schedule = LoopSchedule.from_config(lc, self.limits, start=last_progress, retry_max_s=SNAPSHOT_RETRY_MAX_S)
        self.say(
            f"learner {self.rank}/{self.world_size}: reading {self.topics.feedback} joined with {self.topics.requests}"
        )
        while True:
            records = self.reader.poll(timeout_ms=100)
            now_wall, now = time.time(), time.monotonic()
            for record in records:
                self._collect(self._route(record, now_wall), batch, now_wall)
            self._collect(JoinResult([], [], self.joiner.expire(now_wall)), batch, now_wall)
            status = schedule.status(pending=len(batch), events=self.learner.events_seen, now=now, read=bool(records))
            ranks = self.group.all_gather(status)
            self.events_applied = sum(r.events for r in ranks)
            drift = False
            # A backlog is learned in micro-batches of up to max_batch_size: fewer, larger steps.
            for i in range(schedule.steps(ranks)):
                report = self._learn(batch[i * lc.max_batch_size : (i + 1) * lc.max_batch_size])
                drift = drift or report.drift
            if any(r.ready for r in ranks):
                batch = []
                self._in_batch.clear()
            decision = schedule.decide(ranks, events_applied=self.events_applied, drift=drift)
            if decision.snapshot is not None:
                clock, unpublished = ranks[0].clock_s, schedule.unpublished
                try:
                    version = self.snapshot(decision.snapshot)
                except SnapshotNotPublished as e:
                    delay = schedule.snapshot_failed(clock)
                    if self.rank == 0:
                        self.say(
                            f"learner: {e}; {unpublished} events stay unpublished and their offsets "
                            f"uncommitted; learning goes on, try {schedule.failures + 1} in {delay:g} s"
                        )
                else:
                    failed = schedule.snapshot_published(clock)
                    self.metrics.version_published()
                    if self.rank == 0:
                        after = f" after {failed} failed tries" if failed else ""
                        self.say(
                            f"learner: published version {version} ({decision.snapshot}, "
                            f"{self.events_applied} events){after}"
                        )
            if now - last_progress >= 5.0:
                self._progress(schedule.failures)
                last_progress = now
            if schedule.can_exit(decision):  # with unpublished events, it keeps trying to publish them
                break
        final = self._final_metrics()
        self.close()
        return final

    def _progress(self, failures: int) -> None:
        """The progress metrics, and on rank 0 one line of them."""
        m = self.learner.metrics()
        lag = self.reader.lag_by_topic()
        self.metrics.progress(m, self.dead_letters.counts, lag)
        if self.rank == 0:
            self.say(
                f"learner: {self.events_applied} events | prequential acc {m.get('prequential_accuracy', float('nan')):.3f}"
                f" | positive {m.get('positive_rate', float('nan')):.3f} | loss {m.get('loss_ema', float('nan')):.3f}"
                f" | lag {sum(lag.values())} | dead letters {sum(self.dead_letters.counts.values())}"
                f" | capped {self.guard.counts['capped']} | quarantined {self.guard.counts['quarantined']}"
                f" ({self.guard.n_quarantined} users)" + (f" | {failures} snapshot tries failed" if failures else "")
            )

    def _final_metrics(self) -> dict[str, float]:
        guard = self.guard.state_dict()
        quarantined = [q["user_id"] for q in guard["quarantined"]]
        parts = self.group.all_gather(
            (self.learner.metrics(), self.learner.state_dict()["stats"], self.duplicates, guard["counts"], quarantined)
        )
        metrics = merge_metrics([p[0] for p in parts], [p[1] for p in parts])
        return {
            **metrics,
            **_guard_totals([p[3] for p in parts]),
            "users_quarantined": float(len({u for p in parts for u in p[4]})),
            "versions_published": float(len(self.published)),
            "duplicates": float(sum(p[2] for p in parts)),
        }

    def close(self) -> None:
        self.dead_letters.flush()
        self.producer.close()
        self.reader.close()
        if self.run_id is not None:
            try:
                self.registry.client.set_terminated(self.run_id)
            except (MlflowException, OSError) as e:
                self.say(f"learner: run {self.run_id} not marked finished in MLflow ({type(e).__name__})")


def _guard_totals(counts: list[dict[str, int]]) -> dict[str, float]:
    """Events refused by the ranks' guards, summed: ``events_capped``, ``events_quarantined``."""
    return {f"events_{name}": float(sum(c.get(name, 0) for c in counts)) for name in ("capped", "quarantined")}
