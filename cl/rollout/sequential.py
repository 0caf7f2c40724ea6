"""The always-valid sequential test: a mixture SPRT on the difference of two Bernoulli rates."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Comparison:
    """One look at the challenger against the champion (rates of good outcomes, 1 = good).

    ``lower``/``upper`` bound ``rate_challenger - rate_champion``; the bounds hold at every
    look at once (a confidence sequence), so they may be checked after every event.
    """

    n_champion: int
    n_challenger: int
    rate_champion: float
    rate_challenger: float
    diff: float  # rate_challenger - rate_champion
    lower: float
    upper: float
    log_lr: float  # log of the mixture likelihood ratio against "no difference"
    p_value: float  # 1 / likelihood ratio at this look, capped at 1; take the running minimum

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MixtureSPRT:
    """Mixture sequential probability ratio test (mSPRT) of two Bernoulli rates.

    The test of Johari et al., "Always valid inference" (2017), as Optimizely runs it:
    the rate difference ``d = p_challenger - p_champion`` is estimated by the difference of
    the observed rates, whose variance is ``V = p_a (1 - p_a) / n_a + p_b (1 - p_b) / n_b``
    (rates smoothed as ``(good + 1) / (n + 2)`` so that a run of all-good or all-bad
    outcomes does not make ``V`` zero). Averaging the normal likelihood ratio of ``d``
    against ``d = 0`` over a normal prior ``N(0, mixing_sd**2)`` on ``d`` gives

    ``LR = sqrt(V / (V + t)) * exp(d**2 * t / (2 V (V + t)))`` with ``t = mixing_sd**2``,

    a martingale under "no difference", so ``P(LR ever >= 1/alpha) <= alpha`` however
    often it is looked at (Ville's inequality). Inverting it for every ``d`` gives the
    confidence sequence ``diff +- r`` with
    ``r = sqrt(V (V + t) / t * (ln((V + t) / V) + 2 ln(1 / alpha)))``, which covers the true
    difference at all looks at once with probability ``1 - alpha`` (each side fails with
    about ``alpha / 2``). The guarantee rests on the normal approximation, so a caller
    should wait for a few dozen events per arm before acting on it.

    ``mixing_sd`` tunes where the test is most sensitive: near differences of about that
    size. Smaller values tighten the bounds late, larger ones react faster to big gaps.

    Args:
        alpha: Level: the chance the sequence ever misses the true difference.
        mixing_sd: Standard deviation of the normal mixing distribution over ``d``.

    Example:
        A challenger that is 20 points worse, seen in 10% of the traffic:

        >>> import random
        >>> rng = random.Random(7)
        >>> test = MixtureSPRT(alpha=0.01, mixing_sd=0.1)
        >>> counts = {"champion": [0, 0], "challenger": [0, 0]}  # [good, n]
        >>> for event in range(1, 5001):
        ...     arm, rate = ("challenger", 0.4) if rng.random() < 0.1 else ("champion", 0.6)
        ...     counts[arm][0] += rng.random() < rate
        ...     counts[arm][1] += 1
        ...     look = test.compare(*counts["champion"], *counts["challenger"])
        ...     if look is not None and look.upper < 0:
        ...         break
        >>> look.n_challenger, round(look.diff, 3), round(look.upper, 3), look.p_value < 0.01
        (69, -0.242, -0.003, True)
    """

    alpha: float = 0.01
    mixing_sd: float = 0.1

    def __post_init__(self) -> None:
        problems = []
        if not 0 < self.alpha < 1:
            problems.append(f"alpha must be in (0, 1), got {self.alpha!r} (e.g. 0.01)")
        if not self.mixing_sd > 0:
            problems.append(f"mixing_sd must be positive, got {self.mixing_sd!r} (e.g. 0.1)")
        if problems:
            raise ValueError("; ".join(problems))
        object.__setattr__(self, "_tau2", self.mixing_sd * self.mixing_sd)
        object.__setattr__(self, "_two_log_alpha", 2 * math.log(1 / self.alpha))

    def compare(
        self, champion_good: int, champion_n: int, challenger_good: int, challenger_n: int
    ) -> Comparison | None:
        """Look once at the counts so far; None until both arms have an event.

        Args:
            champion_good: Good outcomes of the champion.
            champion_n: Rated events of the champion.
            challenger_good: Good outcomes of the challenger.
            challenger_n: Rated events of the challenger.

        Returns:
            The comparison at this look, or None if an arm has no events yet.

        Raises:
            ValueError: If a count is negative or ``good`` exceeds ``n``.
        """
        for name, good, n in (("champion", champion_good, champion_n), ("challenger", challenger_good, challenger_n)):
            if n < 0 or not 0 <= good <= n:
                raise ValueError(f"{name}: counts good={good}, n={n} are impossible; need 0 <= good <= n")
        if champion_n == 0 or challenger_n == 0:
            return None
        diff, radius, log_lr = self.bounds(champion_good, champion_n, challenger_good, challenger_n)
        return Comparison(
            n_champion=champion_n,
            n_challenger=challenger_n,
            rate_champion=champion_good / champion_n,
            rate_challenger=challenger_good / challenger_n,
            diff=diff,
            lower=diff - radius,
            upper=diff + radius,
            log_lr=log_lr,
            p_value=math.exp(-log_lr) if log_lr > 0 else 1.0,
        )

    def bounds(
        self, champion_good: int, champion_n: int, challenger_good: int, challenger_n: int
    ) -> tuple[float, float, float]:
        """The fast path of :meth:`compare` (no checks; both ``n`` positive): ``(diff, radius, log_lr)``."""
        pa = (champion_good + 1) / (champion_n + 2)
        pb = (challenger_good + 1) / (challenger_n + 2)
        var = pa * (1 - pa) / champion_n + pb * (1 - pb) / challenger_n
        tau2 = self._tau2
        diff = challenger_good / challenger_n - champion_good / champion_n
        log_ratio = math.log((var + tau2) / var)
        scale = var * (var + tau2) / tau2
        log_lr = diff * diff / (2 * scale) - 0.5 * log_ratio
        radius = math.sqrt(scale * (log_ratio + self._two_log_alpha))
        return diff, radius, log_lr
