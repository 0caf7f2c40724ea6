"""Class-balanced reservoir: an equal share of the buffer for every label."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from cl.replay._storage import SlotStore, check_loss


class ClassBalancedBuffer(SlotStore):
    """Give every label an equal share of the buffer (class-balanced reservoir).

    User feedback is rarely balanced: one label may arrive a hundred times as
    often as another. This buffer follows CBRS (Chrysakis & Moens, 2020):

    - while there is room, every example is stored;
    - once full, an example whose label is *not* among the largest classes in the
      buffer evicts a random example of a largest class (ties between largest
      classes are broken at random);
    - an example whose label *is* a largest class replaces a random example of its
      own class with probability ``stored_c / seen_c``, i.e. reservoir sampling
      within the class, so each class keeps a uniform sample of its own history.

    Whenever every label has been seen at least ``capacity / n_labels`` times the
    class counts in the buffer differ by at most one; rarer labels keep all their
    examples. ``label=None`` counts as a label of its own ("unlabelled"). Sampling
    is uniform over stored examples, which are balanced already.

    Args:
        capacity: The most examples held at once, ``>= 1``.
        seed: Seed of the buffer's own generator, which decides evictions.

    Example:
        >>> import numpy as np
        >>> from cl.replay import ClassBalancedBuffer
        >>> buf = ClassBalancedBuffer(capacity=6, seed=0)
        >>> for i in range(100):
        ...     buf.add({"i": i}, label="rare" if i % 10 == 0 else "common")
        >>> buf.class_counts()
        {'rare': 3, 'common': 3}
    """

    kind = "class_balanced"

    def __init__(self, capacity: int, seed: int | None = None) -> None:
        self.seed = seed
        super().__init__(capacity, seed)
        self._init_classes()

    def _init_classes(self) -> None:
        # Per label, in order of first arrival: slots it occupies and arrivals ever.
        self._class_slots: dict[Hashable | None, list[int]] = {}
        self._class_seen: dict[Hashable | None, int] = {}
        self._pos: list[int] = []  # slot -> index of the slot in its class's list

    def class_counts(self) -> dict[Hashable | None, int]:
        """Stored examples per label, labels in order of first arrival."""
        return {label: len(slots) for label, slots in self._class_slots.items()}

    def add(self, example: Any, *, label: Hashable | None = None, loss: float | None = None) -> None:
        """Offer one example of class ``label``; see the class docstring for the rule.

        Args:
            example: Any picklable object.
            label: The example's class; any hashable value, ``None`` included.
            loss: Carried along (finite, ``>= 0``), not used for the decision.

        Raises:
            ValueError: If ``loss`` is negative or not finite.
            TypeError: If ``label`` is not hashable.
        """
        loss = None if loss is None else check_loss(loss)
        hash(label)
        key = self._next_key()
        self._class_slots.setdefault(label, [])
        self._class_seen[label] = self._class_seen.get(label, 0) + 1
        if len(self) < self._capacity:
            slot = self._append(key, example, label, loss)
            self._pos.append(len(self._class_slots[label]))
            self._class_slots[label].append(slot)
            return
        sizes = {c: len(s) for c, s in self._class_slots.items()}
        largest = max(sizes.values())
        if sizes[label] < largest:
            full = [c for c, size in sizes.items() if size == largest]
            victim_class = full[int(self._rng.integers(len(full)))] if len(full) > 1 else full[0]
            victims = self._class_slots[victim_class]
            self._replace(victims[int(self._rng.integers(len(victims)))], key, example, label, loss)
            return
        stored, arrived = sizes[label], self._class_seen[label]
        if int(self._rng.integers(arrived)) < stored:  # probability stored / arrived
            own = self._class_slots[label]
            self._replace(own[int(self._rng.integers(len(own)))], key, example, label, loss)

    def _replace(self, slot: int, key: int, example: Any, label: Hashable | None, loss: float | None) -> None:
        old_slots = self._class_slots[self._labels[slot]]
        i, last = self._pos[slot], old_slots[-1]  # swap-remove `slot` from its class
        old_slots[i] = last
        self._pos[last] = i
        old_slots.pop()
        self._overwrite(slot, key, example, label, loss)
        self._pos[slot] = len(self._class_slots[label])
        self._class_slots[label].append(slot)

    def _extra_state(self) -> dict[str, Any]:
        return {
            "classes": [[label, self._class_seen[label], list(slots)] for label, slots in self._class_slots.items()]
        }

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self._init_classes()
        self._labels = [_hashable(label) for label in self._labels]
        self._pos = [-1] * len(self)
        for label, arrived, slots in state["classes"]:
            label = _hashable(label)
            self._class_seen[label] = int(arrived)
            self._class_slots[label] = [int(s) for s in slots]
            for i, slot in enumerate(self._class_slots[label]):
                if not 0 <= slot < len(self) or self._pos[slot] != -1 or self._labels[slot] != label:
                    raise ValueError(f"inconsistent state: slot {slot} listed under label {label!r}")
                self._pos[slot] = i
        if -1 in self._pos:
            raise ValueError("inconsistent state: class slot lists do not cover the stored examples")


def _hashable(label: Any) -> Any:
    """Undo what a JSON round trip does to tuple labels (they come back as lists)."""
    return tuple(_hashable(x) for x in label) if isinstance(label, list) else label
