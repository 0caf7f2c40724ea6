"""The drifting-streams protocol's streams: what they are, how our model reads them, how they travel.

River's generators give dicts of raw values (Agrawal's salaries run to 150,000, its car maker
is a code from 1 to 20). A tree reads those as they are; our feature-token model needs small,
centred numbers, so :class:`OnlineFeatureEncoder` one-hots the categorical fields and
standardises the numeric ones with running (Welford) statistics, learnt only from events
already seen, as a serving client could.

:func:`drifting_streams` names the three streams with their seeds, lengths and drift points.
River's ``ConceptDriftStream`` cannot make an abrupt drift far into a stream (``width=1``
overflows ``math.exp`` once ``position`` exceeds ~180), so the abrupt SEA drift is a plain
switch from one generator to the other (:func:`switch_at`).

:class:`StreamFeed` is how a stream's events reach the learner: the protocol is handed one per
stream (``streams.EvalFeed`` sends them through Kafka the way the service logs them), so this
package never imports the Kafka layer.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cl.learning.example import Example

__all__ = [
    "FeedFactory",
    "OnlineFeatureEncoder",
    "StreamEvent",
    "StreamFeed",
    "StreamSpec",
    "drifting_streams",
    "switch_at",
]

StreamEvent = tuple[dict[Any, Any], int]


class OnlineFeatureEncoder:
    """One-hot for categorical fields, running standardisation for numeric ones.

    ``transform_one`` uses only what ``learn_one`` has seen, so encoding an event before
    learning it never leaks the event into its own features. A numeric field is 0 until two
    values have been seen (no scale yet), then ``(x - mean) / std`` clipped to ``±clip``
    (early estimates from a handful of events can be far off). A categorical value outside
    its declared categories is an error, since the model's input width is fixed.

    Args:
        fields: Field names (dict keys) in the order of the output.
        categories: For each categorical field, its possible values (one output per value).
        clip: Bound on a standardised value.

    Example:
        >>> enc = OnlineFeatureEncoder(["age", "car"], categories={"car": [1, 2, 3]})
        >>> enc.n_features
        4
        >>> for age in (20.0, 40.0, 60.0):
        ...     enc.learn_one({"age": age, "car": 1})
        >>> enc.transform_one({"age": 60.0, "car": 2})
        [1.0, 0.0, 1.0, 0.0]
    """

    def __init__(self, fields: Sequence[Any], categories: Mapping[Any, Sequence[Any]] | None = None, clip: float = 5.0):
        self.fields = list(fields)
        self.categories = {k: list(v) for k, v in (categories or {}).items()}
        self.clip = clip
        unknown = [k for k in self.categories if k not in self.fields]
        if unknown:
            raise ValueError(
                f"categories name fields {unknown} that are not in fields {self.fields}; add them to fields"
            )
        if not clip > 0:
            raise ValueError(f"clip={clip!r} must be positive, e.g. 5.0")
        self._index = {k: {v: i for i, v in enumerate(vals)} for k, vals in self.categories.items()}
        numeric = [f for f in self.fields if f not in self.categories]
        self._count = 0
        self._mean = dict.fromkeys(numeric, 0.0)
        self._m2 = dict.fromkeys(numeric, 0.0)

    @property
    def n_features(self) -> int:
        """Width of an encoded vector."""
        return sum(len(self.categories[f]) if f in self.categories else 1 for f in self.fields)

    def learn_one(self, x: Mapping[Any, Any]) -> None:
        """Fold ``x``'s numeric values into the running mean and variance (Welford)."""
        self._count += 1
        for f in self._mean:
            value = float(x[f])
            delta = value - self._mean[f]
            self._mean[f] += delta / self._count
            self._m2[f] += delta * (value - self._mean[f])

    def transform_one(self, x: Mapping[Any, Any]) -> list[float]:
        """``x`` encoded with the statistics of the events learnt so far.

        Raises:
            KeyError: ``x`` lacks a field.
            ValueError: a categorical value is not one of the field's categories.
        """
        out: list[float] = []
        for f in self.fields:
            if f in self._index:
                hot = self._index[f].get(x[f])
                if hot is None:
                    raise ValueError(
                        f"field {f!r}: value {x[f]!r} is not one of its categories {self.categories[f]}; "
                        "declare it in categories"
                    )
                out += [1.0 if i == hot else 0.0 for i in range(len(self.categories[f]))]
                continue
            var = self._m2[f] / (self._count - 1) if self._count >= 2 else 0.0
            z = (float(x[f]) - self._mean[f]) / math.sqrt(var) if var > 0 else 0.0
            out.append(max(-self.clip, min(self.clip, z)))
        return out


