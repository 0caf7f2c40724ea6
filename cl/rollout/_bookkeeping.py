"""What every rollout policy shares: arms, traffic, observations, guards, decisions and state.

A policy subclass adds only how rated outcomes are judged (``_judge``) and, if it needs
them, hooks on each rating and each step change. Manual actions live in ``_manual.py``,
the champion history in ``_champions.py``. Internal: use the classes in ``cl.rollout``.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict
from typing import Any, ClassVar, Mapping, Sequence

from cl.config import ConfigError, RolloutConfig
from cl.rollout._arms import ACTIVE, PROMOTED, RETIRED, ROLLED_BACK, ArmStats, Challenger, check_version
from cl.rollout._champions import ChampionHistory
from cl.rollout._manual import ManualActions
from cl.rollout.assignment import StickyAssigner
from cl.rollout.decision import Decision

STATE_FORMAT = 1

Verdict = tuple[str, str, dict[str, Any]]  # (rollback | pass | blocked, reason, evidence)


class RolloutBase(ManualActions):
    """Bookkeeping for a champion and its challengers; see :class:`cl.rollout.CanaryPolicy`."""

    kind: ClassVar[str] = ""
    _looks_on_clock = False  # whether decide() must look even when nothing was observed

    def __init__(
        self, champion: str, config: RolloutConfig | None = None, *, rng: random.Random | None = None, now: float = 0.0
    ) -> None:
        config = RolloutConfig() if config is None else config
        problems = config.problems()
        if problems:
            raise ConfigError(problems)
        check_version("champion", champion)
        self.config = config
        self._steps = config.steps
        self._rng = rng if rng is not None else random.Random(0)
        self._champions = ChampionHistory(champion, now)
        self._eval: dict[str, float] = {}
        self._seq = 0
        self._rollout_id: str | None = None
        self._started_at = 0.0
        self._champion_stats = ArmStats()
        self._challengers: dict[str, Challenger] = {}
        self._assigner = self._idle_assigner()
        self._dirty = False

    # ---- what is served -------------------------------------------------------------

    @property
    def champion(self) -> str:
        return self._champions.current

    @property
    def _champion(self) -> str:
        return self._champions.current

    @property
    def challengers(self) -> tuple[str, ...]:
        """Active challengers of the rollout in progress (those rolled back are not listed)."""
        return tuple(v for v, c in self._challengers.items() if c.status == ACTIVE)

    @property
    def active(self) -> bool:
        """Whether a rollout is in progress."""
        return self._rollout_id is not None

    @property
    def rollout_id(self) -> str | None:
        return self._rollout_id

    @property
    def weights(self) -> dict[str, float]:
        """Traffic share per version; rolled-back challengers show 0."""
        return self._assigner.weights

    @property
    def history(self) -> list[dict[str, Any]]:
        """Champion changes, oldest first: ``{version, since, action, reason}``."""
        return [dict(h) for h in self._champions.log]

    @property
    def eval_scores(self) -> dict[str, float]:
        """Frozen-eval-set score per version (higher is better), as observed."""
        return dict(self._eval)

    def role(self, version: str) -> str | None:
        """``"champion"``, ``"challenger"`` (active) or None: the ``arm`` to log with a request."""
        if version == self._champion:
            return "champion"
        c = self._challengers.get(version)
        return "challenger" if c is not None and c.status == ACTIVE else None

    def assign(self, user_id: str | None = None) -> str:
        """The version that serves this user (sticky for the rollout) or this anonymous request."""
        return self._assigner.assign(user_id)

    # ---- the rollout ----------------------------------------------------------------

    def start(
        self, challengers: str | Sequence[str], *, now: float, rollout_id: str | None = None, replace: bool = False
    ) -> list[Decision]:
        """Begin a rollout: each challenger gets the first canary share (split evenly among them).

        Args:
            challengers: One version, or several for an A/B/n rollout.
            now: The caller's clock.
            rollout_id: Names the rollout (users are shuffled per rollout); default ``r<n>-<champion>-vs-<versions>``.
            replace: End a rollout in progress first (its challengers are retired).

        Returns:
            The decisions: retirements (with ``replace``), then ``start``.

        Raises:
            ValueError: If a rollout is in progress (without ``replace``), or a version is
                empty, repeated or the champion.
        """
        versions = [challengers] if isinstance(challengers, str) else list(challengers)
        if rollout_id is not None:
            check_version("rollout_id", rollout_id)
        if not versions:
            raise ValueError("challengers: none given; name at least one version to roll out")
        for v in versions:
            check_version("challengers", v)
        if len(set(versions)) != len(versions) or self._champion in versions:
            raise ValueError(
                f"challengers: {versions} must be distinct and differ from the champion {self._champion!r}"
            )
        out: list[Decision] = []
        if self.active:
            if not replace:
                raise ValueError(
                    f"rollout {self._rollout_id!r} is in progress (challengers {list(self.challengers)}); "
                    "end it with promote() or rollback(), or pass replace=True"
                )
            out += self._retire_all(now, f"superseded by a rollout of {', '.join(versions)}")
            self._end_rollout()
        self._seq += 1
        self._rollout_id = rollout_id or f"r{self._seq}-{self._champion}-vs-{'+'.join(versions)}"
        self._started_at = float(now)
        self._champion_stats = ArmStats()
        self._challengers = {v: Challenger(v, slot=i) for i, v in enumerate(versions)}
        self._assigner = StickyAssigner(
            self._rollout_id, self._champion, versions, memory=self.config.memory_users, rng=self._rng
        )
        for c in self._challengers.values():
            c.weight = self._steps[0] / len(versions)
            self._on_step(c)
        self._apply_weights()
        missing = [v for v in (self._champion, *versions) if v not in self._eval]
        reason = f"rollout of {', '.join(versions)} against champion {self._champion}: canary steps {list(self._steps)}"
        if missing:
            reason += f"; eval scores needed before promotion for {', '.join(missing)}"
        evidence = {"challengers": versions, "steps": list(self._steps), "needs_evaluation": missing}
        out.append(self._record("start", ",".join(versions), reason, now, evidence))
        return out

    def observe(self, version: str, good: bool | int, *, negative: bool | None = None) -> bool:
        """One rated outcome of a request ``version`` served (1 = good).

        Args:
            version: The version that served the rated request.
            good: Whether the outcome was good (a positive rating, a correct label).
            negative: Whether it was explicitly negative (thumbs down, 1-2 stars); default:
                ``not good``. A neutral rating (3 stars) is ``good=False, negative=False``.

        Returns:
            Whether it counted: False outside a rollout, for rolled-back challengers and for
            versions not in the rollout (late ratings are normal, not errors).

        Raises:
            ValueError: If ``good`` is not a boolean or 0/1.
        """
        if good not in (0, 1):
            raise ValueError(f"good: {good!r} is not an outcome; use True/False or 1/0 (1 = good)")
        if self._rollout_id is None:
            return False
        bad_is_negative = (not good) if negative is None else bool(negative)
        if version == self._champion:
            stats = self._champion_stats
            challenger = None
        else:
            challenger = self._challengers.get(version)
            if challenger is None or challenger.status != ACTIVE:
                return False
            stats = challenger.stats
            challenger.step_rated += 1
        stats.rated += 1
        stats.good += bool(good)
        stats.negative += bad_is_negative
        self._on_rating(challenger, bool(good))
        self._dirty = True
        return True

    def observe_requests(self, version: str, requests: int = 1, errors: int = 0) -> bool:
        """Served requests of ``version`` and how many failed (counts may be aggregated).

        Returns:
            Whether they counted (see :meth:`observe`).

        Raises:
            ValueError: Unless ``0 <= errors <= requests``.
        """
        if not (isinstance(requests, int) and isinstance(errors, int) and 0 <= errors <= requests):
            raise ValueError(f"requests={requests!r}, errors={errors!r}: need integers with 0 <= errors <= requests")
        if self._rollout_id is None:
            return False
        if version == self._champion:
            stats = self._champion_stats
        else:
            c = self._challengers.get(version)
            if c is None or c.status != ACTIVE:
                return False
            stats = c.stats
        stats.requests += requests
        stats.errors += errors
        self._dirty = True
        return True

    def observe_eval(self, version: str, score: float) -> None:
        """The score of ``version`` on the frozen evaluation set (higher is better); the latest wins.

        Raises:
            ValueError: If ``score`` is not a finite number.
        """
        check_version("version", version)
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise ValueError(f"score: {score!r} is not a finite number; observe_eval() takes the eval-set score")
        self._eval[version] = float(score)
        self._dirty = True

    def decide(self, now: float) -> list[Decision]:
        """Judge every active challenger on what was observed; act, and say what was done.

        Cheap when nothing new was observed, so it may be called after every event.

        Returns:
            The decisions taken (advance, promote, rollback, retire, blocked, needs_evaluation),
            oldest first; empty when nothing changed. It never returns ``hold``: see :meth:`explain`.
        """
        if self._rollout_id is None or not (self._dirty or self._looks_on_clock):
            return []
        self._dirty = False
        out: list[Decision] = []
        for c in list(self._challengers.values()):
            if c.status != ACTIVE or self._rollout_id is None:
                continue
            verdict = self._guard(c) or self._judge(c, now)
            if verdict is not None:
                out += self._apply(c, verdict, now)
        if out and self._rollout_id is not None and not self.challengers:
            self._end_rollout()
        return out

    def explain(self, now: float) -> list[Decision]:
        """Where each active challenger stands, as ``hold`` records (nothing is changed)."""
        if self._rollout_id is None:
            return [self._record("hold", self._champion, "no rollout in progress", now, {})]
        return [
            self._record(
                "hold",
                c.version,
                f"{c.version} at step {c.step + 1}/{len(self._steps)}: waiting for evidence",
                now,
                self._evidence(c),
            )
            for c in self._challengers.values()
            if c.status == ACTIVE
        ]

    # ---- state ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The whole state as JSON-able values; ``from_dict`` rebuilds an identical policy."""
        return {
            "kind": self.kind,
            "format": STATE_FORMAT,
            "config": asdict(self.config),
            "options": self._options(),
            "champion": self._champion,
            "champions": self._champions.to_dict(),
            "eval": dict(self._eval),
            "seq": self._seq,
            "rollout_id": self._rollout_id,
            "started_at": self._started_at,
            "champion_stats": asdict(self._champion_stats),
            "challengers": [c.to_dict() for c in self._challengers.values()],
            "assigner": self._assigner.to_dict(),
            "dirty": self._dirty,
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]):
        """Rebuild a policy from ``to_dict()`` output (e.g. after an actor restart).

        Raises:
            ValueError: If the state is from another kind of policy or an unknown format.
        """
        if state.get("kind") != cls.kind:
            raise ValueError(
                f"state is for a {state.get('kind')!r} policy, not {cls.kind!r}; use that class's from_dict"
            )
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"state format {state.get('format')!r} is unsupported; expected {STATE_FORMAT}")
        out = cls(state["champion"], RolloutConfig(**state["config"]), **state["options"])
        out._champions = ChampionHistory.from_dict(state["champions"])
        out._eval = {k: float(v) for k, v in state["eval"].items()}
        out._seq = int(state["seq"])
        out._rollout_id = state["rollout_id"]
        out._started_at = float(state["started_at"])
        out._champion_stats = ArmStats(**state["champion_stats"])
        out._challengers = {c["version"]: Challenger.from_dict(c) for c in state["challengers"]}
        out._assigner = StickyAssigner.from_dict(state["assigner"])
        out._rng = out._assigner._rng
        out._dirty = bool(state["dirty"])
        return out

    # ---- for subclasses -------------------------------------------------------------

    def _judge(self, c: Challenger, now: float) -> Verdict | None:
        """Judge ``c`` on rated outcomes: ``("rollback" | "pass" | "blocked", reason, evidence)`` or None to hold."""
        raise NotImplementedError

    def _on_rating(self, challenger: Challenger | None, good: bool) -> None:
        """Called after each counted rating; ``challenger`` is None for the champion's."""

    def _on_step(self, c: Challenger) -> None:
        """Called when ``c`` starts a canary step (its first included)."""

    def _options(self) -> dict[str, Any]:
        """Constructor keyword arguments beyond champion and config, JSON-able."""
        return {}

    def _evidence(self, c: Challenger) -> dict[str, Any]:
        """Counts and thresholds for ``c``'s records; subclasses add their statistics."""
        return {
            "step": c.step + 1,
            "steps": len(self._steps),
            "share": self._steps[c.step],
            "step_rated": c.step_rated,
            "min_step_events": self.config.min_step_events,
            "challenger": c.stats.summary(),
            "champion": self._champion_stats.summary(),
        }

    # ---- internals ------------------------------------------------------------------

    def _guard(self, c: Challenger) -> Verdict | None:
        """Rules that apply to every policy: serving errors and forgetting."""
        cfg, s = self.config, c.stats
        if s.requests >= cfg.error_min_requests and s.errors > cfg.max_error_rate * s.requests:
            return (
                "rollback",
                f"serving error rate {s.error_rate:.1%} exceeds {cfg.max_error_rate:.1%} over {s.requests} requests",
                {
                    "rule": "error_rate",
                    "max_error_rate": cfg.max_error_rate,
                    "error_min_requests": cfg.error_min_requests,
                },
            )
        drop = self._eval_drop(c.version) if self._eval else None
        if drop is not None and drop > cfg.forgetting_max_drop:
            return (
                "rollback",
                f"promotion blocked by the forgetting guard: eval score {self._eval[c.version]:.4g} is "
                f"{drop:.4g} below the champion's {self._eval[self._champion]:.4g} (bound {cfg.forgetting_max_drop:g})",
                {"rule": "forgetting", "eval": self._eval_evidence(c.version)},
            )
        return None

    def _apply(self, c: Challenger, verdict: Verdict, now: float) -> list[Decision]:
        action, reason, evidence = verdict
        if action == "rollback":
            c.status, c.weight = ROLLED_BACK, 0.0
            self._apply_weights()
            return [self._record("rollback", c.version, reason, now, {**evidence, **self._evidence(c)})]
        if action == "blocked":
            return self._notice(c, "blocked", reason, now, evidence)
        cfg, s = self.config, c.stats
        if s.error_rate > cfg.max_error_rate:  # too few requests to roll back on, too many errors to advance
            return self._notice(
                c,
                "blocked",
                f"step due but serving error rate {s.error_rate:.1%} exceeds "
                f"{cfg.max_error_rate:.1%} ({s.requests} requests, {cfg.error_min_requests} needed to "
                "roll back)",
                now,
                {"rule": "error_rate", **evidence},
            )
        if c.step + 1 < len(self._steps):
            c.step += 1
            c.step_rated = 0
            c.notice = ""
            c.weight = self._steps[c.step] / len(self._challengers)
            self._apply_weights()
            self._on_step(c)
            return [
                self._record(
                    "advance", c.version, f"{reason}; share -> {c.weight:g}", now, {**evidence, **self._evidence(c)}
                )
            ]
        missing = [v for v in (self._champion, c.version) if v not in self._eval]
        if missing:
            return self._notice(
                c,
                "needs_evaluation",
                f"promotion due; compute the eval-set score of {', '.join(missing)} and call observe_eval()",
                now,
                {**evidence, "needs_evaluation": missing},
            )
        return self._change_champion(
            c.version,
            "promote",
            f"{reason}; passed the last canary step",
            now,
            {**evidence, **self._evidence(c), "eval": self._eval_evidence(c.version)},
        )

    def _notice(self, c: Challenger, action: str, reason: str, now: float, evidence: dict[str, Any]) -> list[Decision]:
        key = f"{action}:{c.step}:{evidence.get('rule', '')}"
        if c.notice == key:
            return []
        c.notice = key
        return [self._record(action, c.version, reason, now, {**evidence, **self._evidence(c)})]

    def _change_champion(
        self, version: str, action: str, reason: str, now: float, evidence: dict[str, Any]
    ) -> list[Decision]:
        out: list[Decision] = []
        if self.active:
            if version in self._challengers:
                self._challengers[version].status = PROMOTED
            why = f"{version} became the champion" if action == "promote" else f"champion rolled back to {version}"
            out += self._retire_all(now, why)
        old = self._champions.change(version, action, reason, now)
        rollout_id = self._rollout_id
        self._end_rollout()
        evidence = {**evidence, "previous_champion": old, "weights": self.weights}
        out.append(Decision(action, version, reason, evidence, float(now), rollout_id))
        return out

    def _retire_all(self, now: float, reason: str) -> list[Decision]:
        out = []
        for c in self._challengers.values():
            if c.status == ACTIVE:
                c.status, c.weight = RETIRED, 0.0
                self._apply_weights()
                out.append(self._record("retire", c.version, reason, now, self._evidence(c)))
        return out

    def _end_rollout(self) -> None:
        self._rollout_id = None
        self._challengers = {}
        self._champion_stats = ArmStats()
        self._assigner = self._idle_assigner()
        self._dirty = False

    def _idle_assigner(self) -> StickyAssigner:
        return StickyAssigner(f"idle-{self._champion}", self._champion, memory=0, rng=self._rng)

    def _apply_weights(self) -> None:
        shares = {c.version: c.weight for c in self._challengers.values()}
        shares[self._champion] = max(0.0, 1.0 - sum(shares.values()))
        self._assigner.set_weights(shares)

    def _eval_drop(self, version: str) -> float | None:
        if version in self._eval and self._champion in self._eval:
            return self._eval[self._champion] - self._eval[version]
        return None

    def _eval_evidence(self, version: str) -> dict[str, Any]:
        return {
            "challenger": self._eval.get(version),
            "champion": self._eval.get(self._champion),
            "max_drop": self.config.forgetting_max_drop,
        }

    def _record(self, action: str, version: str, reason: str, now: float, evidence: dict[str, Any]) -> Decision:
        return Decision(action, version, reason, {**evidence, "weights": self.weights}, float(now), self._rollout_id)
