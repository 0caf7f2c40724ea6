"""The online learner's settings (``[learner]``): micro-batches, losses, replay, drift, snapshots."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DRIFT_ACTIONS", "LearnerConfig"]

DRIFT_ACTIONS = ("boost_lr", "branch", "reset")


@dataclass
class LearnerConfig:
    """The online learner: micro-batches, losses, replay, drift handling and snapshots."""

    workers: int = 1  # data-parallel ranks; each reads its share of the feedback partitions
    use_gpu: bool | str = "auto"  # train on a GPU: true, false, or "auto" (when Ray reports one)
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
        if isinstance(self.use_gpu, str) and self.use_gpu != "auto":
            out.append(f'learner.use_gpu: {self.use_gpu!r} is unknown; use true, false or "auto" (CL_LEARNER_USE_GPU)')
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
            out.append(
                f"learner.drift_actions: {bad} unknown; use a comma-separated subset of {', '.join(DRIFT_ACTIONS)}"
            )
        if self.snapshot_every_s <= 0 or self.max_wait_s < 0:
            out.append("learner.snapshot_every_s must be > 0 and learner.max_wait_s >= 0 (seconds)")
        return out