def switch_at(before: Iterable[StreamEvent], after: Iterable[StreamEvent], position: int) -> Iterator[StreamEvent]:
    """An abrupt drift: ``position`` events of ``before``, then ``after`` from its start.

    Example:
        >>> zeros, ones = (({}, 0) for _ in range(9)), (({}, 1) for _ in range(9))
        >>> [y for _, y in itertools.islice(switch_at(zeros, ones, 2), 4)]
        [0, 0, 1, 1]
    """
    return itertools.chain(itertools.islice(before, position), after)


@dataclass(frozen=True)
class StreamSpec:
    """One stream of the protocol: how to draw it and where its concept changes.

    Attributes:
        name: Short name used in topics, tables and goals.
        description: What the stream is, for the report's settings.
        n_events: Events drawn.
        drift_points: 0-based event indices where a drift is centred (none for a
            continuously drifting stream).
        drift_kind: ``"abrupt"``, ``"gradual (sigmoid, width w)"`` or ``"continuous"``.
        fields: Feature names in encoder order.
        draw: Returns the stream's first ``n_events`` events as ``(x, y)`` with int ``y``.
        categories: Categorical fields with their values.
    """

    name: str
    description: str
    n_events: int
    drift_points: tuple[int, ...]
    drift_kind: str
    fields: tuple[Any, ...]
    draw: Callable[[], list[StreamEvent]] = field(repr=False)
    categories: dict[Any, list[Any]] = field(default_factory=dict)

    def encoder(self) -> OnlineFeatureEncoder:
        """A fresh encoder for this stream's fields."""
        return OnlineFeatureEncoder(self.fields, self.categories)


def _take(stream: Iterable[tuple[dict[Any, Any], Any]], n: int) -> list[StreamEvent]:
    return [(dict(x), int(y)) for x, y in itertools.islice(stream, n)]


AGRAWAL_FIELDS = ("salary", "commission", "age", "elevel", "car", "zipcode", "hvalue", "hyears", "loan")
AGRAWAL_CATEGORIES = {"elevel": list(range(5)), "car": list(range(1, 21)), "zipcode": list(range(9))}


def drifting_streams(n_events: int, seed: int, agrawal_width: int) -> list[StreamSpec]:
    """SEA (abrupt), Agrawal (gradual) and Hyperplane (continuous), each ``n_events`` long.

    The SEA and Agrawal drifts sit at the middle of the stream. Sub-generators get distinct
    seeds so the post-drift stream does not replay the pre-drift inputs.
    """
    from river.datasets import synth

    mid = n_events // 2
    sea_before, sea_after = (0, 2)
    agr_before, agr_after = (1, 2)
    mag_change = 0.001

    def sea() -> list[StreamEvent]:
        before = synth.SEA(variant=sea_before, noise=0.1, seed=seed)
        after = synth.SEA(variant=sea_after, noise=0.1, seed=seed + 1)
        return _take(switch_at(before, after, mid), n_events)

    def agrawal() -> list[StreamEvent]:
        # ConceptDriftStream counts samples from 1: position mid + 1 centres it on index mid.
        stream = synth.ConceptDriftStream(
            stream=synth.Agrawal(classification_function=agr_before, seed=seed),
            drift_stream=synth.Agrawal(classification_function=agr_after, seed=seed + 1),
            position=mid + 1,
            width=agrawal_width,
            seed=seed + 2,
        )
        return _take(stream, n_events)

    def hyperplane() -> list[StreamEvent]:
        return _take(
            synth.Hyperplane(
                seed=seed, n_features=10, n_drift_features=2, mag_change=mag_change, noise_percentage=0.05, sigma=0.1
            ),
            n_events,
        )

    return [
        StreamSpec(
            "sea",
            f"SEA, 10% label noise, variant {sea_before} -> {sea_after} (threshold 8 -> 7)",
            n_events,
            (mid,),
            "abrupt",
            (0, 1, 2),
            sea,
        ),
        StreamSpec(
            "agrawal",
            f"Agrawal, classification function {agr_before} -> {agr_after}",
            n_events,
            (mid,),
            f"gradual (sigmoid, width {agrawal_width})",
            AGRAWAL_FIELDS,
            agrawal,
            AGRAWAL_CATEGORIES,
        ),
        StreamSpec(
            "hyperplane",
            f"Hyperplane, 10 features, 2 drifting by mag_change={mag_change}, 5% noise",
            n_events,
            (),
            "continuous",
            tuple(range(10)),
            hyperplane,
        ),
    ]


class StreamFeed(Protocol):
    """Carries one stream's micro-batches to the learner and back as joined examples.

    ``counts`` keeps what was produced, consumed, joined and dropped, for the report.
    """

    counts: Counter[str]

    def round_trip(
        self, first: int, features: list[list[float]], served: list[Any], labels: list[int], timeout_s: float = 60.0
    ) -> list[Example]: ...

    def close(self, say: Callable[[str], None]) -> None: ...


FeedFactory = Callable[[str], StreamFeed]  # stream name -> a fresh feed for it
