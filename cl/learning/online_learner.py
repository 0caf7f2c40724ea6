"""The online learner: test-then-train on feedback, with replay and drift handling.

:class:`OnlineLearner` owns one adapter slot of a model and learns from micro-batches of
:class:`~cl.learning.example.Example`. Each call to :meth:`OnlineLearner.learn`:

1. **rejects** examples the model cannot take (a label >= ``n_labels``, a wrong feature
   count, ...) into ``StepReport.rejected`` with a reason, and learns from the rest;
2. **tests** before it trains: the error the user experienced with the served output
   (``Example.user_error``) goes to the drift detector one event at a time, and the
   model's own prediction for each label target is scored (prequential accuracy);
3. **trains**: new examples plus replayed ones (``replay_ratio`` per new example), a loss
   by each example's signal (:mod:`cl.learning.objectives`), one AdamW step on the adapter only.
   The prediction of step 2 comes from this same forward pass, taken before the step;
4. **remembers**: new examples go into the replay buffer with their loss; replayed ones
   get their loss refreshed (which steers a loss-prioritised buffer);
5. **adapts** on drift, as configured: ``boost_lr`` multiplies the learning rate by
   ``boost_factor`` for the next ``boost_events`` events, ``reset`` restarts the detector,
   ``branch`` restarts the adapter from ``branch_source()`` (or fresh). Every action is
   reported, including ``"lr_restored"`` when a boost ends.

:meth:`OnlineLearner.state_dict` holds everything needed to resume exactly (adapter,
optimizer, replay buffer, detector, counters, random state) as plain data that survives
``torch.save`` / ``torch.load(weights_only=True)``.

Example:
    >>> import torch
    >>> from cl.model.base_model import build_base_model
    >>> from cl.config import LearnerConfig, ModelSection
    >>> learner = OnlineLearner(build_base_model(ModelSection()), LearnerConfig(batch_size=4))
    >>> ok = Example("e1", "r1", "predict", "label", features=(0.1,) * 8, served_label=0, target=3)
    >>> bad = Example("e2", "r2", "predict", "label", features=(0.1,) * 8, served_label=0, target=7)
    >>> report = learner.learn([ok, bad])
    >>> report.n_events, report.errors, report.events_seen
    (1, [1], 1)
    >>> print(*report.rejected[0], sep=": ")
    e2: label 7 is out of range: the model has n_labels=4 (labels 0..3); fix the label or the model's n_labels
"""

from __future__ import annotations

import copy
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cl.config import ConfigError, LearnerConfig
from cl.drift import make_drift_detector
from cl.learning.data_parallel import RankGroup, SingleProcess
from cl.learning.eval_set import is_held_out
from cl.learning.example import Example, ModelBatch, check_example, encode_examples
from cl.learning.objectives import Scored, SupervisedLoss, make_preference_loss, score_labels, score_tokens
from cl.replay import make_replay_buffer
from cl.serving.placement import cpu_state, training_autocast

__all__ = ["OnlineLearner", "StepReport"]

STATE_FORMAT = 1
ERROR_WINDOW = 200  # events in served_error_rate
EMA = 0.05  # weight of the newest step in loss_ema and expert_max_violation


@dataclass(frozen=True)
class StepReport:
    """What one :meth:`OnlineLearner.learn` call did.

    Attributes:
        n_events: New examples accepted (learned from, or counted if neutral).
        loss: Mean loss of the micro-batch (new + replayed); NaN if no step was taken.
        errors: User-experienced errors (0/1) fed to the drift detector, in order; events
            without one (3-star ratings) are left out.
        drift: Whether the detector flagged a drift during this call.
        actions: Actions taken, in order: ``"reset"``, ``"boost_lr"``, ``"branch"``,
            ``"lr_restored"``.
        lr: Learning rate of this step.
        events_seen: Accepted events so far, this call included.
        rejected: ``(event_id, reason)`` for each example that was not learned from;
            send them to the dead-letter topic.
        n_replayed: Replayed examples in the micro-batch.
        n_events_all_ranks: New examples accepted by every rank of the group in this step
            (``n_events`` for a single learner).
        predictions: ``(event_id, predicted class)`` for each new trained example with a
            class target, predicted before this step trained on it (prequential testing).
    """

    n_events: int
    loss: float
    errors: list[int]
    drift: bool
    actions: tuple[str, ...]
    lr: float
    events_seen: int
    rejected: tuple[tuple[str, str], ...] = ()
    n_replayed: int = 0
    n_events_all_ranks: int = 0
    predictions: tuple[tuple[str, int], ...] = ()


