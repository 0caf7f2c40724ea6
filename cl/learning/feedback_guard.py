"""Per-user limits on what the learner takes in, so that one user cannot steer the model.

Pure logic (no Kafka, no torch). The learner asks :meth:`FeedbackGuard.check` about every
joined (request, feedback) pair and gets a :class:`Verdict`: ``learn``, ``capped`` or
``quarantined``. Refused events go to the dead-letter topic with the verdict's reason, so
nothing accepted is lost: a retrain can replay them.

**Cap.** At most ``cap_events`` events of one user are learned per window of ``cap_window_s``
seconds (fixed windows on the learner's clock, which a client cannot forge). With several
learner workers each takes its share of the cap, since a user's events spread over them.

**Quarantine.** An event *disagrees* when it says the served output was wrong: a label other
than the served one, thumbs down, 1-2 stars, a correction; 3 stars is not judged. Each of a
user's judged events is compared with everyone *else's* disagreement rate over the last
``reference_events`` judged events at that moment, so when everyone disagrees at once (a
concept drift) nobody stands out. A user with at least ``min_events`` judged events whose
``k`` disagreements of ``n`` have a binomial upper tail ``P(X >= k | n, p)`` below ``alpha``
(``p`` the mean of those reference rates) is quarantined: all of their later events are
refused. The binomial tail at the mean rate bounds the tail for varying rates (Hoeffding,
1956), so a changing population only makes the test more cautious. A user's evidence is aged
by halving once it reaches ``2 * evidence_events``, so a slight but honest bias does not turn
significant after months of use.

Feedback without a ``user_id`` counts towards the reference rate but is never capped or
quarantined: there is nobody to blame.

Example:
    >>> import random
    >>> from cl.events import FeedbackEvent, RequestEvent
    >>> rng = random.Random(0)
    >>> guard = FeedbackGuard(cap_events=1000, cap_window_s=60, alpha=1e-6, min_events=30)
    >>> def pair(user, label):
    ...     req = RequestEvent(request_id="r", kind="predict", input={"features": [0.0]},
    ...                        output={"label": 0}, model_version="1", arm="champion")
    ...     return req, FeedbackEvent(request_id="r", label=label, user_id=user)
    >>> for i in range(300):  # honest users: the served label is wrong 20% of the time
    ...     _ = guard.check(*pair(f"u{i % 30}", int(rng.random() < 0.2)), now=float(i))
    >>> actions = [guard.check(*pair("mallory", 3), now=300.0 + i).action for i in range(40)]
    >>> actions.index("quarantined") + 1, actions[-1], guard.n_quarantined
    (30, 'quarantined', 1)
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import JsonValue

from cl.events import FeedbackEvent, RequestEvent

__all__ = ["FeedbackGuard", "Verdict", "binomial_log_tail", "disagrees"]

Action = Literal["learn", "capped", "quarantined"]


@dataclass(frozen=True)
class Verdict:
    """What to do with one event, and why (for the dead letter)."""

    action: Action
    reason: str = ""
    announce: dict[str, JsonValue] | None = None  # the ``user_quarantined`` payload, on the event that tipped it


LEARN = Verdict("learn")


def disagrees(request: RequestEvent, feedback: FeedbackEvent) -> bool | None:
    """Whether ``feedback`` says the served output was wrong; None when it does not judge it."""
    if feedback.label is not None:
        served = request.output.label
        return None if served is None else feedback.label != served
    if feedback.correction is not None:
        return feedback.correction != request.output.text
    desirable = feedback.desirable  # thumbs and stars; None for 3 stars
    return None if desirable is None else not desirable


_LOG_FACT = np.zeros(1)  # log i! for i = 0..len-1, grown on demand


def _log_factorials(n: int) -> np.ndarray:
    global _LOG_FACT
    if len(_LOG_FACT) <= n:
        _LOG_FACT = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, 2 * n + 2)))])
    return _LOG_FACT


def binomial_log_tail(k: int, n: int, p: float) -> float:
    """``log P(X >= k)`` for ``X ~ Binomial(n, p)``, summed in log space (tiny tails do not underflow).

    Example:
        >>> round(math.exp(binomial_log_tail(40, 40, 0.2)) / 0.2**40, 6)
        1.0
    """
    if k <= 0 or p >= 1.0:
        return 0.0
    if k > n or p <= 0.0:
        return -math.inf
    log_fact = _log_factorials(n)
    i = np.arange(k, n + 1)
    terms = log_fact[n] - log_fact[i] - log_fact[n - i] + i * math.log(p) + (n - i) * math.log1p(-p)
    top = terms.max()
    return float(top + math.log(np.exp(terms - top).sum()))


@dataclass
class _User:
    n: int = 0  # judged events (aged)
    k: int = 0  # of them, disagreements
    p_sum: float = 0.0  # sum of the others' rate at each judged event
    window: int = -1  # index of the cap window the count is for
    in_window: int = 0  # events learned in that window


class FeedbackGuard:
    """Caps and quarantine per ``user_id``; see the module docstring.

    Args:
        cap_events: Events of one user learned per window (``learner.user_cap_events``).
        cap_window_s: The window, seconds (``learner.user_cap_window_s``).
        alpha: Quarantine when the disagreement is this unlikely by chance (``learner.quarantine_alpha``).
        min_events: Judged events of a user before quarantine may apply (``learner.quarantine_min_events``).
        workers: Learner workers sharing the stream; each learns ``ceil(cap_events / workers)``.
        reference_events: How many recent judged events the others' rate is taken over.
        evidence_events: Roughly how many of a user's judged events the test looks back over.
        max_users: Users remembered (least recently seen forgotten first); as many quarantined.
    """

    def __init__(
        self,
        cap_events: int = 200,
        cap_window_s: float = 60.0,
        alpha: float = 1e-6,
        min_events: int = 30,
        *,
        workers: int = 1,
        reference_events: int = 200,
        evidence_events: int = 500,
        max_users: int = 100_000,
    ) -> None:
        self.cap_events = cap_events
        self.cap_window_s = cap_window_s
        self.alpha = alpha
        self.min_events = min_events
        self.workers = workers
        self.reference_events = reference_events
        self.evidence_events = evidence_events
        self.max_users = max_users
        self._cap = -(-cap_events // workers)
        self._users: OrderedDict[str, _User] = OrderedDict()
        self._quarantined: OrderedDict[str, dict[str, JsonValue]] = OrderedDict()
        self._reference: deque[tuple[str | None, bool]] = deque()
        self._ref_n = self._ref_k = 0
        self._ref_by_user: dict[str | None, list[int]] = {}  # user -> [n, k] inside the reference window
        self.counts = {"capped": 0, "quarantined": 0}

    @classmethod
    def from_config(cls, learner: Any, workers: int = 1) -> FeedbackGuard:
        """The guard a :class:`cl.config.LearnerConfig` asks for."""
        return cls(
            learner.user_cap_events,
            learner.user_cap_window_s,
            learner.quarantine_alpha,
            learner.quarantine_min_events,
            workers=workers,
        )

    @property
    def n_quarantined(self) -> int:
        return len(self._quarantined)

    def is_quarantined(self, user_id: str) -> bool:
        return user_id in self._quarantined

    # -- deciding -------------------------------------------------------------------------------

    def check(self, request: RequestEvent, feedback: FeedbackEvent, *, now: float) -> Verdict:
        """Judge one joined pair and say whether to learn it.

        Args:
            request: The served request the feedback rates.
            feedback: The feedback.
            now: The learner's clock, unix seconds (the cap windows run on it).
        """
        user = feedback.user_id
        if user is not None and user in self._quarantined:
            self.counts["quarantined"] += 1
            return Verdict("quarantined", self._quarantine_reason(user))
        judged = disagrees(request, feedback)
        if judged is not None and self._judge(user, judged):
            self.counts["quarantined"] += 1
            return Verdict("quarantined", self._quarantine_reason(user), announce=dict(self._quarantined[user]))
        if user is None:
            return LEARN
        stats = self._user(user)
        window = int(now // self.cap_window_s)
        if stats.window != window:
            stats.window, stats.in_window = window, 0
        if stats.in_window >= self._cap:
            self.counts["capped"] += 1
            return Verdict("capped", self._cap_reason(user))
        stats.in_window += 1
        return LEARN

    def _user(self, user: str) -> _User:
        stats = self._users.get(user)
        if stats is None:
            stats = self._users[user] = _User()
            while len(self._users) > self.max_users:
                self._users.popitem(last=False)
        self._users.move_to_end(user)
        return stats

    def _judge(self, user: str | None, disagreed: bool) -> bool:
        """Add one judged event; True when it tips ``user`` into quarantine."""
        stats = None
        mine = self._ref_by_user.get(user, [0, 0]) if user is not None else [0, 0]
        others_n, others_k = self._ref_n - mine[0], self._ref_k - mine[1]
        if user is not None and others_n >= self.min_events:
            stats = self._user(user)
            stats.n += 1
            stats.k += disagreed
            stats.p_sum += (others_k + 1) / (others_n + 2)  # smoothed: never exactly 0 or 1
            if stats.n >= 2 * self.evidence_events:
                stats.n, stats.k, stats.p_sum = stats.n // 2, stats.k // 2, stats.p_sum / 2
        self._remember(user, disagreed)
        if stats is None or stats.n < self.min_events:
            return False
        others_rate = stats.p_sum / stats.n
        if stats.k <= stats.n * others_rate:
            return False
        log_p = binomial_log_tail(stats.k, stats.n, others_rate)
        if log_p >= math.log(self.alpha):
            return False
        self._quarantined[user] = {
            "user_id": user,
            "events": stats.n,
            "disagreements": stats.k,
            "others_rate": round(others_rate, 6),
            "p_value": math.exp(log_p),
        }
        while len(self._quarantined) > self.max_users:
            self._quarantined.popitem(last=False)
        self._users.pop(user, None)
        return True

    def _remember(self, user: str | None, disagreed: bool) -> None:
        """Slide the reference window over one more judged event."""
        self._reference.append((user, disagreed))
        self._ref_n += 1
        self._ref_k += disagreed
        counts = self._ref_by_user.setdefault(user, [0, 0])
        counts[0] += 1
        counts[1] += disagreed
        while len(self._reference) > self.reference_events:
            old_user, old = self._reference.popleft()
            self._ref_n -= 1
            self._ref_k -= old
            counts = self._ref_by_user[old_user]
            counts[0] -= 1
            counts[1] -= old
            if counts[0] == 0:
                del self._ref_by_user[old_user]

    def _cap_reason(self, user: str) -> str:
        split = f", split over {self.workers} learner workers" if self.workers > 1 else ""
        return (
            f"user {user!r} sent more than {self._cap} events in {self.cap_window_s:g} s "
            f"(learner.user_cap_events={self.cap_events} per learner.user_cap_window_s{split}); "
            "not learned, kept here so a retrain can replay them"
        )

    def _quarantine_reason(self, user: str) -> str:
        q = self._quarantined[user]
        return (
            f"user {user!r} is quarantined: {q['disagreements']} of {q['events']} judged events said the "
            f"served output was wrong, against {float(q['others_rate']):.1%} for everyone else (p-value "
            f"{float(q['p_value']):.2g} < learner.quarantine_alpha={self.alpha:g}); their feedback is not "
            "learned. Review it; a retrain can replay it if it was honest"
        )

    # -- resuming -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything the guard knows, as plain data (``torch.load(weights_only=True)`` reads it)."""
        return {
            "users": [[u, s.n, s.k, s.p_sum, s.window, s.in_window] for u, s in self._users.items()],
            "quarantined": [dict(q) for q in self._quarantined.values()],
            "reference": [[u, bool(d)] for u, d in self._reference],
            "counts": dict(self.counts),
        }

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`state_dict`; None (a snapshot from before the guard) means a fresh guard."""
        state = state or {}
        self._users = OrderedDict(
            (u, _User(int(n), int(k), float(p), int(w), int(c))) for u, n, k, p, w, c in state.get("users", [])
        )
        self._quarantined = OrderedDict((q["user_id"], dict(q)) for q in state.get("quarantined", []))
        self._reference.clear()
        self._ref_n = self._ref_k = 0
        self._ref_by_user = {}
        for user, disagreed in state.get("reference", []):
            self._remember(user, bool(disagreed))
        self.counts = {"capped": 0, "quarantined": 0, **state.get("counts", {})}

    @staticmethod
    def merge_states(states: list[dict[str, Any] | None]) -> dict[str, Any]:
        """One state from several workers' (for a restart with another number of workers):
        per-user evidence and window counts summed, quarantines united, references joined."""
        users: dict[str, list] = {}
        for state in filter(None, states):
            for u, n, k, p, w, c in state.get("users", []):
                old = users.get(u)
                if old is None:
                    users[u] = [u, n, k, p, w, c]
                else:
                    same = old[4] == w
                    users[u] = [
                        u,
                        old[1] + n,
                        old[2] + k,
                        old[3] + p,
                        max(old[4], w),
                        old[5] + c if same else (c if w > old[4] else old[5]),
                    ]
        quarantined = {q["user_id"]: q for state in filter(None, states) for q in state.get("quarantined", [])}
        counts: dict[str, int] = {}
        for state in filter(None, states):
            for name, value in state.get("counts", {}).items():
                counts[name] = counts.get(name, 0) + int(value)
        return {
            "users": list(users.values()),
            "quarantined": list(quarantined.values()),
            "reference": [entry for state in filter(None, states) for entry in state.get("reference", [])],
            "counts": counts,
        }
