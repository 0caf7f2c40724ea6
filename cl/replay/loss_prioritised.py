"""Loss-prioritised replay: replay what the model still gets wrong."""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

import numpy as np

from cl.replay._storage import SlotStore, check_loss

EVICTION_POLICIES = ("lowest_loss", "oldest")


class LossPrioritisedBuffer(SlotStore):
    """Sample stored examples with probability proportional to ``(loss + epsilon) ** alpha``.

    As in prioritised experience replay (Schaul et al., 2016), examples the model
    handles badly are replayed more often. The learner reports fresh losses with
    ``update_losses`` after each step, so an example that has been learned loses
    its priority. An example added without a loss gets the highest loss stored
    (1.0 in an empty buffer), so it is replayed soon and then scored.

    Eviction once full (``evict``):

    - ``"lowest_loss"`` (default): the buffer keeps the ``capacity`` highest-loss
      examples. A newcomer whose loss is below every stored loss is not stored;
      otherwise it replaces the lowest-loss example (the oldest among ties). This
      keeps hard examples around long, but mislabelled feedback keeps a high loss
      for ever and can crowd the buffer; keep ``update_losses`` flowing and prefer
      ``"oldest"`` when labels are noisy.
    - ``"oldest"``: a first-in-first-out window of the latest ``capacity``
      examples, as in the original PER; prioritisation then only shapes sampling.

    Args:
        capacity: The most examples held at once, ``>= 1``.
        seed: Seed of the buffer's own generator (unused by the rules above, kept
            for a uniform constructor and future tie-breaking).
        alpha: How strongly loss shapes sampling, ``>= 0``; ``0`` is uniform.
        evict: ``"lowest_loss"`` or ``"oldest"``, see above.
        epsilon: Added to every loss so zero-loss examples can still be drawn, ``> 0``.

    Example:
        >>> import numpy as np
        >>> from cl.replay import LossPrioritisedBuffer
        >>> buf = LossPrioritisedBuffer(capacity=4, seed=0, alpha=1.0)
        >>> for name, loss in [("easy", 0.01), ("hard", 3.0), ("ok", 0.5), ("meh", 0.2), ("new", None)]:
        ...     buf.add({"name": name}, loss=loss)
        >>> sorted(ex["name"] for ex in buf.sample(4, np.random.default_rng(0)))  # "easy" was evicted
        ['hard', 'meh', 'new', 'ok']
        >>> rng = np.random.default_rng(1)
        >>> draws = [buf.sample(1, rng)[0]["name"] for _ in range(1000)]
        >>> draws.count("hard") > draws.count("ok") > draws.count("meh")
        True
    """

    kind = "loss_prioritised"

    def __init__(
        self,
        capacity: int,
        seed: int | None = None,
        alpha: float = 0.6,
        evict: str = "lowest_loss",
        epsilon: float = 1e-6,
    ) -> None:
        problems = []
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha < 0:
            problems.append(f"alpha must be a finite number >= 0 (0 = uniform sampling), got {alpha!r}")
        if evict not in EVICTION_POLICIES:
            problems.append(f"evict must be one of {', '.join(map(repr, EVICTION_POLICIES))}, got {evict!r}")
        if (
            isinstance(epsilon, bool)
            or not isinstance(epsilon, (int, float))
            or not math.isfinite(epsilon)
            or epsilon <= 0
        ):
            problems.append(f"epsilon must be a finite number > 0, got {epsilon!r}")
        if problems:
            raise ValueError("; ".join(problems))
        self.seed = seed
        self.alpha = alpha
        self.evict = evict
        self.epsilon = epsilon
        super().__init__(capacity, seed)

    def add(self, example: Any, *, label: Hashable | None = None, loss: float | None = None) -> None:
        """Offer one example with its loss; see the class docstring for what gets evicted.

        Args:
            example: Any picklable object.
            label: Carried along, not used.
            loss: The example's loss (finite, ``>= 0``); ``None`` means "not scored
                yet" and is replaced by the highest stored loss.

        Raises:
            ValueError: If ``loss`` is negative or not finite.
        """
        n = len(self)
        if loss is None:
            known = self._losses[:n]
            loss = float(np.nanmax(known)) if n and not np.isnan(known).all() else 1.0
        else:
            loss = check_loss(loss)
        key = self._next_key()
        if n < self._capacity:
            self._append(key, example, label, loss)
            return
        if self.evict == "oldest":
            # Slots fill 0..capacity-1 and are then overwritten in arrival order, so the
            # example with key k sits in slot k % capacity and the oldest is the next one.
            self._overwrite(key % self._capacity, key, example, label, loss)
            return
        losses = self._losses[:n]
        lowest = float(np.nanmin(losses)) if not np.isnan(losses).all() else math.inf
        if loss < lowest:
            return
        ties = np.flatnonzero(losses == lowest) if math.isfinite(lowest) else np.flatnonzero(np.isnan(losses))
        slot = min(ties.tolist(), key=lambda s: self._keys[s])
        self._overwrite(slot, key, example, label, loss)

    def priorities(self) -> np.ndarray:
        """Sampling probability of each stored example, in slot order.

        Returns:
            Array of shape ``(len(self),)`` summing to 1 (empty if the buffer is).
        """
        n = len(self)
        if n == 0:
            return np.zeros(0)
        losses = np.nan_to_num(self._losses[:n], nan=0.0)  # (n,)
        logp = self.alpha * np.log(losses + self.epsilon)  # log-space: no overflow for large alpha
        p = np.exp(logp - logp.max())
        p = np.maximum(p, np.finfo(float).tiny)  # keep every example drawable
        return p / p.sum()

    def _draw_slots(self, k: int, rng: np.random.Generator) -> list[int]:
        return rng.choice(len(self), size=k, replace=False, p=self.priorities()).tolist()

    def _config(self) -> dict[str, Any]:
        return {
            "capacity": self._capacity,
            "alpha": self.alpha,
            "evict": self.evict,
            "epsilon": self.epsilon,
        }