class OnlineLearner:
    """Learns one adapter slot of ``model`` from feedback micro-batches.

    The base stays frozen; AdamW (``weight_decay=0``, since every slot shares the adapter
    tensors) updates the adapter parameters. The model is in eval mode except during the
    training forward. On CUDA the forward runs under bfloat16 autocast (place the model with
    :func:`cl.serving.placement.place_for_training`: a bfloat16 base, float32 adapters).

    Args:
        model: A :class:`~cl.model.MoETransformer` (e.g. from ``build_base_model``).
        config: Learner settings (batch, lr, losses, replay, drift).
        slot: The adapter slot this learner trains.
        seed: Seeds the replay buffer and the learner's random generator.
        branch_source: Called on a ``branch`` action; returns the adapter state to branch
            from (e.g. the champion's) or ``None`` for a fresh adapter.
        group: The data-parallel ranks this learner is one of (default: just itself). Each
            :meth:`learn` is then a collective: every rank calls it, even with no examples.

    Raises:
        ConfigError: ``config`` has problems (all are listed).
        ValueError: ``slot`` is not a slot of ``model``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: LearnerConfig,
        *,
        slot: int = 0,
        seed: int = 0,
        branch_source: Callable[[], dict[str, torch.Tensor] | None] | None = None,
        group: RankGroup | None = None,
    ) -> None:
        problems = config.problems()
        if problems:
            raise ConfigError(problems)
        n_slots = model.config.n_adapter_slots
        if isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < n_slots:
            raise ValueError(f"slot={slot!r} is not an adapter slot of this model; use 0..{n_slots - 1}")
        self.model = model
        self.config = config
        self.slot = slot
        self.seed = seed
        self.branch_source = branch_source
        self.group: RankGroup = group or SingleProcess()
        self._supervised = SupervisedLoss()
        self._preference = make_preference_loss(config.preference_loss, config.kto_beta)
        self._buffer = make_replay_buffer(config.replay, config.replay_capacity, seed)
        kind = config.drift_detector
        self._detector = None if kind == "none" else make_drift_detector(kind)
        self._rng = np.random.default_rng(seed)
        self._window: deque[int] = deque(maxlen=ERROR_WINDOW)
        self._stats: dict[str, Any] = {
            "events_seen": 0,
            "events_rejected": 0,
            "steps": 0,
            "label_events": 0,
            "label_correct": 0,
            "preference_events": 0,
            "preference_positive": 0,
            "drifts": 0,
            "loss_ema": None,
            "violation_ema": None,
            "lr": float(config.lr),
            "boost_left": 0,
        }
        self._params = model.adapter_parameters()
        # Data-parallel: the load behind each balance update is summed over the ranks first.
        self._pending_load = model.defer_balance() if self.group.world_size > 1 else []
        self._optimizer = self._new_optimizer()
        model.eval()

    @property
    def events_seen(self) -> int:
        """Examples accepted by :meth:`learn` so far (rejected ones not counted)."""
        return int(self._stats["events_seen"])

    # ---- learning ---------------------------------------------------------------------

    def learn(self, examples: Sequence[Example]) -> StepReport:
        """Test, then train on one micro-batch of new examples (see the module docstring).

        Args:
            examples: New examples, typically ``config.batch_size`` of them.

        Returns:
            A :class:`StepReport`; invalid examples are in ``rejected``, not raised.
        """
        stats = self._stats
        accepted, rejected = [], []
        for ex in examples:
            reason = check_example(ex, self.model.config)
            if reason is None:
                accepted.append(ex)
            else:
                rejected.append((str(getattr(ex, "event_id", "?")), reason))
        stats["events_seen"] += len(accepted)
        stats["events_rejected"] += len(rejected)
        lr = stats["lr"]

        self._count_preferences(accepted)
        # Held-out feedback is tested on (drift) but never trained on: it is the rollout's
        # frozen evaluation set (cl.learning.eval_set).
        new = [ex for ex in accepted if ex.trainable and not is_held_out(ex.event_id, self.config.holdout_fraction)]
        n_replay = math.floor(self.config.replay_ratio * len(new) + 0.5) if new else 0
        # buffer.sample with keys rather than mix_batch: the keys let us refresh the losses.
        replayed = self._buffer.sample(n_replay, self._rng, return_keys=True) if n_replay else []
        batch = new + [ex for _, ex in replayed]
        # Every rank sees every rank's errors in rank order, so their detectors, drift
        # decisions and learning rates stay identical; the step averages over all rows.
        local_errors = [e for e in (ex.user_error for ex in accepted) if e is not None]
        shared = self.group.all_gather((local_errors, len(accepted), len(batch)))
        errors = [e for errs, _, _ in shared for e in errs]
        n_accepted = sum(n for _, n, _ in shared)
        n_rows = sum(n for _, _, n in shared)
        detections, actions = self._watch(errors)
        loss = float("nan")
        predicted: tuple[tuple[str, int], ...] = ()
        if n_rows:
            losses, predictions = self._step(batch, lr, n_rows)
            if batch:
                loss = float(losses.mean())
                self._remember(new, replayed, losses)
                self._score(new, predictions)
                predicted = tuple(
                    (ex.event_id, int(p)) for ex, p in zip(new, predictions.tolist()) if ex.target is not None
                )
                ema = stats["loss_ema"]
                stats["loss_ema"] = loss if ema is None else (1 - EMA) * ema + EMA * loss
            stats["steps"] += 1
        self._track_expert_load()

        if stats["boost_left"] > 0:
            stats["boost_left"] -= n_accepted
            if stats["boost_left"] <= 0:
                stats["boost_left"], stats["lr"] = 0, float(self.config.lr)
                actions.append("lr_restored")
        if detections:
            stats["drifts"] += detections
            actions += self._adapt()
        return StepReport(
            n_events=len(accepted),
            loss=loss,
            errors=errors,
            drift=detections > 0,
            actions=tuple(actions),
            lr=lr,
            events_seen=stats["events_seen"],
            rejected=tuple(rejected),
            n_replayed=len(replayed),
            n_events_all_ranks=n_accepted,
            predictions=predicted,
        )

    def _count_preferences(self, accepted: list[Example]) -> None:
        for ex in accepted:
            if ex.is_preference and ex.desirable is not None:
                self._stats["preference_events"] += 1
                self._stats["preference_positive"] += int(ex.desirable)

    def _watch(self, errors: list[int]) -> tuple[int, list[str]]:
        """Feed user errors to the window and detector; reset it on a detection if configured."""
        detections, actions = 0, []
        for err in errors:
            self._window.append(err)
            if self._detector is None:
                continue
            before = getattr(self._detector, "estimation", None)
            self._detector.update(float(err))
            if self._detector.drift_detected:
                # Two-sided detectors (ADWIN) also fire when the error rate falls; only a rise
                # is a drift worth adapting to. ADWIN has already dropped the stale part itself.
                after = getattr(self._detector, "estimation", None)
                if before is not None and after is not None and after <= before:
                    continue
                detections += 1
                if "reset" in self.config.actions:
                    self._detector.reset()
                    actions.append("reset")
        return detections, actions

    def _adapt(self) -> list[str]:
        """Apply the configured non-reset drift actions; return their names."""
        done = []
        for action in self.config.actions:
            if action == "boost_lr":
                self._stats["boost_left"] = int(self.config.boost_events)
                self._stats["lr"] = float(self.config.lr * self.config.boost_factor)
                done.append(action)
            elif action == "branch":
                self.branch_from(self.branch_source() if self.branch_source is not None else None)
                self.group.broadcast_(self._params)  # one fresh start for all ranks
                done.append(action)
        return done

    def _step(self, batch: list[Example], lr: float, n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on ``batch``, averaged over the ``n_rows`` rows of every rank;
        returns per-example losses ``(N,)`` (detached) and the pre-step classify predictions
        ``(N,)`` (-1 for lm rows). ``batch`` may be empty on a rank whose peers have rows."""
        cfg = self.model.config
        losses = torch.zeros(len(batch))  # (N,)
        predictions = torch.full((len(batch),), -1, dtype=torch.long)  # (N,)
        total = None
        try:
            for group in encode_examples(batch, cfg.max_seq_len, self.model.tokenizer):
                rows = torch.tensor(group.rows)
                group_losses, logits = self._group_losses(group)  # (B,), (B, C) | (B, T, V)
                if group.head == "classify":
                    predictions[rows] = logits.detach().argmax(-1).cpu()
                losses[rows] = group_losses.detach().float().cpu()
                total = group_losses.sum() if total is None else total + group_losses.sum()
            for param_group in self._optimizer.param_groups:
                param_group["lr"] = lr
            self._optimizer.zero_grad(set_to_none=True)
            if total is not None:
                (total / n_rows).backward()
            if self.group.world_size > 1:
                self._share_gradients()
            self._optimizer.step()
            self.group.sum_(self._pending_load)
            self.model.update_balance()  # no-op when the model balances after every forward
        finally:
            self.model.eval()
        return losses, predictions

    def _share_gradients(self) -> None:
        """Sum every rank's gradients (each already divided by the global row count)."""
        grads = []
        for p in self._params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        self.group.sum_(grads)

    def _group_losses(self, group: ModelBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row losses ``(B,)`` and policy logits of one input kind, in train mode."""
        device = self.model.device
        inputs = {"tokens": group.tokens} if group.tokens is not None else {"features": group.features}
        inputs = {k: v.to(device) for k, v in inputs.items()}
        pref = group.preference.nonzero()[:, 0].to(device)  # (P,)
        sup = (~group.preference).nonzero()[:, 0].to(device)  # (S,)
        ref_logits = None
        if len(pref) and self._preference.needs_reference:
            self.model.eval()  # the reference must not nudge the balancing bias
            with torch.no_grad(), training_autocast(device):
                ids = torch.full((len(pref),), -1, dtype=torch.long, device=device)
                rated = {k: v[pref] for k, v in inputs.items()}
                ref_logits = self.model(**rated, adapter_ids=ids, head=group.head).float()  # (P, C) | (P, T, V)
        self.model.train()
        ids = torch.full((len(group.rows),), self.slot, dtype=torch.long, device=device)
        with training_autocast(device):  # CUDA: bfloat16 matmuls, float32 adapter masters and gradients
            logits = self.model(**inputs, adapter_ids=ids, head=group.head)  # (B, C) | (B, T, V)
        logits = logits.float()  # the losses in full precision
        targets, desirable = group.targets.to(device), group.desirable.to(device)
        mask = None if group.mask is None else group.mask.to(device)

        def scored(rows: torch.Tensor, ref: torch.Tensor | None = None) -> Scored:
            if group.head == "classify":
                return score_labels(logits[rows], targets[rows], ref_logits=ref, desirable=desirable[rows])
            return score_tokens(logits[rows], targets[rows], mask[rows], ref_logits=ref, desirable=desirable[rows])

        losses = logits.new_zeros(len(group.rows), dtype=torch.float32)  # (B,)
        if len(sup):
            losses = losses.index_put((sup,), self._supervised(scored(sup)))
        if len(pref):
            losses = losses.index_put((pref,), self._preference(scored(pref, ref_logits)))
        return losses, logits

    def _remember(self, new: list[Example], replayed: list[tuple[int, Example]], losses: torch.Tensor) -> None:
        values = [v if math.isfinite(v) and v >= 0 else None for v in losses.tolist()]
        pairs = [(key, v) for (key, _), v in zip(replayed, values[len(new) :]) if v is not None]
        if pairs:
            self._buffer.update_losses([k for k, _ in pairs], [v for _, v in pairs])
        for ex, value in zip(new, values):
            self._buffer.add(ex, label=ex.replay_label, loss=value)

    def _score(self, new: list[Example], predictions: torch.Tensor) -> None:
        for ex, pred in zip(new, predictions.tolist()):
            if ex.target is not None:
                self._stats["label_events"] += 1
                self._stats["label_correct"] += int(pred == ex.target)

    def _track_expert_load(self) -> None:
        stats = self.model.expert_load_stats()
        if not any(s["tokens"] for s in stats.values()):
            return
        worst = max(float(s["max_violation"]) for s in stats.values())
        ema = self._stats["violation_ema"]
        self._stats["violation_ema"] = worst if ema is None else (1 - EMA) * ema + EMA * worst
        self.model.reset_expert_load_stats()

    # ---- adapter lifecycle ------------------------------------------------------------

    def branch_from(self, adapter_state: dict[str, torch.Tensor] | None) -> None:
        """Restart the slot from ``adapter_state`` (``None``: a fresh adapter equal to the base).

        Resets the optimizer and the drift detector; keeps the replay buffer, counters and
        any learning-rate boost. A fresh adapter's random ``A`` comes from this learner's
        generator, so it is reproducible.
        """
        if adapter_state is None:
            device = self.model.device
            devices = [device.index or 0] if device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(int(self._rng.integers(2**62)))
                self.model.reset_adapter(self.slot)
        else:
            self.model.load_adapter_state(self.slot, adapter_state)
        self._optimizer = self._new_optimizer()
        if self._detector is not None:
            self._detector.reset()

    def _new_optimizer(self) -> torch.optim.Optimizer:
        # foreach: one fused update over the adapter banks instead of a Python loop per tensor.
        return torch.optim.AdamW(self._params, lr=self._stats["lr"], weight_decay=0.0, foreach=True)

    # ---- metrics and state ------------------------------------------------------------

    def metrics(self) -> dict[str, float]:
        """Running metrics; ratios are NaN until they have data.

        Returns:
            ``events_seen``, ``events_rejected``, ``prequential_accuracy`` (model before
            training, label events), ``positive_rate`` (desirable share of thumbs / rated
            events, 3 stars left out), ``served_error_rate`` (user errors over the last
            200 events), ``loss_ema``, ``lr``, ``drifts``, ``replay_size`` and
            ``expert_max_violation`` (EMA over steps of the worst layer's max load / mean
            load - 1; the learner resets the model's load stats after each step).
        """
        s = self._stats

        def ratio(num: float, den: float) -> float:
            return num / den if den else float("nan")

        nan = float("nan")
        return {
            "events_seen": float(s["events_seen"]),
            "events_rejected": float(s["events_rejected"]),
            "prequential_accuracy": ratio(s["label_correct"], s["label_events"]),
            "positive_rate": ratio(s["preference_positive"], s["preference_events"]),
            "served_error_rate": ratio(sum(self._window), len(self._window)),
            "loss_ema": nan if s["loss_ema"] is None else float(s["loss_ema"]),
            "lr": float(s["lr"]),
            "drifts": float(s["drifts"]),
            "replay_size": float(len(self._buffer)),
            "expert_max_violation": nan if s["violation_ema"] is None else float(s["violation_ema"]),
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly: a deep copy, plain data and tensors only.

        Returns:
            ``format``, ``adapter`` (the slot's tensors), ``optimizer``, ``replay`` (examples
            as dicts), ``detector`` (or ``None``), ``stats``, ``window`` and ``rng``; tensors
            are on the CPU (float32 adapters, wherever the learner runs), and it survives
            ``torch.save`` then ``torch.load(weights_only=True)``.
        """
        replay = self._buffer.state_dict()
        replay["examples"] = [ex.to_dict() for ex in replay["examples"]]
        state = {
            "format": STATE_FORMAT,
            "adapter": cpu_state(self.model.adapter_state(self.slot)),  # float32 on the CPU, wherever it trained
            "optimizer": cpu_state(self._optimizer.state_dict()),
            "replay": replay,
            "detector": None if self._detector is None else self._detector.state_dict(),
            "stats": dict(self._stats),
            "window": list(self._window),
            "rng": self._rng.bit_generator.state,
        }
        return copy.deepcopy(state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` into this learner (same model config and learner config).

        Raises:
            ValueError: A missing part, another format, or a part that does not fit (the
                replay buffer's or detector's config differs, the adapter's shapes differ);
                the message names it.
        """
        parts = {"format", "adapter", "optimizer", "replay", "detector", "stats", "window", "rng"}
        missing = sorted(parts - set(state))
        if missing:
            raise ValueError(f"learner state is missing {missing}; pass OnlineLearner.state_dict() output")
        if state["format"] != STATE_FORMAT:
            raise ValueError(f"learner state format {state['format']!r} is unsupported; expected {STATE_FORMAT}")
        if (state["detector"] is None) != (self._detector is None):
            raise ValueError(
                f"the state {'has no' if state['detector'] is None else 'has a'} drift detector but "
                f"config.drift_detector={self.config.drift_detector!r}; use the snapshot's setting"
            )
        state = copy.deepcopy(state)
        self.model.load_adapter_state(self.slot, state["adapter"])  # checks before it writes
        replay = dict(state["replay"])
        replay["examples"] = [Example.from_dict(d) for d in replay["examples"]]
        self._buffer.load_state_dict(replay)
        if self._detector is not None:
            self._detector.load_state_dict(state["detector"])
        self._stats = {**self._stats, **state["stats"]}
        self._optimizer = self._new_optimizer()
        self._optimizer.load_state_dict(state["optimizer"])
        self._window = deque((int(e) for e in state["window"]), maxlen=ERROR_WINDOW)
        self._rng.bit_generator.state = state["rng"]
